"""Bounce and complaint intake: the signed webhook, DSN/ARF parsing, the complaint guard."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from conftest import make_settings
from emailkit import make_contact, make_identity, make_template, mark_sent
from sqlalchemy import func, select, update

from automation import clock
from automation.contacts.models import Contact, ContactStatus, Event
from automation.contacts.suppressions import Suppression, SuppressionReason
from automation.email.models import (
    Message,
    MessageStatus,
    SenderIdentity,
    TemplateVersion,
)
from automation.email.outbox import QueueItem, queue_message, queue_messages
from automation.errors import InvalidInput
from automation.signing import TokenSigner, message_id_header
from automation.tracking.bounces import FeedbackType, parse_report, signature

SECRET = "webhook-secret-" + "s" * 20


@pytest.fixture
def settings(tmp_path, db_url):
    return make_settings(tmp_path, db_url, NURTURE_WEBHOOK_SECRET=SECRET)


def post(client: Any, path: str, body: bytes, secret: str | None = SECRET) -> Any:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Nurture-Signature"] = signature(secret, body)
    return client.post(path, data=body, headers=headers)


def sent(app: Any, email: str, *, identity: bool = True) -> tuple[int, int, str]:
    """A message sent an hour ago to a new contact, from the sender identity (made once) or,
    with ``identity=False``, from the default sender; (contact id, message id, Message-ID)."""
    with app.extensions["nurture"].sessions() as s:
        version_id = s.scalar(
            select(TemplateVersion.id).where(
                TemplateVersion.sender_identity_id.is_not(None)
                if identity
                else TemplateVersion.sender_identity_id.is_(None)
            )
        )
        if version_id is None:
            sender = make_identity(s) if identity else None
            name = "Branded" if identity else "Plain"
            version_id = make_template(s, name=name, sender_identity_id=sender).version.id
        contact_id = make_contact(s, email)
        message_id = queue_message(
            s, dedupe_key=f"t:{email}", contact_id=contact_id, template_version_id=version_id
        )
        nonce = mark_sent(s, message_id, timedelta(hours=1))
        s.commit()
    signer = TokenSigner.from_settings(app.extensions["nurture"].settings)
    header = message_id_header(signer.for_message(message_id, nonce, version_id), "shop.example")
    return contact_id, message_id, header


def test_unsigned_or_wrongly_signed_webhooks_get_401(client):
    body = json.dumps({"events": [{"type": "complaint", "email": "a@example.com"}]}).encode()
    assert post(client, "/webhooks/feedback", body, secret=None).status_code == 401
    assert post(client, "/webhooks/feedback", body, secret="wrong").status_code == 401


def test_bad_webhook_json_names_the_field(client):
    body = json.dumps({"events": [{"type": "explode", "email": "a@example.com"}]}).encode()
    response = post(client, "/webhooks/feedback", body)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["path"] == "events[0].type"
    assert post(client, "/webhooks/feedback", b"{nope").status_code == 422


def test_a_hard_bounce_suppresses_at_once(app, client):
    contact_id, message_id, header = sent(app, "gone@example.com")
    body = json.dumps(
        {"events": [{"type": "hard_bounce", "email": "gone@example.com", "message_id": header}]}
    ).encode()
    response = post(client, "/webhooks/feedback", body)
    assert response.status_code == 200 and response.get_json()["suppressed"] == 1
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, contact_id).status is ContactStatus.BOUNCED
        assert s.scalar(select(Suppression.reason)) is SuppressionReason.BOUNCED
        assert s.get(Message, message_id).bounced_at is not None
        assert s.scalar(select(Event.name)) == "email.bounced"


def test_soft_bounces_suppress_only_after_the_threshold(app, client):
    contact_id, _, _ = sent(app, "full@example.com")
    body = json.dumps({"events": [{"type": "soft_bounce", "email": "full@example.com"}]}).encode()
    for expected in (ContactStatus.SUBSCRIBED, ContactStatus.SUBSCRIBED, ContactStatus.BOUNCED):
        assert post(client, "/webhooks/feedback", body).status_code == 200
        with app.extensions["nurture"].sessions() as s:
            assert s.get(Contact, contact_id).status is expected


DSN = b"""From: MAILER-DAEMON@mx.example
To: bounces@shop.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example

