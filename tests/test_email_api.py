"""Templates, previews, test sends and messages over the API."""

from __future__ import annotations

import emailkit
import pytest
from conftest import make_settings
from emailkit import MJML, make_contact, make_template

from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message

smtp_server = emailkit.smtp_server


@pytest.fixture
def settings(tmp_path, db_url, smtp_server):
    """The app's relay is the test SMTP server."""
    return make_settings(
        tmp_path,
        db_url,
        NURTURE_SMTP_HOST=smtp_server.host,
        NURTURE_SMTP_PORT=str(smtp_server.port),
        NURTURE_SMTP_TLS="none",
    )


@pytest.fixture
def plan_field(api):
    api.post("/fields", {"name": "plan", "label": "Plan", "type": "text"})


def new_template(api, **overrides):
    body = {"name": "Welcome", "subject": "Hi {{ contact.first_name }}", "mjml": MJML}
    body.update(overrides)
    return api.post("/templates", body)


def test_create_read_edit_and_list_a_template(api, plan_field):
    created = new_template(api)
    assert created.status_code == 201, created.json
    template = created.json
    assert template["latest_version"] == 1 and template["version"]["number"] == 1
    assert '<a href="<!--nurture:link:0-->"' in template["version"]["html"]
    first_version = template["version"]["id"]

    edited = api.post(
        f"/templates/{template['id']}/versions",
        {"subject": "Hello again", "mjml": MJML, "kind": "marketing"},
    )
    assert edited.status_code == 201 and edited.json["version"]["number"] == 2
    versions = api.get(f"/templates/{template['id']}/versions").json
    assert [v["number"] for v in versions] == [2, 1]
    old = api.get(f"/templates/{template['id']}/versions/{first_version}").json
    assert old["subject"] == "Hi {{ contact.first_name }}"
    assert api.get(f"/templates/{template['id']}").json["version"]["subject"] == "Hello again"
    renamed = api.patch(f"/templates/{template['id']}", {"name": "Welcome v2"})
    assert renamed.json["name"] == "Welcome v2"
    assert [t["name"] for t in api.get("/templates").json] == ["Welcome v2"]


def test_a_bad_template_is_refused_with_paths_lines_and_columns(api, plan_field):
    response = new_template(api, mjml=MJML.replace("<mj-text font-size", "<mj-txt font-size", 1))
    assert response.status_code == 422
    [detail] = response.json["error"]["details"]
    assert detail["path"] == "mjml" and detail["message"].startswith("line 6, column 9:")
    response = api.post("/templates", {"name": "x", "subject": "x"})
    assert response.status_code == 422
    assert {d["path"] for d in response.json["error"]["details"]} == {"mjml"}
    response = new_template(api, sender_identity_id=404)
    assert response.json["error"]["details"][0]["path"] == "sender_identity_id"
    assert new_template(api).status_code == 201
    assert new_template(api).status_code == 409  # the name is taken


def test_validate_returns_errors_and_warnings_without_saving(api, plan_field):
    response = api.post(
        "/templates/validate",
        {"subject": "Hi", "mjml": MJML.replace("{{ unsubscribe_url }}", "https://x.example")},
    )
    assert response.status_code == 200
    body = response.json
    assert body["valid"] is False
    assert body["errors"][0]["message"].startswith("a marketing email needs an unsubscribe link")
    assert body["errors"][0]["line"] == 3
    ok = api.post("/templates/validate", {"subject": "Hi", "mjml": MJML}).json
    assert ok["valid"] is True and len(ok["links"]) == 2 and ok["html_bytes"] > 1000
    assert api.get("/templates").json == []


def test_preview_for_the_sample_and_for_a_chosen_contact(api, app, plan_field):
    template = new_template(api).json
    sample = api.get(f"/templates/{template['id']}/preview").json
    assert sample["subject"] == "Hi Ada" and "Hello Ada," in sample["html"]
    assert sample["viewports"] == {"desktop": 800, "mobile": 375}
    assert "https://shop.example/start" in sample["html"]  # previews link straight through
    assert "/t/o/" not in sample["html"]
    contact = api.post(
        "/contacts", {"email": "zoe@example.com", "first_name": "Zoë", "tags": ["vip"]}
    ).json
    chosen = api.get(f"/templates/{template['id']}/preview?contact_id={contact['id']}").json
    assert chosen["contact"] == "zoe@example.com" and "Thank you for being a VIP." in chosen["html"]
    assert "VIP" in chosen["text"]
    missing = api.get(f"/templates/{template['id']}/preview?contact_id=999")
    assert missing.status_code == 422
    assert missing.json["error"]["details"][0]["path"] == "contact_id"
    bad = api.get(f"/templates/{template['id']}/preview?contact_id=abc")
    assert bad.status_code == 422
    assert bad.json["error"]["details"][0]["path"] == "query.contact_id"
    assert api.as_role("viewer").get(f"/templates/{template['id']}/preview").status_code == 200


def test_test_send_goes_to_any_address(api, smtp_server, plan_field):
    template = new_template(api).json
    response = api.post(f"/templates/{template['id']}/test-send", {"to": "boss@agency.example"})
    assert response.status_code == 200 and response.json["status"] == "sent", response.json
    [received] = smtp_server.received
    assert received.recipients == ["boss@agency.example"]
    assert received.message["Subject"] == "[Test] Hi Ada"
    bad = api.post(f"/templates/{template['id']}/test-send", {"to": "not an address"})
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "to"


