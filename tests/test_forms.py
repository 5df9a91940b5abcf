"""Lead-capture forms: definitions (API and page), public posts (validation, honeypot,
CORS, rate limit), single opt-in and double opt-in end to end over real SMTP."""

from __future__ import annotations

import re
from typing import Any

import emailkit
import pytest
import sitekit
from conftest import login
from sitekit import SHOP, admin_headers
from sqlalchemy import select

from automation import clock
from automation.accounts.models import Role
from automation.accounts.service import create_user
from automation.contacts.models import (
    ConsentRecord,
    Contact,
    ContactStatus,
    CustomField,
    Event,
    FieldType,
)
from automation.email.outbox import send_due
from automation.email.sender import Sending
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.segments.models import Segment, SegmentMembership
from automation.signing import TokenSigner
from automation.workflows import service as workflows
from automation.workflows.models import Enrollment

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
site_app = sitekit.site_app
smtp_server = emailkit.smtp_server
FORM = {
    "name": "Newsletter",
    "fields": [
        {"name": "email", "label": "Email", "required": True},
        {"name": "first_name", "label": "First name"},
        {"name": "plan", "label": "Plan"},
    ],
    "consent_text": "Yes, send me the monthly newsletter.",
    "tags": ["newsletter"],
    "success_message": "Welcome aboard!",
}


def setup_form(app: Any, **overrides: Any) -> dict[str, Any]:
    with app.extensions["nurture"].sessions() as s:
        if s.scalar(select(CustomField.id).where(CustomField.name == "plan")) is None:
            s.add(
                CustomField(
                    name="plan",
                    label="Plan",
                    type=FieldType.CHOICE,
                    options=["free", "pro"],
                    created_at=clock.now(),
                )
            )
        s.commit()
    response = app.test_client().post(
        "/api/v1/forms", json={**FORM, **overrides}, headers=admin_headers(app, "marketer")
    )
    assert response.status_code == 201, response.json
    return response.json


def submit(client: Any, form: dict[str, Any], data: dict[str, str], **headers: str) -> Any:
    headers.setdefault("Origin", SHOP)
    headers.setdefault("Accept", "application/json")
    return client.post(
        f"/f/{form['public_id']}",
        data=data,
        headers=headers,
        environ_base={"REMOTE_ADDR": headers.pop("ip", "203.0.113.7")},
    )


def contact(app: Any, email: str) -> Contact | None:
    with app.extensions["nurture"].sessions() as s:
        found = s.scalar(select(Contact).where(Contact.email == email))
        if found is not None:
            found.tags  # noqa: B018  # load before the session closes
        return found


def events(app: Any, name: str) -> list[dict[str, Any]]:
    with app.extensions["nurture"].sessions() as s:
        return list(s.scalars(select(Event.properties).where(Event.name == name)))


def test_form_definitions_are_validated_naming_the_field(site_app):
    client = site_app.test_client()
    marketer = admin_headers(site_app, "marketer")
    bad = {
        **FORM,
        "fields": [{"name": "first_name", "label": "Name"}, {"name": "shoe_size", "label": "S"}],
        "redirect_url": "javascript:alert(1)",
    }
    response = client.post("/api/v1/forms", json=bad, headers=marketer)
    assert response.status_code == 422
    paths = {d["path"] for d in response.json["error"]["details"]}
    assert paths == {"fields", "fields[1].name", "redirect_url"}
    viewer = admin_headers(site_app, "viewer")
    assert client.post("/api/v1/forms", json=FORM, headers=viewer).status_code == 403
    form = setup_form(site_app)
    assert form["action_url"] == f"http://nurture.test/f/{form['public_id']}"
    embed = form["embed_html"]
    assert 'name="nurture_website"' in embed and 'name="consent"' in embed
    assert '<option value="pro">pro</option>' in embed and "/t/nurture.js" in embed


def make_segment(app: Any, name: str, kind: str) -> int:
    body: dict[str, Any] = {"name": name, "kind": kind}
    if kind == "dynamic":
        body["conditions"] = [{"field": "score", "operator": "greater_than", "value": 5}]
    response = app.test_client().post(
        "/api/v1/segments", json=body, headers=admin_headers(app, "marketer")
    )
    assert response.status_code == 201, response.json
    return int(response.json["id"])


def members(app: Any, segment_id: int) -> list[int]:
    with app.extensions["nurture"].sessions() as s:
        return list(
            s.scalars(
                select(SegmentMembership.contact_id).where(
                    SegmentMembership.segment_id == segment_id
                )
            )
        )