Final-Recipient: rfc822; gone@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

Final-Recipient: rfc822; later@example.com
Action: delayed
Status: 4.2.2

Final-Recipient: rfc822; fine@example.com
Action: delivered
Status: 2.0.0
--B
Content-Type: text/rfc822-headers

Message-ID: MSGID
Subject: Welcome
--B--
"""


def test_a_dsn_is_parsed_into_hard_and_soft_bounces():
    items = parse_report(DSN.replace(b"MSGID", b"<abc@shop.example>"))
    assert [(i.type, i.email) for i in items] == [
        (FeedbackType.HARD_BOUNCE, "gone@example.com"),
        (FeedbackType.SOFT_BOUNCE, "later@example.com"),
    ]
    assert items[0].message_id == "<abc@shop.example>"
    assert "user unknown" in (items[0].diagnostic or "")


def test_a_dsn_posted_to_the_webhook_suppresses_the_recipient(app, client):
    contact_id, message_id, header = sent(app, "gone@example.com")
    response = post(client, "/webhooks/dsn", DSN.replace(b"MSGID", header.encode()))
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, contact_id).status is ContactStatus.BOUNCED
        assert s.get(Message, message_id).bounced_at is not None


def test_mail_that_is_no_report_is_refused_with_the_field():
    with pytest.raises(InvalidInput) as exc:
        parse_report(b"Subject: hi\n\nhello")
    assert exc.value.errors[0].path == "body"


ARF = b"""MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an abuse report.
--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeISP/1.0
Version: 1
Original-Rcpt-To: <angry@example.com>
--F
Content-Type: text/rfc822-headers