def test_a_template_with_queued_messages_cannot_be_deleted(api, app, plan_field):
    template = new_template(api).json
    with app.extensions["nurture"].sessions() as s:
        contact = make_contact(s, "ana@example.com")
        message_id = queue_message(
            s, dedupe_key="k1", contact_id=contact, template_version_id=template["version"]["id"]
        )
        s.commit()
    response = api.delete(f"/templates/{template['id']}")
    assert response.status_code == 409 and "waiting to be sent" in response.json["error"]["message"]
    with app.extensions["nurture"].sessions() as s:
        s.get(Message, message_id).status = MessageStatus.FAILED
        s.commit()
    assert api.delete(f"/templates/{template['id']}").status_code == 204
    assert api.get(f"/templates/{template['id']}").status_code == 404
    assert new_template(api).status_code == 201  # the name is free again


def test_messages_list_detail_preview_and_manual_resend(api, app, plan_field):
    template = new_template(api).json
    with app.extensions["nurture"].sessions() as s:
        contact = make_contact(s, "ana@example.com")
        ids = [
            queue_message(
                s,
                dedupe_key=f"k{i}",
                contact_id=contact,
                template_version_id=template["version"]["id"],
            )
            for i in range(3)
        ]
        s.get(Message, ids[0]).status = MessageStatus.UNKNOWN
        s.commit()
    page = api.get("/messages?per_page=2").json
    assert page["total"] == 3 and [m["id"] for m in page["items"]] == [ids[2], ids[1]]
    unknown = api.get("/messages?status=unknown").json
    assert [m["id"] for m in unknown["items"]] == [ids[0]]
    assert api.get(f"/messages?template_id={template['id']}").json["total"] == 3
    bad = api.get("/messages?status=lost")
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "query.status"
    detail = api.get(f"/messages/{ids[1]}").json
    assert detail["status"] == "queued" and detail["dedupe_key"] == "k1"
    preview = api.get(f"/messages/{ids[1]}/preview").json
    assert "http://nurture.test/t/c/" in preview["html"] and "Hello Zoë," in preview["html"]
    assert api.as_role("viewer").post(f"/messages/{ids[0]}/resend").status_code == 403
    resent = api.post(f"/messages/{ids[0]}/resend")
    assert resent.status_code == 200 and resent.json["status"] == "queued"
    again = api.post(f"/messages/{ids[1]}/resend")
    assert again.status_code == 409
    assert api.get("/messages/999").status_code == 404


def test_sender_identities(api):
    created = api.post(
        "/sender-identities",
        {"name": "News", "from_name": "Shop News", "from_email": "news@shop.example"},
    )
    assert created.status_code == 201 and created.json["max_per_minute"] == 600
    bad = api.post(
        "/sender-identities", {"name": "Bad", "from_name": "B", "from_email": "not-an-email"}
    )
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "from_email"
    assert [i["name"] for i in api.get("/sender-identities").json] == ["News"]
    assert api.as_role("marketer").post("/sender-identities", {}).status_code == 403
    identity = created.json["id"]
    api.post("/fields", {"name": "plan", "label": "Plan", "type": "text"})
    template = new_template(api, sender_identity_id=identity)
    assert template.status_code == 201
    assert template.json["version"]["sender_identity_id"] == identity


def test_make_template_helper_and_api_agree(session):
    saved = make_template(session)
    assert saved.version.number == 1


def test_test_send_refuses_suppressed_addresses_naming_the_reason(api, smtp_server, plan_field):
    template = new_template(api).json
    path = f"/templates/{template['id']}/test-send"
    gone = api.post("/contacts", {"email": "gone@example.com"}).json
    assert api.post(f"/contacts/{gone['id']}/erase").status_code == 204
    left = api.post("/contacts", {"email": "left@example.com"}).json
    api.post(f"/contacts/{left['id']}/status", {"status": "unsubscribed"})
    erased = api.post(path, {"to": "Gone@Example.com"})
    assert erased.status_code == 422
    [detail] = erased.json["error"]["details"]
    assert detail["path"] == "to"
    assert "on the suppression list (erased)" in detail["message"]
    unsubscribed = api.post(path, {"to": "left@example.com"})
    assert unsubscribed.status_code == 422
    assert "a contact who is unsubscribed" in unsubscribed.json["error"]["details"][0]["message"]
    assert smtp_server.received == []
    assert api.post(path, {"to": "boss@agency.example"}).status_code == 200


def test_test_sends_are_rate_limited_per_user_or_key(api, smtp_server, plan_field):
    template = new_template(api).json
    path = f"/templates/{template['id']}/test-send"
    statuses = [api.post(path, {"to": f"qa{n}@agency.example"}).status_code for n in range(11)]
    assert statuses == [200] * 10 + [429]  # NURTURE_TEST_SEND_RATE_LIMIT: 10 a minute
    limited = api.post(path, {"to": "qa@agency.example"})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json["error"]["code"] == "rate_limited"
    assert len(smtp_server.received) == 10
    # Another key (another colleague) is not held up by this one.
    assert api.as_role("marketer").post(path, {"to": "qa@agency.example"}).status_code == 200