def test_a_form_joins_only_static_lists_named_on_it(site_app):
    client = site_app.test_client()
    marketer = admin_headers(site_app, "marketer")
    customers = make_segment(site_app, "Customers", "static")
    engaged = make_segment(site_app, "Engaged", "dynamic")
    newsletter = make_segment(site_app, "Newsletter readers", "static")
    form = setup_form(site_app, lists=[newsletter, customers])
    assert form["lists"] == [newsletter, customers]
    bad = client.put(
        f"/api/v1/forms/{form['id']}",
        json={**FORM, "lists": [customers, engaged, 999]},
        headers=marketer,
    )
    assert bad.status_code == 422
    assert {d["path"]: d["message"] for d in bad.json["error"]["details"]} == {
        "lists[1]": f"segment {engaged} is not a static list",
        "lists[2]": "no list 999",
    }
    with site_app.extensions["nurture"].sessions() as s:  # a list deleted after the form
        s.delete(s.get(Segment, customers))
        s.commit()
    answer = submit(client, form, {"email": "lee@example.com", "consent": "on"})
    assert answer.status_code == 200, answer.json
    lee = contact(site_app, "lee@example.com")
    assert members(site_app, newsletter) == [lee.id]
    entered = events(site_app, "segment.entered")
    assert [e["segment_id"] for e in entered] == [newsletter]


def form_workflow(app: Any, name: str, **form: Any) -> int:
    """A published workflow whose form trigger names the form as given (form_id or form)."""
    with app.extensions["nurture"].sessions() as s:
        workflow = workflows.create_workflow(
            s,
            {
                "name": name,
                "trigger": {"type": "form_submitted", **form},
                "start": "end",
                "nodes": [{"id": "end", "type": "exit"}],
            },
        )
        workflows.publish(s, workflow.id)
        s.commit()
        return workflow.id


def enrolled(app: Any, workflow_id: int) -> list[int]:
    with app.extensions["nurture"].sessions() as s:
        return list(
            s.scalars(
                select(Enrollment.contact_id)
                .where(Enrollment.workflow_id == workflow_id)
                .order_by(Enrollment.id)
            )
        )


def test_single_opt_in_creates_the_contact_with_consent_an_event_and_its_site_history(site_app):
    from test_site_tracking import drain, post

    client = site_app.test_client()
    form = setup_form(site_app)
    by_id = form_workflow(site_app, "Welcome", form_id=form["id"])
    by_name = form_workflow(site_app, "Welcome (older document)", form="Newsletter")
    other = setup_form(site_app, name="Webinar")
    elsewhere = form_workflow(site_app, "Webinar follow-up", form_id=other["id"])
    visitor = "a" * 24
    post(client, {"visitor_id": visitor, "events": [{"name": "pricing_viewed"}]})
    assert drain(site_app).anonymous == 1
    data = {
        "email": "Ada@Example.com",
        "first_name": "Ada",
        "plan": "pro",
        "consent": "true",
        "nurture_visitor": visitor,
    }
    response = submit(client, form, data)
    assert response.status_code == 200, response.json
    assert response.json == {"status": "confirmed", "message": "Welcome aboard!"}
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    ada = contact(site_app, "ada@example.com")
    assert ada is not None and ada.status is ContactStatus.SUBSCRIBED
    assert (ada.first_name, ada.attributes) == ("Ada", {"plan": "pro"})
    assert [t.name for t in ada.tags] == ["newsletter"]
    with site_app.extensions["nurture"].sessions() as s:
        consent = s.scalar(select(ConsentRecord).where(ConsentRecord.contact_id == ada.id))
        assert consent.consent_text == FORM["consent_text"] and consent.ip == "203.0.113.7"
        names = list(s.scalars(select(Event.name).where(Event.contact_id == ada.id)))
    assert sorted(names) == ["form.submitted", "pricing_viewed"]
    [submitted] = events(site_app, "form.submitted")
    assert submitted["values"]["plan"] == "pro" and submitted["form_name"] == "Newsletter"
    # The form's trigger starts, named by id or (an older document) by name; another
    # form's does not.
    assert enrolled(site_app, by_id) == enrolled(site_app, by_name) == [ada.id]
    assert enrolled(site_app, elsewhere) == []
    # posting again for the same address records consent again, but an anonymous post
    # never overwrites what the contact holds
    again = submit(client, form, {**data, "first_name": "Ada L."}, ip="203.0.113.8")
    assert again.status_code == 200
    assert contact(site_app, "ada@example.com").first_name == "Ada"
    assert len(events(site_app, "form.submitted")) == 2


