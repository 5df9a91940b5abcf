"""Bounce and complaint intake: the signed webhook, DSN/ARF parsing, the complaint guard."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from conftest import make_settings
from emailkit import make_contact, make_identity, make_template
from sqlalchemy import select, update

from automation import clock
from automation.contacts.models import Contact, ContactStatus, Event
from automation.email.models import (
    Message,
    MessageStatus,
    SenderIdentity,
    Suppression,
    SuppressionReason,
    TemplateVersion,
)
from automation.email.outbox import queue_message
from automation.errors import InvalidInput
from automation.tracking.bounces import (
    FeedbackIn,
    FeedbackType,
    parse_report,
    record_feedback,
    signature,
)
from automation.tracking.tokens import TokenSigner, message_id_header

SECRET = "webhook-secret-" + "s" * 20


@pytest.fixture
def settings(tmp_path, db_url):
    return make_settings(tmp_path, db_url, NURTURE_WEBHOOK_SECRET=SECRET)


def post(client: Any, path: str, body: bytes, secret: str | None = SECRET) -> Any:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Nurture-Signature"] = signature(secret, body)
    return client.post(path, data=body, headers=headers)


def sent(app: Any, email: str) -> tuple[int, int, str]:
    with app.extensions["nurture"].sessions() as s:
        if s.scalar(select(SenderIdentity.id)) is None:
            make_template(s, sender_identity_id=make_identity(s))
        contact_id = make_contact(s, email)
        version_id = s.scalar(select(TemplateVersion.id))
        message_id = queue_message(
            s, dedupe_key=f"t:{email}", contact_id=contact_id, template_version_id=version_id
        )
        s.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(status=MessageStatus.SENT, sent_at=clock.now() - timedelta(hours=1))
        )
        nonce = s.scalar(select(Message.token_nonce).where(Message.id == message_id))
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


def test_complaints_over_the_rate_pause_the_sender_and_the_outbox_skips_it(app, api):
    runtime = app.extensions["nurture"]
    contacts = [sent(app, f"c{i}@example.com") for i in range(10)]
    signer = TokenSigner.from_settings(runtime.settings)
    with runtime.sessions() as s:
        report = record_feedback(
            s,
            [
                FeedbackIn(
                    type=FeedbackType.COMPLAINT, email="c0@example.com", message_id=contacts[0][2]
                )
            ],
            signer,
            source="test",
            min_sent=5,
        )
        s.commit()
        assert report.paused_identities and len(report.paused_identities) == 1
        assert s.get(Contact, contacts[0][0]).status is ContactStatus.COMPLAINED
    identities = api.get("/sender-identities").get_json()
    paused = [i for i in identities if i["paused_at"]]
    assert paused and "complaint rate" in paused[0]["paused_reason"]
    from automation.email.outbox import claim_batch
    from automation.email.render import VersionCache

    with runtime.sessions() as s:
        queue_message(
            s,
            dedupe_key="after-pause",
            contact_id=contacts[1][0],
            template_version_id=s.scalar(select(TemplateVersion.id)),
        )
        s.commit()
        batch = claim_batch(s, settings=runtime.settings, cache=VersionCache())
        assert not batch.messages
        s.rollback()
    resumed = api.post(f"/sender-identities/{paused[0]['id']}/resume")
    assert resumed.status_code == 200 and resumed.get_json()["paused_at"] is None
