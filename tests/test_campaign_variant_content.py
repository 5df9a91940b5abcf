"""A campaign variant's own subject and preheader go to that variant's recipients only:
never a version of the template, so a workflow sending the template (its latest version)
keeps the template's subject. Driven through the API, sent into a real SMTP server."""

from __future__ import annotations

import re

import emailkit
from emailkit import MJML
from sqlalchemy import select
from workflows_support import doc

from automation.campaigns.service import run_due as run_campaigns
from automation.email.models import VersionOverride
from automation.email.outbox import send_due
from automation.workflows.engine import run_due as run_workflows

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending

VARIANT_SUBJECT = "Spring is here: 20 % off"
VARIANT_PREHEADER = "Only this week, {{ contact.first_name }}"


def _preheader(html: str) -> str:
    """The hidden preheader block's text (the first element of the body)."""
    match = re.search(r"<body\b[^>]*><div style=\"display:none[^\"]*\">(.*?)</div>", html)
    return match.group(1) if match else ""


def _title(html: str) -> str:
    match = re.search(r"<title>\s*(.*?)\s*</title>", html, re.DOTALL)
    return match.group(1) if match else ""


def test_a_variant_subject_goes_to_its_campaign_only_and_the_workflow_keeps_the_template(
    api, app, sessions, sending, smtp_server
):
    api.post("/fields", {"name": "plan", "label": "Plan", "type": "text"})
    mjml = MJML.replace(  # no title of its own: the subject is the title
        '<mj-head><mj-title>{{ contact.first_name | default("Hello") }}</mj-title></mj-head>', ""
    )
    template = api.post(
        "/templates",
        {
            "name": "Welcome",
            "subject": "Welcome, {{ contact.first_name }}",
            "preheader": "Glad you are here",
            "mjml": mjml,
        },
    ).json
    template_id, version_id = template["id"], template["version"]["id"]
    versions_before = api.get(f"/templates/{template_id}/versions").json

    workflow = api.post(
        "/workflows",
        doc(
            [
                {"id": "welcome", "type": "send_email", "template_id": template_id, "next": "end"},
                {"id": "end", "type": "exit"},
            ]
        ),
    ).json
    assert api.post(f"/workflows/{workflow['id']}/publish").status_code == 201

    ids = [
        api.post("/contacts", {"email": f"c{n}@example.com", "first_name": f"C{n}"}).json["id"]
        for n in range(4)
    ]
    listed = api.post("/segments", {"name": "Buyers", "kind": "static"}).json
    api.post(f"/segments/{listed['id']}/members", {"contact_ids": ids})
    created = api.post(
        "/campaigns",
        {
            "name": "Spring",
            "include_segment_ids": [listed["id"]],
            "variants": [
                {"template_version_id": version_id},
                {
                    "template_version_id": version_id,
                    "subject": VARIANT_SUBJECT,
                    "preheader": VARIANT_PREHEADER,
                },
            ],
            "ab_test": {"test_percent": 100, "test_minutes": 60, "min_sample": 1},
        },
    )
    assert created.status_code == 201, created.json
    campaign = created.json
    a, b = campaign["variants"]
    assert api.post(f"/campaigns/{campaign['id']}/schedule", {}).status_code == 200
    with app.extensions["nurture"].sessions() as s:
        assert run_campaigns(s)["started"] == 1
        s.commit()

    # The template is unchanged: no version was added, the latest is still the saved one.
    assert api.get(f"/templates/{template_id}/versions").json == versions_before
    assert api.get(f"/templates/{template_id}").json["version"]["id"] == version_id

    api.post("/events", {"events": [{"name": "signed_up", "email": "new@example.com"}]})
    run_workflows(sessions)
    report = send_due(sessions, sending)
    assert report.outcomes == {"sent": 5}

    by_rcpt = {r.recipients[0]: r.message for r in smtp_server.received}
    welcome = by_rcpt.pop("new@example.com")
    assert welcome["Subject"] == "Welcome,"  # the new contact has no first name
    welcome_html = welcome.get_body(("html",)).get_content()
    assert _preheader(welcome_html) == "Glad you are here"
    assert _title(welcome_html) == "Welcome,"

    messages = api.get(f"/messages?campaign_id={campaign['id']}").json["items"]
    variant_of = {m["contact_id"]: m["campaign_variant_id"] for m in messages}
    emails = {c: f"c{n}@example.com" for n, c in enumerate(ids)}
    seen = set()
    for contact_id, variant_id in variant_of.items():
        received = by_rcpt[emails[contact_id]]
        html = received.get_body(("html",)).get_content()
        name = f"C{ids.index(contact_id)}"
        if variant_id == b["id"]:
            assert received["Subject"] == VARIANT_SUBJECT
            assert _title(html) == VARIANT_SUBJECT
            assert _preheader(html) == f"Only this week, {name}"
        else:
            assert received["Subject"] == f"Welcome, {name}"
            assert _preheader(html) == "Glad you are here"
        seen.add(variant_id)
    assert seen == {a["id"], b["id"]}

    # What the message pages show is what was sent.
    b_message = next(m for m in messages if m["campaign_variant_id"] == b["id"])
    preview = api.get(f"/messages/{b_message['id']}/preview").json
    assert preview["subject"] == VARIANT_SUBJECT
    assert "Only this week," in _preheader(preview["html"])
    click_map = api.get(f"/campaigns/{campaign['id']}/click-map?variant_id={b['id']}").text
    assert _preheader(click_map) == "Only this week, Ada"  # for the sample contact
    assert api.get(f"/templates/{template_id}/versions").json == versions_before
    # The campaign shows the variant's own subject and preheader on the version it picked.
    assert (b["subject"], b["preheader"]) == (VARIANT_SUBJECT, VARIANT_PREHEADER)
    assert a["template_version_id"] == b["template_version_id"] == version_id