def test_bad_posts_are_refused_naming_the_field_and_write_nothing(site_app):
    client = site_app.test_client()
    form = setup_form(site_app)
    response = submit(client, form, {"email": "not-an-email", "plan": "gold"})
    assert response.status_code == 422
    paths = {d["path"] for d in response.json["error"]["details"]}
    assert paths == {"email", "plan", "consent"}
    html = submit(client, form, {"email": ""}, Accept="text/html", ip="198.51.100.1")
    assert html.status_code == 422 and "email: Email is required" in html.get_data(as_text=True)
    # a bot filling the hidden field is told "thank you" and nothing is stored
    bot = {"email": "bot@example.com", "consent": "on", "nurture_website": "http://spam"}
    assert submit(client, form, bot, ip="198.51.100.2").json["status"] == "ignored"
    assert contact(site_app, "bot@example.com") is None
    evil = submit(
        client, form, {"email": "x@example.com", "consent": "on"}, Origin="https://evil.example"
    )
    assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers
    assert contact(site_app, "x@example.com") is None
    preflight = client.options(f"/f/{form['public_id']}", headers={"Origin": SHOP})
    assert preflight.status_code == 204
    assert client.post("/f/nosuchform", data={"email": "a@b.example"}).status_code == 404


def test_form_posts_are_rate_limited_per_address(site_app):
    client = site_app.test_client()
    form = setup_form(site_app)
    statuses = [submit(client, form, {"email": ""}).status_code for _ in range(4)]
    assert statuses == [422, 422, 422, 429]  # NURTURE_FORM_RATE_LIMIT=3 in this app
    limited = submit(client, form, {"email": ""})
    assert int(limited.headers["Retry-After"]) >= 1
    assert submit(client, form, {"email": ""}, ip="203.0.113.99").status_code == 422


def test_double_opt_in_confirms_by_email_before_anything_counts(site_app, smtp_server):
    client = site_app.test_client()
    readers = make_segment(site_app, "Readers", "static")
    form = setup_form(site_app, double_opt_in=True, lists=[readers])
    welcome = form_workflow(site_app, "Welcome", form_id=form["id"])
    data = {"email": "zoe@example.com", "first_name": "Zoe", "consent": "on"}
    response = submit(client, form, data)
    assert response.json["status"] == "pending"
    zoe = contact(site_app, "zoe@example.com")
    assert zoe.status is ContactStatus.PENDING and zoe.tags == []
    assert members(site_app, readers) == []
    assert events(site_app, "form.submitted") == []
    assert enrolled(site_app, welcome) == []  # nobody confirmed this address yet
    runtime = site_app.extensions["nurture"]
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    try:
        send_due(
            runtime.sessions,
            Sending(runtime.settings, transport, TokenSigner.from_settings(runtime.settings)),
        )
    finally:
        transport.close()
    [mail] = smtp_server.received
    assert mail.recipients == ["zoe@example.com"]
    assert "List-Unsubscribe" not in mail.message  # transactional
    text = mail.message.get_body(("plain",)).get_content()
    path = re.search(r"http://nurture\.test(/f/confirm/[A-Za-z0-9_-]+)", text).group(1)
    page = client.get(path)  # what a link scanner does: nothing changes
    assert page.status_code == 200 and "Yes, subscribe me" in page.get_data(as_text=True)
    assert contact(site_app, "zoe@example.com").status is ContactStatus.PENDING
    assert client.post(path).status_code == 200
    assert client.post(path).status_code == 200  # twice: still one confirmation
    zoe = contact(site_app, "zoe@example.com")
    assert zoe.status is ContactStatus.SUBSCRIBED and zoe.confirmed_at is not None
    assert [t.name for t in zoe.tags] == ["newsletter"]
    assert members(site_app, readers) == [zoe.id]
    assert len(events(site_app, "form.submitted")) == 1
    assert enrolled(site_app, welcome) == [zoe.id]  # the form trigger fires on confirmation
    with runtime.sessions() as s:
        sources = list(
            s.scalars(select(ConsentRecord.source).where(ConsentRecord.contact_id == zoe.id))
        )
    assert "form_confirmation" in sources
    tampered = path[:-2] + ("AA" if not path.endswith("AA") else "BB")
    assert client.get(tampered).status_code == 404