Message-ID: <x@shop.example>
--F--
"""


def test_an_arf_complaint_is_parsed():
    items = parse_report(ARF)
    assert [(i.type, i.email) for i in items] == [(FeedbackType.COMPLAINT, "angry@example.com")]


def complaint(email: str, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "complaint", "email": email, "message_id": message_id, **extra}


def feedback(client: Any, *events: dict[str, Any]) -> dict[str, Any]:
    response = post(client, "/webhooks/feedback", json.dumps({"events": list(events)}).encode())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def claimable(app: Any, contact_id: int, key: str) -> list[int]:
    """Queue one more message from the version ``contact_id`` got mail from, and return
    the ids a sender claims now (rolled back: nothing is sent)."""
    from automation.email.outbox import claim_batch
    from automation.email.render import VersionCache

    runtime = app.extensions["nurture"]
    with runtime.sessions() as s:
        version_id = s.scalar(
            select(Message.template_version_id).where(Message.contact_id == contact_id)
        )
        queue_message(s, dedupe_key=key, contact_id=contact_id, template_version_id=version_id)
        s.commit()
        batch = claim_batch(s, settings=runtime.settings, cache=VersionCache())
        s.rollback()
    return [m.id for m in batch.messages]


def test_complaints_over_the_rate_pause_the_identity_and_the_outbox_skips_it(app, api, client):
    contacts = [sent(app, f"c{i}@example.com") for i in range(10)]
    # Two complaints of ten sent (20 %) stay under the minimum count of 3: no pause yet.
    first = feedback(client, *(complaint(f"c{i}@example.com", contacts[i][2]) for i in (0, 1)))
    assert first["paused_sender_identities"] == [] and first["suppressed"] == 2
    third = feedback(client, complaint("c2@example.com", contacts[2][2]))
    assert len(third["paused_sender_identities"]) == 1 and not third["default_sender_paused"]
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, contacts[0][0]).status is ContactStatus.COMPLAINED
    paused = [i for i in api.get("/sender-identities").get_json() if i["paused_at"]]
    assert "complaint rate 30.00% (3 of 10 sent in 30 days)" in paused[0]["paused_reason"]
    assert claimable(app, contacts[3][0], "after-pause") == []
    resumed = api.post(f"/sender-identities/{paused[0]['id']}/resume")
    assert resumed.status_code == 200 and resumed.get_json()["paused_at"] is None
    assert len(claimable(app, contacts[4][0], "after-resume")) == 2  # both waiting go out
    # Late complaints about mail sent before the resume do not pause it again ...
    late = feedback(client, *(complaint(f"c{i}@example.com", contacts[i][2]) for i in (3, 5, 6)))
    assert late["paused_sender_identities"] == [] and late["suppressed"] == 3
    # ... complaints about mail sent since do.
    fresh = [sent(app, f"n{i}@example.com") for i in range(3)]
    with app.extensions["nurture"].sessions() as s:
        s.execute(
            update(Message)
            .where(Message.id.in_([message for _, message, _ in fresh]))
            .values(sent_at=clock.now())
        )
        s.commit()
    again = feedback(client, *(complaint(f"n{i}@example.com", fresh[i][2]) for i in range(3)))
    assert again["paused_sender_identities"] == [paused[0]["id"]]


def test_a_big_sender_under_the_rate_is_not_paused_whatever_the_count(app, client):
    contact_id, _, _ = sent(app, "reader@example.com")
    with app.extensions["nurture"].sessions() as s:
        version_id = s.scalar(select(Message.template_version_id))
        ids = queue_messages(
            s, [QueueItem(f"bulk:{n}", contact_id, version_id) for n in range(1499)]
        )
        s.execute(
            update(Message)
            .where(Message.id.in_(ids))
            .values(status=MessageStatus.SENT, sent_at=clock.now() - timedelta(days=2))
        )
        s.commit()
    headers = [sent(app, f"k{i}@example.com")[2] for i in range(4)]  # 1,504 sent
    # 4 complaints of 1,504 is 0.27 %: over the minimum count, under the rate.
    result = feedback(client, *(complaint(f"k{i}@example.com", h) for i, h in enumerate(headers)))
    assert result["paused_sender_identities"] == [] and result["suppressed"] == 4
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(SenderIdentity.paused_at)) is None


def test_the_default_sender_is_paused_shown_everywhere_and_resumed(app, api, client):
    from conftest import login
    from test_ui_forms import Form

    from automation.accounts.models import Role
    from automation.accounts.service import create_user

    contacts = [sent(app, f"d{i}@example.com", identity=False) for i in range(20)]
    result = feedback(client, *(complaint(f"d{i}@example.com", contacts[i][2]) for i in range(3)))
    assert result["default_sender_paused"] is True and result["paused_sender_identities"] == []
    state = api.get("/sender-identities/default").get_json()
    assert state["from_email"] == "hello@example.com" and "3 of 20 sent" in state["paused_reason"]
    assert claimable(app, contacts[5][0], "held") == []  # the outbox honours the pause

    with app.extensions["nurture"].sessions() as s:
        create_user(s, "m@example.com", "correct horse battery", role=Role.MARKETER)
        create_user(s, "admin@example.com", "correct horse battery", role=Role.ADMIN)
        s.commit()
    login(client, "m@example.com", "correct horse battery")
    for page in ("/contacts", "/campaigns"):  # the banner, wherever a marketer works
        html = client.get(page).get_data(as_text=True)
        assert 'id="paused-banner"' in html and 'href="/outbox#paused-senders"' in html
        assert "paused 1 sender," in html
    dashboard = client.get("/").get_data(as_text=True)
    assert 'id="dashboard-paused"' in dashboard and "hello@example.com" in dashboard
    operations = client.get("/outbox").get_data(as_text=True)
    assert 'id="paused-default"' in operations and "Resume</button>" not in operations
    assert Form(client).post("/outbox/senders/default/resume").status_code == 403
    assert api.as_role("marketer").post("/sender-identities/default/resume").status_code == 403

    client.post("/logout", data={"csrf_token": Form(client).token})
    login(client, "admin@example.com", "correct horse battery")
    assert "Resume</button>" in client.get("/outbox").get_data(as_text=True)
    assert Form(client).post("/outbox/senders/default/resume").status_code == 302
    html = client.get("/contacts").get_data(as_text=True)
    assert 'id="paused-banner"' not in html
    assert 'id="dashboard-paused"' not in client.get("/").get_data(as_text=True)
    assert api.get("/sender-identities/default").get_json()["paused_at"] is None
    assert len(claimable(app, contacts[6][0], "released")) == 2


def test_the_default_sender_is_resumed_over_the_api(app, api, client):
    contacts = [sent(app, f"e{i}@example.com", identity=False) for i in range(5)]
    feedback(client, *(complaint(f"e{i}@example.com", contacts[i][2]) for i in range(3)))
    assert api.get("/sender-identities/default").get_json()["paused_at"] is not None
    resumed = api.post("/sender-identities/default/resume")
    assert resumed.status_code == 200 and resumed.get_json()["paused_at"] is None
    assert len(claimable(app, contacts[4][0], "again")) == 1


def test_complaints_not_tied_to_our_messages_are_recorded_and_reported(app, client):
    contact_id, message_id, _ = sent(app, "known@example.com")
    foreign = "<abc123@mailer.other.example>"
    result = feedback(
        client,
        complaint("stranger@example.com", foreign),  # no contact of ours
        complaint("known@example.com", foreign, from_address="someone@other.example"),
    )
    assert result["unmatched_complaints"] == 2 and result["unknown"] == 1
    assert result["suppressed"] == 2  # a complaint always suppresses
    with app.extensions["nurture"].sessions() as s:
        reasons = dict(s.execute(select(Suppression.email, Suppression.reason)).all())
        assert reasons == {
            "stranger@example.com": SuppressionReason.COMPLAINED,
            "known@example.com": SuppressionReason.COMPLAINED,
        }
        assert s.get(Contact, contact_id).status is ContactStatus.COMPLAINED
        assert s.get(Message, message_id).complained_at is None  # counts toward no rate
        assert s.scalar(select(Event.name)) == "email.complained"


def test_a_complaint_whose_from_names_our_sender_counts_toward_its_rate(app, client):
    contacts = [sent(app, f"f{i}@example.com") for i in range(5)]
    rewritten = "<rewritten@feedback-loop.example>"
    result = feedback(
        client,
        *(
            complaint(f"f{i}@example.com", rewritten, from_address="Hello@Shop.example")
            for i in range(3)
        ),
    )
    assert result["unmatched_complaints"] == 0
    assert len(result["paused_sender_identities"]) == 1
    with app.extensions["nurture"].sessions() as s:
        assert all(s.get(Message, c[1]).complained_at is not None for c in contacts[:3])


ARF_FROM = ARF.replace(
    b"Message-ID: <x@shop.example>",
    b"Message-ID: <x@shop.example>\nFrom: Shop <hello@shop.example>",
)


def test_an_arf_report_carries_the_original_from_address():
    (item,) = parse_report(ARF_FROM)
    assert item.from_address == "hello@shop.example"


def test_the_soft_bounce_threshold_is_a_policy_setting(app, api, client):
    bad = api.put("/settings/sending-policy", {"soft_bounce_limit": 0, "complaint_min_count": -1})
    assert bad.status_code == 422
    named = {d["path"] for d in bad.get_json()["error"]["details"]}
    assert named == {"soft_bounce_limit", "complaint_min_count"}
    saved = api.put("/settings/sending-policy", {"soft_bounce_limit": 2, "soft_bounce_days": 7})
    assert saved.status_code == 200 and saved.get_json()["soft_bounce_limit"] == 2
    contact_id, _, _ = sent(app, "full@example.com")
    for expected in (ContactStatus.SUBSCRIBED, ContactStatus.BOUNCED):
        feedback(client, {"type": "soft_bounce", "email": "full@example.com"})
        with app.extensions["nurture"].sessions() as s:
            assert s.get(Contact, contact_id).status is expected


def test_a_bad_address_in_the_webhook_is_named(client):
    body = json.dumps({"events": [{"type": "complaint", "email": "not an address"}]}).encode()
    response = post(client, "/webhooks/feedback", body)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["path"] == "events[0].email"


# --- nurture bounces ingest -------------------------------------------------------------


def ingest(app: Any, data: bytes, *args: str) -> Any:
    from click.testing import CliRunner

    from automation.cli import main

    return CliRunner().invoke(main, ["bounces", "ingest", *args], input=data)


def test_the_cli_ingests_a_dsn_from_stdin_like_the_webhook(app):
    contact_id, message_id, header = sent(app, "gone@example.com")
    result = ingest(app, DSN.replace(b"MSGID", header.encode()))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["suppressed"] == 1
    assert json.loads(result.output)["soft_bounces"] == 1
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, contact_id).status is ContactStatus.BOUNCED
        assert s.get(Message, message_id).bounced_at is not None
        assert s.scalar(select(Event.source)) == "cli"


def test_the_cli_takes_a_dsn_with_8bit_text_in_its_fields(app):
    contact_id, _, header = sent(app, "gone@example.com")
    localised = DSN.replace(b"MSGID", header.encode()).replace(
        b"550 5.1.1 user unknown", b"550 5.1.1 Empf\xe4nger unbekannt"
    )
    result = ingest(app, localised)
    assert result.exit_code == 0, result.output
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, contact_id).status is ContactStatus.BOUNCED
        diagnostic = s.scalar(select(Event.properties).where(Event.name == "email.bounced"))
        assert "5.1.1 Empf" in diagnostic["diagnostic"]


def test_the_cli_reads_a_complaint_from_a_file(app, tmp_path):
    contact_id, _, _ = sent(app, "angry@example.com")
    path = tmp_path / "arf.eml"
    path.write_bytes(ARF_FROM)
    result = ingest(app, b"", str(path))
    assert result.exit_code == 0, result.output
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, contact_id).status is ContactStatus.COMPLAINED


@pytest.mark.parametrize(
    ("mail", "message"),
    [
        (b"Subject: hi\n\nhello", "body: not a multipart/report message"),
        (
            DSN.split(b"--B\nContent-Type: message/delivery-status")[0] + b"--B--\n",
            "body: a delivery-status report without a message/delivery-status part",
        ),
        (
            DSN.replace(b"rfc822; gone@example.com", b"rfc822; not-an-address"),
            "email: ",
        ),
    ],
)
def test_a_malformed_report_on_stdin_fails_clearly_and_writes_nothing(app, mail, message):
    sent(app, "later@example.com")
    result = ingest(app, mail)
    assert result.exit_code == 1
    assert message in result.output
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 0
        assert s.scalar(select(func.count()).select_from(Suppression)) == 0
        assert s.scalar(select(Contact.status)) is ContactStatus.SUBSCRIBED


def test_the_cli_asks_the_mta_to_retry_when_the_database_is_down(app, tmp_path):
    from automation.runtime import build_runtime, use_runtime

    down = make_settings(
        tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/nowhere", NURTURE_WEBHOOK_SECRET=SECRET
    )
    use_runtime(build_runtime(down))
    result = ingest(app, DSN.replace(b"MSGID", b"<x@shop.example>"))
    use_runtime(app.extensions["nurture"])
    assert result.exit_code == 75  # EX_TEMPFAIL: Postfix keeps the bounce and retries
    assert "database unavailable" in result.output
