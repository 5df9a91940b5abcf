"""Sending through the outbox to a real SMTP server on loopback: headers, multipart
structure, encodings, suppression, the SMTP outcomes, dedupe, rate limit and frequency cap."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import emailkit
import pytest
from emailkit import make_contact, make_identity, make_template
from sqlalchemy import func, select

from automation import clock
from automation.addresses import email_hash
from automation.contacts.models import Contact, ContactStatus, Event
from automation.contacts.suppressions import Suppression, SuppressionReason
from automation.db import make_engine, make_session_factory
from automation.email.models import Message, MessageStatus
from automation.email.outbox import (
    IllegalTransition,
    check_transition,
    expire_leases,
    queue_message,
    resend_message,
    send_batch,
    send_due,
)
from automation.email.sender import Sending, render_message
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.signing import TokenKind, TokenSigner

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending


def _status(sessions, message_id):
    with sessions() as s:
        return s.get(Message, message_id)


def _queue(session, version_id, contact_id, key=None):
    return queue_message(
        session,
        dedupe_key=key or f"test:{contact_id}:{version_id}",
        contact_id=contact_id,
        template_version_id=version_id,
        workflow_name="Onboarding",
    )


def test_a_queued_message_arrives_with_its_headers_and_both_parts(
    session, sessions, sending, smtp_server, settings
):
    identity = make_identity(session)
    saved = make_template(session, sender_identity_id=identity)
    contact = make_contact(session, "zoe@example.com", tags=["vip"])
    message_id = _queue(session, saved.version.id, contact)
    session.commit()

    report = send_due(sessions, sending)

    assert report.outcomes == {"sent": 1}
    [received] = smtp_server.received
    assert received.sender == "hello@shop.example"
    assert received.recipients == ["zoe@example.com"]
    msg = received.message
    assert msg["Subject"] == "Welcome, Zoë — ça va?"
    assert msg["From"].addresses[0].display_name == "Nurture Öutdoor"
    assert msg["From"].addresses[0].addr_spec == "hello@shop.example"
    assert msg["To"].addresses[0].display_name == "Zoë Dubois"
    assert msg["Reply-To"] == "help@shop.example"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in msg.iter_parts())
    signer = TokenSigner.from_settings(settings)
    message_header = msg["Message-ID"]
    token = re.fullmatch(r"<([A-Za-z0-9_\-]+)@shop\.example>", message_header).group(1)
    assert signer.verify(token, TokenKind.VIEW).message_id == message_id
    unsubscribe = msg["List-Unsubscribe"]
    https = re.search(r"<(http://nurture\.test/u/([A-Za-z0-9_\-]+))>", unsubscribe)
    assert https and signer.verify(https.group(2), TokenKind.UNSUBSCRIBE).message_id == message_id
    assert "<mailto:unsubscribe@shop.example?subject=unsubscribe%20" in unsubscribe
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Feedback-ID"] == f"x:m{saved.template.id}:i{identity}:nurture"
    assert str(msg["List-Id"]) == "Nurture Öutdoor <mail.shop.example>"
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "Hello Zoë," in html and "Thank you for being a VIP." in html
    assert "ünïcödé ✓" in html and "ünïcödé ✓" in text
    assert "Your account is ready" in html  # the preheader
    assert "Tag: vip" in text
    clicks = re.findall(r'href="http://nurture\.test/t/c/([A-Za-z0-9_\-]+)"', html)
    assert len(clicks) == 3  # the two links and the hidden honeypot
    claims = [signer.verify(t, TokenKind.CLICK) for t in clicks]
    assert [c.link_index for c in claims] == [0, 1, 2]
    assert {c.message_id for c in claims} == {message_id}
    opens = re.findall(r'src="http://nurture\.test/t/o/([A-Za-z0-9_\-]+)"', html)
    assert signer.verify(opens[0], TokenKind.OPEN).message_id == message_id
    assert "shop.example/start" not in html  # destinations only behind signed clicks

    row = _status(sessions, message_id)
    assert row.status is MessageStatus.SENT and row.sent_at is not None
    assert row.provider_message_id == "Q1" and row.smtp_response.startswith("250")
    with sessions() as s:
        assert s.get(Contact, contact).emails_sent == 1


def test_received_html_and_text_are_what_the_message_preview_shows(
    session, sessions, sending, smtp_server, settings
):
    saved = make_template(session)
    contact = make_contact(session, "ana@example.com", attributes={})
    message_id = _queue(session, saved.version.id, contact)
    session.commit()
    send_due(sessions, sending)
    received = smtp_server.received[0].message
    with sessions() as s:
        preview = render_message(s, message_id, settings)
    crlf = lambda s: s.replace("\r\n", "\n")  # noqa: E731  # the wire form of text is CRLF
    assert crlf(received.get_body(("html",)).get_content()) == preview.html
    assert crlf(received.get_body(("plain",)).get_content()) == preview.text
    assert received["Subject"] == preview.subject


def test_a_dedupe_key_queues_one_message_only(session):
    saved = make_template(session)
    contact = make_contact(session, "ana@example.com")
    first = _queue(session, saved.version.id, contact, key="enrol:1:node:3")
    again = _queue(session, saved.version.id, contact, key="enrol:1:node:3")
    assert first is not None and again is None
    assert session.scalar(select(func.count()).select_from(Message)) == 1


@pytest.mark.parametrize(
    ("status", "kind", "suppressed"),
    [
        (ContactStatus.UNSUBSCRIBED, "marketing", True),
        (ContactStatus.BOUNCED, "marketing", True),
        (ContactStatus.COMPLAINED, "marketing", True),
        (ContactStatus.PENDING, "marketing", True),
        (ContactStatus.PENDING, "transactional", False),  # the confirmation email itself
        (ContactStatus.UNSUBSCRIBED, "transactional", False),
        (ContactStatus.BOUNCED, "transactional", True),
    ],
)
def test_suppression_is_checked_at_send_time(
    session, sessions, sending, smtp_server, status, kind, suppressed
):
    saved = make_template(session, kind=kind)
    contact = make_contact(session, "ana@example.com")
    message_id = _queue(session, saved.version.id, contact)
    session.execute(Contact.__table__.update().values(status=status))  # after queueing
    session.commit()
    send_due(sessions, sending)
    row = _status(sessions, message_id)
    if suppressed:
        assert row.status is MessageStatus.SUPPRESSED and row.reason == status.value
        assert smtp_server.received == []
    else:
        assert row.status is MessageStatus.SENT and len(smtp_server.received) == 1


def test_an_address_on_the_suppression_list_is_never_mailed(
    session, sessions, sending, smtp_server
):
    saved = make_template(session)
    contact = make_contact(session, "ana@example.com")
    message_id = _queue(session, saved.version.id, contact)
    session.add(
        Suppression(
            email_hash=email_hash("ana@example.com"),
            email=None,
            reason=SuppressionReason.ERASED,
            created_at=clock.now(),
        )
    )
    session.commit()
    send_due(sessions, sending)
    row = _status(sessions, message_id)
    assert row.status is MessageStatus.SUPPRESSED and row.reason == "suppression_list:erased"
    assert smtp_server.received == []


def test_a_hard_bounce_fails_the_message_and_suppresses_the_address(
    session, sessions, sending, smtp_server
):
    smtp_server.behaviour.rcpt["gone"] = "550 5.1.1 No such user"
    saved = make_template(session)
    contact = make_contact(session, "gone@example.com")
    message_id = _queue(session, saved.version.id, contact)
    session.commit()
    send_due(sessions, sending)
    row = _status(sessions, message_id)
    assert row.status is MessageStatus.FAILED and row.reason == "hard_bounce"
    assert row.smtp_response.startswith("550") and row.bounced_at is not None
    with sessions() as s:
        assert s.get(Contact, contact).status is ContactStatus.BOUNCED
        listed = s.scalar(
            select(Suppression).where(Suppression.email_hash == email_hash("gone@example.com"))
        )
        assert listed.reason is SuppressionReason.BOUNCED
        assert s.scalar(select(Event.name).where(Event.contact_id == contact)) == "email.bounced"


def test_a_temporary_failure_defers_with_backoff_and_is_never_counted_as_sent(
    session, sessions, sending, smtp_server
):
    smtp_server.behaviour.rcpt["busy"] = "451 4.7.1 Try again later"
    identity = make_identity(session)
    saved = make_template(session, sender_identity_id=identity)
    contact = make_contact(session, "busy@example.com")
    message_id = _queue(session, saved.version.id, contact)
    session.commit()
    send_due(sessions, sending)
    row = _status(sessions, message_id)
    assert row.status is MessageStatus.DEFERRED and row.attempts == 1
    assert row.next_attempt_at > clock.now() + timedelta(seconds=30)
    assert row.sent_at is None
    with sessions() as s:
        assert s.get(Contact, contact).emails_sent == 0
        from automation.email.models import SenderIdentity

        assert s.get(SenderIdentity, identity).throttle_factor == 0.5  # slower from now on
    # Due again later, and the server now accepts: sent once.
    smtp_server.behaviour.rcpt.clear()
    clock.set_source(lambda: row.next_attempt_at + timedelta(seconds=1))
    try:
        send_due(sessions, sending)
    finally:
        clock.set_source(None)
    assert _status(sessions, message_id).status is MessageStatus.SENT
    assert len(smtp_server.received) == 1


def test_a_5xx_on_the_data_fails_without_suppressing(session, sessions, sending, smtp_server):
    smtp_server.behaviour.data["spammy"] = "554 5.7.1 Message rejected as spam"
    saved = make_template(session)
    contact = make_contact(session, "spammy@example.com")
    message_id = _queue(session, saved.version.id, contact)
    session.commit()
    send_due(sessions, sending)
    row = _status(sessions, message_id)
    assert row.status is MessageStatus.FAILED and row.reason == "rejected"
    with sessions() as s:
        assert s.get(Contact, contact).status is ContactStatus.SUBSCRIBED


def test_an_unreachable_relay_defers_the_whole_batch(session, sessions, settings):
    from automation.email.catcher import free_port

    saved = make_template(session)
    ids = [
        _queue(session, saved.version.id, make_contact(session, f"u{i}@example.com"))
        for i in range(3)
    ]
    session.commit()
    dead = Sending(
        settings,
        SmtpTransport(SmtpSettings("127.0.0.1", free_port(), timeout=2)),
        TokenSigner.from_settings(settings),
    )
    send_due(sessions, dead)
    for message_id in ids:
        row = _status(sessions, message_id)
        assert row.status is MessageStatus.DEFERRED and row.reason == "relay_unavailable"


def test_an_expired_lease_becomes_unknown_and_only_an_operator_resends_it(
    session, sessions, settings
):
    from automation.email.outbox import claim_batch
    from automation.email.render import VersionCache

    saved = make_template(session)
    message_id = _queue(session, saved.version.id, make_contact(session, "ana@example.com"))
    session.commit()
    with sessions() as s:
        batch = claim_batch(s, settings=settings, cache=VersionCache())
        s.commit()
    assert [m.id for m in batch.messages] == [message_id]
    # The sender dies here. Later, the lease runs out:
    with sessions() as s:
        assert expire_leases(s, now=batch.lease_expires_at + timedelta(seconds=1)) == 1
        s.commit()
    row = _status(sessions, message_id)
    assert row.status is MessageStatus.UNKNOWN and row.reason == "lease_expired"
    with sessions() as s:  # nothing claims it again by itself
        assert (
            claim_batch(
                s, settings=settings, cache=VersionCache(), now=clock.now() + timedelta(days=1)
            ).messages
            == []
        )
        s.rollback()
    with sessions() as s:
        resend_message(s, message_id)
        s.commit()
    assert _status(sessions, message_id).status is MessageStatus.QUEUED


def test_status_changes_follow_one_transition_rule():
    check_transition(MessageStatus.QUEUED, MessageStatus.SENDING)
    check_transition(MessageStatus.UNKNOWN, MessageStatus.QUEUED)
    for final in (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED):
        with pytest.raises(IllegalTransition):
            check_transition(final, MessageStatus.QUEUED)
    with pytest.raises(IllegalTransition):
        check_transition(MessageStatus.QUEUED, MessageStatus.SENT)  # never without a lease
    with pytest.raises(IllegalTransition):
        check_transition(MessageStatus.SENDING, MessageStatus.SENDING)


def test_a_connection_lost_before_the_data_defers(session, sessions, sending, smtp_server):
    smtp_server.behaviour.drop_at_rcpt.add("flaky")
    saved = make_template(session)
    message_id = _queue(session, saved.version.id, make_contact(session, "flaky@example.com"))
    session.commit()
    send_due(sessions, sending)
    row = _status(sessions, message_id)
    assert row.status is MessageStatus.DEFERRED and row.sent_at is None
    assert smtp_server.received == []


def test_a_connection_lost_after_the_data_is_unknown_and_not_retried(
    session, sessions, sending, smtp_server
):
    smtp_server.behaviour.drop_after_data.add("maybe")
    saved = make_template(session)
    maybe = _queue(session, saved.version.id, make_contact(session, "maybe@example.com"))
    after = _queue(session, saved.version.id, make_contact(session, "after@example.com"))
    session.commit()
    send_due(sessions, sending)
    row = _status(sessions, maybe)
    assert row.status is MessageStatus.UNKNOWN and row.reason == "outcome_unknown"
    assert _status(sessions, after).status is MessageStatus.SENT  # a new connection
    clock.set_source(lambda: clock.datetime.now(clock.UTC) + timedelta(days=2))
    try:
        send_due(sessions, sending)
    finally:
        clock.set_source(None)
    assert _status(sessions, maybe).status is MessageStatus.UNKNOWN
    assert sorted(r.recipients[0] for r in smtp_server.received) == [
        "after@example.com",
        "maybe@example.com",
    ]


def test_a_template_deleted_while_messages_wait_fails_them(session, sessions, sending, smtp_server):
    from automation.email.models import Template

    saved = make_template(session)
    message_id = _queue(session, saved.version.id, make_contact(session, "ana@example.com"))
    session.get(Template, saved.template.id).deleted_at = clock.now()  # a race with delete
    session.commit()
    send_due(sessions, sending)
    row = _status(sessions, message_id)
    assert row.status is MessageStatus.FAILED and row.reason == "template_deleted"
    assert smtp_server.received == []


def test_a_malformed_stored_address_fails_only_that_message(
    session, sessions, sending, smtp_server
):
    saved = make_template(session)
    good = _queue(session, saved.version.id, make_contact(session, "good@example.com"))
    bad_contact = make_contact(session, "bad@example.com")
    bad = _queue(session, saved.version.id, bad_contact)
    session.execute(
        Contact.__table__.update()
        .where(Contact.id == bad_contact)
        .values(email="bad@example.com\r\nBcc: victim@example.com")
    )
    session.commit()
    send_due(sessions, sending)
    assert _status(sessions, good).status is MessageStatus.SENT
    row = _status(sessions, bad)
    assert row.status is MessageStatus.FAILED and row.reason == "invalid_address"
    assert [r.recipients for r in smtp_server.received] == [["good@example.com"]]


def test_the_rate_limit_of_a_sender_identity_holds_across_batches(
    session, sessions, sending, smtp_server
):
    identity = make_identity(session, max_per_minute=3)
    saved = make_template(session, sender_identity_id=identity)
    ids = [
        _queue(session, saved.version.id, make_contact(session, f"r{i}@example.com"))
        for i in range(5)
    ]
    session.commit()
    minute = (clock.now() + timedelta(minutes=1)).replace(second=10, microsecond=0)
    clock.set_source(lambda: minute)
    try:
        report = send_due(sessions, sending)
        assert report.outcomes == {"sent": 3}
        assert send_due(sessions, sending).claimed == 0  # nothing more this minute
    finally:
        clock.set_source(None)
    clock.set_source(lambda: minute + timedelta(minutes=1))
    try:
        assert send_due(sessions, sending).outcomes == {"sent": 2}
    finally:
        clock.set_source(None)
    assert all(_status(sessions, i).status is MessageStatus.SENT for i in ids)


@pytest.mark.parametrize("action", ["defer", "skip"])
def test_the_frequency_cap_counts_marketing_mail_across_sources(
    session, sessions, smtp_server, settings, action
):
    capped = settings.with_overrides(frequency_cap=2, frequency_cap_action=action)
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    sending = Sending(capped, transport, TokenSigner.from_settings(capped))
    marketing = make_template(session)
    receipt = make_template(session, name="Receipt", kind="transactional")
    contact = make_contact(session, "ana@example.com")
    first = [
        queue_message(
            session,
            dedupe_key=f"wf:{i}",
            contact_id=contact,
            template_version_id=marketing.version.id,
            workflow_name="Onboarding",
        )
        for i in range(2)
    ]
    third = queue_message(
        session,
        dedupe_key="campaign:9:ana",
        contact_id=contact,
        template_version_id=marketing.version.id,
        campaign_id=9,
    )
    bill = queue_message(
        session, dedupe_key="receipt:1", contact_id=contact, template_version_id=receipt.version.id
    )
    session.commit()
    send_due(sessions, sending)
    transport.close()
    assert [_status(sessions, i).status for i in first] == [MessageStatus.SENT] * 2
    assert _status(sessions, bill).status is MessageStatus.SENT  # transactional: exempt
    row = _status(sessions, third)
    assert row.reason == "frequency_cap"
    if action == "defer":
        assert row.status is MessageStatus.DEFERRED
        assert row.next_attempt_at > clock.now() + timedelta(days=6)
    else:
        assert row.status is MessageStatus.SUPPRESSED
    assert len(smtp_server.received) == 3


@pytest.mark.parametrize("limit", [None, 1], ids=["one batch", "claimed one by one"])
def test_under_the_frequency_cap_the_higher_priority_email_takes_the_slot(
    session, sessions, smtp_server, settings, limit
):
    """The older, low-priority email is due first; the cap leaves room for one more this
    week, and the priority-9 workflow email gets it even when the older one is claimed in
    an earlier batch on its own."""
    capped = settings.with_overrides(frequency_cap=1, frequency_cap_action="defer")
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    sending = Sending(capped, transport, TokenSigner.from_settings(capped))
    marketing = make_template(session)
    contact = make_contact(session, "ana@example.com")
    newsletter = queue_message(
        session,
        dedupe_key="campaign:1:ana",
        contact_id=contact,
        template_version_id=marketing.version.id,
        campaign_id=1,
        priority=2,
    )
    renewal = queue_message(
        session,
        dedupe_key="workflow:7:send",
        contact_id=contact,
        template_version_id=marketing.version.id,
        workflow_id=3,
        priority=9,
    )
    session.commit()
    if limit is None:
        send_due(sessions, sending)
    else:
        while send_batch(sessions, sending, limit=limit)[0]:
            pass
    transport.close()
    assert _status(sessions, renewal).status is MessageStatus.SENT
    low = _status(sessions, newsletter)
    assert (low.status, low.reason) == (MessageStatus.DEFERRED, "frequency_cap")
    assert low.next_attempt_at > clock.now() + timedelta(days=6)
    assert len(smtp_server.received) == 1


def test_starttls_and_login_are_used_when_configured(session, sessions, settings, tmp_path):
    import ssl
    import subprocess

    from emailkit import login_checker, start_smtp

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = start_smtp(
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=login_checker("relay-user", "s3cret"),
    )
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        config = SmtpSettings(
            server.host, server.port, tls="starttls", username="relay-user", password="s3cret"
        )
        transport = SmtpTransport(config, ssl_context=client_tls)
        saved = make_template(session)
        message_id = _queue(session, saved.version.id, make_contact(session, "ana@example.com"))
        session.commit()
        send_due(sessions, Sending(settings, transport, TokenSigner.from_settings(settings)))
        assert _status(sessions, message_id).status is MessageStatus.SENT
        assert len(server.received) == 1
        wrong = SmtpTransport(
            SmtpSettings(
                server.host, server.port, tls="starttls", username="relay-user", password="wrong"
            ),
            ssl_context=client_tls,
        )
        again = _queue(session, saved.version.id, make_contact(session, "bo@example.com"))
        session.commit()
        send_due(sessions, Sending(settings, wrong, TokenSigner.from_settings(settings)))
        row = _status(sessions, again)
        assert row.status is MessageStatus.DEFERRED and "login refused" in row.error
        transport.close()
    finally:
        server.controller.stop()


def test_gdpr_erasure_removes_the_contacts_messages(session, sessions, sending, smtp_server):
    from automation.contacts.gdpr import erase_contact, export_contact

    saved = make_template(session)
    contact = make_contact(session, "ana@example.com")
    message_id = _queue(session, saved.version.id, contact)
    session.commit()
    send_due(sessions, sending)
    with sessions() as s:
        exported = export_contact(s, contact)
        assert [m["id"] for m in exported["messages"]] == [message_id]
        erase_contact(s, contact)
        s.commit()
    with sessions() as s:
        assert s.get(Message, message_id) is None


def test_pipelined_transactions_classify_every_outcome(session, sessions, sending, smtp_server):
    smtp_server.behaviour.pipelining = True
    smtp_server.behaviour.rcpt.update({"gone": "550 5.1.1 No such user", "busy": "451 later"})
    smtp_server.behaviour.data["spammy"] = "554 5.7.1 Rejected"
    smtp_server.behaviour.drop_after_data.add("maybe")
    saved = make_template(session)
    names = ["ok", "gone", "busy", "spammy", "maybe", "after"]
    ids = {
        n: _queue(session, saved.version.id, make_contact(session, f"{n}@example.com"))
        for n in names
    }
    session.commit()
    send_due(sessions, sending)
    got = {n: (_status(sessions, i).status, _status(sessions, i).reason) for n, i in ids.items()}
    assert got == {
        "ok": (MessageStatus.SENT, None),
        "gone": (MessageStatus.FAILED, "hard_bounce"),
        "busy": (MessageStatus.DEFERRED, "temporary_failure"),
        "spammy": (MessageStatus.FAILED, "rejected"),
        "maybe": (MessageStatus.UNKNOWN, "outcome_unknown"),
        # Its MAIL/RCPT/DATA rode with maybe's data on the connection that dropped:
        # nothing of it was sent, so it waits for a retry.
        "after": (MessageStatus.DEFERRED, "temporary_failure"),
    }
    clock.set_source(lambda: clock.datetime.now(clock.UTC) + timedelta(hours=1))
    try:
        send_due(sessions, sending)
    finally:
        clock.set_source(None)
    assert _status(sessions, ids["after"]).status is MessageStatus.SENT
    assert _status(sessions, ids["maybe"]).status is MessageStatus.UNKNOWN
    received = sorted(r.recipients[0].split("@")[0] for r in smtp_server.received)
    assert received == ["after", "maybe", "ok"]  # busy is still refused (451)


def test_implicit_tls_is_used_when_configured(session, sessions, settings, tmp_path):
    import ssl
    import subprocess

    from emailkit import start_smtp

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = start_smtp(ssl_context=server_tls)
    try:
        transport = SmtpTransport(
            SmtpSettings(server.host, server.port, tls="ssl"),
            ssl_context=ssl.create_default_context(cafile=str(cert)),
        )
        saved = make_template(session)
        message_id = _queue(session, saved.version.id, make_contact(session, "ana@example.com"))
        session.commit()
        send_due(sessions, Sending(settings, transport, TokenSigner.from_settings(settings)))
        transport.close()
        assert _status(sessions, message_id).status is MessageStatus.SENT
        assert len(server.received) == 1
    finally:
        server.controller.stop()


def test_two_senders_at_once_send_each_message_once(session, settings, smtp_server):
    """Concurrent senders (two workers on the send queue): SKIP LOCKED on PostgreSQL,
    the write lock taken first on SQLite."""
    import threading

    saved = make_template(session)
    ids = [
        _queue(session, saved.version.id, make_contact(session, f"p{i}@example.com"))
        for i in range(120)
    ]
    session.commit()
    small = settings.with_overrides(send_batch_size=10)
    errors = []

    def run():
        engine = make_engine(settings.database_url)
        transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
        try:
            send_due(
                make_session_factory(engine),
                Sending(small, transport, TokenSigner.from_settings(small)),
            )
        except Exception as exc:  # the assertion below reports it
            errors.append(exc)
        finally:
            transport.close()
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    recipients = [r.recipients[0] for r in smtp_server.received]
    assert len(recipients) == len(set(recipients)) == 120
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as s:
        statuses = {s.get(Message, i).status for i in ids}
    engine.dispose()
    assert statuses == {MessageStatus.SENT}


def test_each_outcome_is_recorded_while_the_rest_of_the_batch_is_still_being_sent(
    session, sessions, sending, smtp_server
):
    """The relay stalls on the sixth message of a batch: the five before it are already
    `sent` in the database (with their Message-ID) while the sender waits."""
    import threading

    saved = make_template(session)
    ids = [
        _queue(session, saved.version.id, make_contact(session, f"{name}@example.com"))
        for name in ["a1", "a2", "a3", "a4", "a5", "stall", "b1", "b2"]
    ]
    session.commit()
    release = threading.Event()
    smtp_server.behaviour.stall_data["stall"] = release
    sender = threading.Thread(target=send_due, args=(sessions, sending))
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            with sessions() as s:
                statuses = [s.get(Message, i).status for i in ids]
            if statuses[:5] == [MessageStatus.SENT] * 5 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert statuses[:5] == [MessageStatus.SENT] * 5
        assert statuses[5:] == [MessageStatus.SENDING] * 3  # still in the sender's hands
    finally:
        release.set()
        sender.join(30)
    received = {
        r.recipients[0].split("@")[0]: r.message["Message-ID"] for r in smtp_server.received
    }
    with sessions() as s:
        rows = [s.get(Message, i) for i in ids]
        assert {r.status for r in rows} == {MessageStatus.SENT}
        emails = {r.id: s.get(Contact, r.contact_id).email.split("@")[0] for r in rows}
    assert {emails[r.id]: r.internet_message_id for r in rows} == received


def test_of_a_dead_senders_batch_only_the_messages_that_may_have_gone_out_become_unknown(
    session, sessions, settings
):
    """A sender takes a message only while fewer than IN_FLIGHT lack a recorded outcome:
    when its lease runs out, the first IN_FLIGHT rows it still holds may have reached the
    relay (unknown); the rest were never handed over and go back to the queue."""
    from automation.email.outbox import claim_batch
    from automation.email.outbox.claiming import IN_FLIGHT
    from automation.email.render import VersionCache

    saved = make_template(session)
    ids = [
        _queue(session, saved.version.id, make_contact(session, f"c{i}@example.com"))
        for i in range(IN_FLIGHT + 10)
    ]
    session.commit()
    with sessions() as s:
        batch = claim_batch(s, settings=settings, cache=VersionCache())
        s.commit()
    assert [m.id for m in batch.messages] == ids
    # The sender dies before recording anything. Later, the lease runs out:
    with sessions() as s:
        assert expire_leases(s, now=batch.lease_expires_at + timedelta(seconds=1)) == IN_FLIGHT
        s.commit()
    statuses = [_status(sessions, i).status for i in ids]
    assert statuses == [MessageStatus.UNKNOWN] * IN_FLIGHT + [MessageStatus.QUEUED] * 10