def test_forms_page_creates_a_form_and_names_the_bad_line(site_app):
    client = site_app.test_client()
    with site_app.extensions["nurture"].sessions() as s:
        create_user(s, "mia@example.com", "correct horse battery", role=Role.MARKETER)
        s.commit()
    login(client, "mia@example.com", "correct horse battery")
    page = client.get("/forms/new").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    base = {"csrf_token": token, "name": "Webinar", "success_message": "See you there"}
    bad = client.post(
        "/forms/new", data={**base, "fields": "email | Email | required\nshoe | Shoe"}
    )
    assert bad.status_code == 422 and "line 2:" in bad.get_data(as_text=True)
    attendees = make_segment(site_app, "Attendees", "static")
    make_segment(site_app, "Big spenders", "dynamic")
    page = client.get("/forms/new").get_data(as_text=True)
    assert f'name="lists" value="{attendees}"' in page and "Big spenders" not in page
    good = client.post(
        "/forms/new",
        data={
            **base,
            "fields": "email | Email | required",
            "tags": "webinar",
            "lists": str(attendees),
        },
    )
    assert good.status_code == 302
    shown = client.get(good.headers["Location"]).get_data(as_text=True)
    assert f'name="lists" value="{attendees}" checked' in shown
    assert "data-nurture-form=" in shown and "Webinar" in client.get("/forms").get_data(
        as_text=True
    )