def test_a_variant_override_that_does_not_compile_is_named_and_nothing_is_saved(api):
    template = api.post("/templates", {"name": "Sale", "subject": "Sale!", "mjml": _plain()}).json
    listed = api.post("/segments", {"name": "L", "kind": "static"}).json
    response = api.post(
        "/campaigns",
        {
            "name": "Broken",
            "include_segment_ids": [listed["id"]],
            "variants": [
                {"template_version_id": template["version"]["id"]},
                {"template_version_id": template["version"]["id"], "subject": "{{ broken "},
            ],
            "ab_test": {},
        },
    )
    assert response.status_code == 422
    assert {d["path"] for d in response.json["error"]["details"]} == {"variants[1].subject"}
    assert api.get("/campaigns").json == []
    assert len(api.get(f"/templates/{template['id']}/versions").json) == 1


def test_editing_a_campaign_shows_and_keeps_the_variant_subject_without_a_version(api, app):
    template = api.post("/templates", {"name": "Sale", "subject": "Sale!", "mjml": _plain()}).json
    version_id = template["version"]["id"]
    listed = api.post("/segments", {"name": "L", "kind": "static"}).json
    body = {
        "name": "Edited",
        "include_segment_ids": [listed["id"]],
        "variants": [
            {"template_version_id": version_id},
            {"template_version_id": version_id, "subject": "Other"},
        ],
        "ab_test": {},
    }
    campaign = api.post("/campaigns", body).json
    body["variants"][1]["subject"] = "Changed"
    updated = api.put(f"/campaigns/{campaign['id']}", body).json
    assert [v["subject"] for v in updated["variants"]] == [None, "Changed"]
    with app.extensions["nurture"].sessions() as s:  # the replaced override went with its variant
        assert s.scalars(select(VersionOverride.subject)).all() == ["Changed"]
    # The same subject as the version's is no override.
    body["variants"][1] = {"template_version_id": version_id, "subject": "Sale!"}
    response = api.put(f"/campaigns/{campaign['id']}", body)
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "variants[1]"
    assert len(api.get(f"/templates/{template['id']}/versions").json) == 1
    assert api.delete(f"/campaigns/{campaign['id']}").status_code == 204
    with app.extensions["nurture"].sessions() as s:
        assert s.scalars(select(VersionOverride.id)).all() == []


def _plain() -> str:
    return (
        "<mjml><mj-body><mj-section><mj-column><mj-text>Hi</mj-text>"
        '<mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>'
        "</mj-column></mj-section></mj-body></mjml>"
    )