def test_a_form_that_starts_a_live_workflow_cannot_be_deleted(site_app):
    client = site_app.test_client()
    marketer = admin_headers(site_app, "marketer")
    form = setup_form(site_app)
    unused = setup_form(site_app, name="Unused")
    welcome = form_workflow(site_app, "Welcome", form_id=form["id"])
    form_workflow(site_app, "Older welcome", form="Newsletter")
    refused = client.delete(f"/api/v1/forms/{form['id']}", headers=marketer)
    assert refused.status_code == 409
    assert refused.json["error"]["message"] == (
        "form 'Newsletter' is used by workflows 'Older welcome', 'Welcome'; change those first"
    )
    assert client.get(f"/api/v1/forms/{form['id']}", headers=marketer).status_code == 200
    assert client.delete(f"/api/v1/forms/{unused['id']}", headers=marketer).status_code == 204
    with site_app.extensions["nurture"].sessions() as s:
        workflows.archive(s, welcome)
        s.commit()
    still = client.delete(f"/api/v1/forms/{form['id']}", headers=marketer)
    assert "'Older welcome'" in still.json["error"]["message"]
    assert "'Welcome'" not in still.json["error"]["message"]
    # The page says the same and keeps the form.
    with site_app.extensions["nurture"].sessions() as s:
        create_user(s, "mia@example.com", "correct horse battery", role=Role.MARKETER)
        s.commit()
    login(client, "mia@example.com", "correct horse battery")
    page = client.get(f"/forms/{form['id']}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    deleted = client.post(f"/forms/{form['id']}/delete", data={"csrf_token": token})
    assert deleted.status_code == 302 and deleted.headers["Location"].endswith(
        f"/forms/{form['id']}"
    )
    shown = client.get(deleted.headers["Location"]).get_data(as_text=True)
    assert (
        "Not deleted: form &#39;Newsletter&#39; is used by workflow &#39;Older welcome&#39;"
        in shown
    )


def test_a_form_a_live_workflow_names_by_name_cannot_be_renamed(site_app):
    client = site_app.test_client()
    marketer = admin_headers(site_app, "marketer")
    named = setup_form(site_app)  # "Newsletter"
    by_id = setup_form(site_app, name="Webinar")
    form_workflow(site_app, "Older welcome", form="Newsletter")
    form_workflow(site_app, "Webinar follow-up", form_id=by_id["id"])
    refused = client.put(
        f"/api/v1/forms/{named['id']}", json={**FORM, "name": "Monthly news"}, headers=marketer
    )
    assert refused.status_code == 409
    assert refused.json["error"]["details"] == [
        {"path": "name", "message": "used by workflow 'Older welcome'"}
    ]
    # Other edits keep working; a form named by id is renamed freely.
    kept = client.put(
        f"/api/v1/forms/{named['id']}",
        json={**FORM, "success_message": "Thanks!"},
        headers=marketer,
    )
    assert kept.status_code == 200, kept.json
    renamed = client.put(
        f"/api/v1/forms/{by_id['id']}", json={**FORM, "name": "Spring webinar"}, headers=marketer
    )
    assert renamed.status_code == 200 and renamed.json["name"] == "Spring webinar"


FORMULAS = [
    '=HYPERLINK("http://evil.example","Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
]


def test_names_from_anonymous_form_posts_come_back_from_the_members_export_as_text(site_app):
    import csv
    import io

    client = site_app.test_client()
    readers = make_segment(site_app, "Readers", "static")
    form = setup_form(site_app, lists=[readers])
    for i, name in enumerate(FORMULAS):
        data = {"email": f"f{i}@example.com", "first_name": name, "consent": "on"}
        assert submit(client, form, data, ip=f"203.0.113.{i + 10}").status_code == 200
    response = client.get(
        f"/api/v1/segments/{readers}/members.csv", headers=admin_headers(site_app)
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    names = {row["email"]: row["first_name"] for row in rows}
    stored = {
        f"f{i}@example.com": contact(site_app, f"f{i}@example.com").first_name
        for i in range(len(FORMULAS))
    }
    assert names == {email: "'" + name for email, name in stored.items()}
    assert all(name[0] not in "=+-@\t\r" for name in names.values())


def _send(app: Any, smtp_server: Any) -> None:
    runtime = app.extensions["nurture"]
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    try:
        send_due(
            runtime.sessions,
            Sending(runtime.settings, transport, TokenSigner.from_settings(runtime.settings)),
        )
    finally:
        transport.close()


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_a_single_opt_in_post_never_re_subscribes_it_sends_the_confirmation(
    site_app, smtp_server, status
):
    client = site_app.test_client()
    admin = admin_headers(site_app)
    form = setup_form(site_app)
    welcome = form_workflow(site_app, "Welcome", form_id=form["id"])
    created = client.post(
        "/api/v1/contacts",
        json={"email": "gone@example.com", "first_name": "Grace", "attributes": {"plan": "free"}},
        headers=admin,
    )
    assert created.status_code == 201
    patched = client.patch(
        f"/api/v1/contacts/{created.json['id']}", json={"status": status}, headers=admin
    )
    assert patched.status_code == 200, patched.json
    data = {"email": "gone@example.com", "first_name": "=cmd", "plan": "pro", "consent": "on"}
    response = submit(client, form, data)
    assert response.status_code == 200
    assert response.json["status"] == "pending"
    gone = contact(site_app, "gone@example.com")
    assert gone.status.value == status  # not re-subscribed by the post
    assert (gone.first_name, gone.attributes) == ("Grace", {"plan": "free"})
    assert events(site_app, "form.submitted") == [] and enrolled(site_app, welcome) == []
    again = submit(client, form, data, ip="203.0.113.50")  # posted again: no second email
    assert again.json["status"] == "pending"
    _send(site_app, smtp_server)
    received = [m for m in smtp_server.received if m.recipients == ["gone@example.com"]]
    if status != "unsubscribed":
        # The outbox sends nothing to an address that bounced or complained, not even the
        # confirmation: it stays as it was until an operator steps in.
        assert received == []
        assert contact(site_app, "gone@example.com").status.value == status
        return
    assert len(received) == 1, [m.recipients for m in smtp_server.received]
    text = received[0].message.get_body(("plain",)).get_content()
    path = re.search(r"http://nurture\.test(/f/confirm/[A-Za-z0-9_-]+)", text).group(1)
    assert client.post(path).status_code == 200
    confirmed = contact(site_app, "gone@example.com")
    assert confirmed.status is ContactStatus.SUBSCRIBED  # the confirmed opt-in did it
    assert (confirmed.first_name, confirmed.attributes) == ("=cmd", {"plan": "pro"})
    assert enrolled(site_app, welcome) == [confirmed.id]


def test_an_anonymous_post_fills_in_blanks_but_never_overwrites(site_app):
    client = site_app.test_client()
    form = setup_form(site_app, fields=[*FORM["fields"], {"name": "last_name", "label": "Last"}])
    created = client.post(
        "/api/v1/contacts",
        json={"email": "kim@example.com", "first_name": "Kim", "attributes": {"plan": "pro"}},
        headers=admin_headers(site_app),
    )
    assert created.status_code == 201
    data = {
        "email": "kim@example.com",
        "first_name": "Mallory",
        "last_name": "Lee",
        "plan": "free",
        "consent": "on",
    }
    assert submit(client, form, data).json["status"] == "confirmed"
    kim = contact(site_app, "kim@example.com")
    assert (kim.first_name, kim.last_name, kim.attributes) == ("Kim", "Lee", {"plan": "pro"})
    assert kim.status is ContactStatus.SUBSCRIBED
