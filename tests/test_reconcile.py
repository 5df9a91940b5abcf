# ruff: noqa: E501  (relay log lines are as long as the relays write them)
"""`nurture messages reconcile`: `unknown` messages settled from a relay's log by the
Message-ID stored on them at send (Postfix and Exim log lines as those relays write them)."""

from __future__ import annotations

import json

import emailkit
import pytest
from click.testing import CliRunner
from emailkit import make_contact, make_identity, make_template
from sqlalchemy import func, select

from automation.cli import main
from automation.contacts.models import Contact, ContactStatus, Event
from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message, send_due

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending
PEOPLE = ("delivered", "bounced", "deferred", "absent")


def _env(settings):
    return {
        "NURTURE_DATABASE_URL": settings.database_url,
        "NURTURE_VAR_DIR": str(settings.var_dir),
        "NURTURE_SECRET_KEY": settings.secret_key,
    }


@pytest.fixture
def unknown(session, sessions, sending, smtp_server):
    """Four messages whose connection dropped after the data (so `unknown`), as the relay
    received them: local part → (message id, Message-ID header)."""
    make_identity(session)
    version = make_template(session).version.id
    for name in PEOPLE:
        queue_message(
            session,
            dedupe_key=name,
            contact_id=make_contact(session, f"{name}@example.com"),
            template_version_id=version,
        )
    smtp_server.behaviour.drop_after_data.update(PEOPLE)
    session.commit()
    send_due(sessions, sending)
    with sessions() as s:
        rows = s.execute(
            select(Contact.email, Message.id, Message.status, Message.internet_message_id).join(
                Contact, Contact.id == Message.contact_id
            )
        ).all()
    assert {r.status for r in rows} == {MessageStatus.UNKNOWN}
    headers = {r.recipients[0].split("@")[0]: r.message["Message-ID"] for r in smtp_server.received}
    stored = {r.email.split("@")[0]: r.internet_message_id for r in rows}
    assert stored == headers  # the row has what went out
    return {r.email.split("@")[0]: (r.id, r.internet_message_id) for r in rows}


def _postfix(ids):
    d, b, f = ids["delivered"][1], ids["bounced"][1], ids["deferred"][1]
    return f"""\
Dec  8 03:00:01 relay postfix/smtpd[4101]: connect from app1.internal[10.0.0.5]
Dec  8 03:00:01 relay postfix/smtpd[4101]: 4QxYz12Abc: client=app1.internal[10.0.0.5]
Dec  8 03:00:01 relay postfix/cleanup[4102]: 4QxYz12Abc: message-id={d}
Dec  8 03:00:01 relay postfix/qmgr[812]: 4QxYz12Abc: from=<hello@shop.example>, size=5310, nrcpt=1 (queue active)
Dec  8 03:00:01 relay postfix/smtpd[4101]: 4QxYz13Def: client=app1.internal[10.0.0.5]
Dec  8 03:00:01 relay postfix/cleanup[4102]: 4QxYz13Def: message-id={b}
Dec  8 03:00:01 relay postfix/qmgr[812]: 4QxYz13Def: from=<hello@shop.example>, size=5302, nrcpt=1 (queue active)
Dec  8 03:00:01 relay postfix/cleanup[4102]: 4QxYz14Ghi: message-id={f}
Dec  8 03:00:02 relay postfix/smtp[4103]: 4QxYz12Abc: to=<delivered@example.com>, relay=mx.example.com[203.0.113.7]:25, delay=1.1, delays=0.02/0.01/0.5/0.57, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9F2C81A0)
Dec  8 03:00:02 relay postfix/qmgr[812]: 4QxYz12Abc: removed
Dec  8 03:00:02 relay postfix/smtp[4104]: 4QxYz13Def: to=<bounced@example.com>, relay=mx.example.com[203.0.113.7]:25, delay=0.9, delays=0.02/0/0.4/0.48, dsn=5.1.1, status=bounced (host mx.example.com[203.0.113.7] said: 550 5.1.1 <bounced@example.com>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command))
Dec  8 03:00:02 relay postfix/bounce[4105]: 4QxYz13Def: sender non-delivery notification: 4QxYz15Jkl
Dec  8 03:00:03 relay postfix/smtp[4106]: 4QxYz14Ghi: to=<deferred@example.com>, relay=none, delay=2, delays=0.01/0/2/0, dsn=4.4.1, status=deferred (connect to mx.example.com[203.0.113.7]:25: Connection refused)
Dec  8 03:00:03 relay postfix/smtpd[4107]: NOQUEUE: reject: RCPT from unknown[198.51.100.9]: 554 5.7.1 <spam@shop.example>: Relay access denied; from=<x@y.example> to=<spam@shop.example> proto=ESMTP helo=<y>
garbage line without any format {"{" * 5000}
"""


def _exim(ids):
    d, b, f = (ids[n][1].strip("<>") for n in ("delivered", "bounced", "deferred"))
    return f"""\
2026-12-08 03:00:01 1vSg4x-000Ab1-2C <= hello@shop.example H=app1.internal [10.0.0.5] P=esmtp S=5310 id={d}
2026-12-08 03:00:01 1vSg4x-000Ab2-3D <= hello@shop.example H=app1.internal [10.0.0.5] P=esmtp S=5302 id={b}
2026-12-08 03:00:01 1vSg4x-000Ab3-4E <= hello@shop.example H=app1.internal [10.0.0.5] P=esmtp S=5306 id={f}
2026-12-08 03:00:02 1vSg4x-000Ab1-2C => delivered@example.com R=dnslookup T=remote_smtp H=mx.example.com [203.0.113.7] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C="250 2.0.0 Ok: queued as 9F2C81A0"
2026-12-08 03:00:02 1vSg4x-000Ab1-2C Completed
2026-12-08 03:00:02 1vSg4x-000Ab2-3D ** bounced@example.com R=dnslookup T=remote_smtp H=mx.example.com [203.0.113.7]: SMTP error from remote mail server after RCPT TO:<bounced@example.com>: 550 5.1.1 <bounced@example.com>: Recipient address rejected: User unknown
2026-12-08 03:00:02 1vSg4y-000Ab9-5F <= <> R=1vSg4x-000Ab2-3D U=Debian-exim P=local S=7011
2026-12-08 03:00:02 1vSg4x-000Ab2-3D Completed
2026-12-08 03:00:03 1vSg4x-000Ab3-4E == deferred@example.com R=dnslookup T=remote_smtp defer (111): Connection refused
2026-12-08 03:00:03 H=(attacker) [198.51.100.9] F=<x@y.example> rejected RCPT <spam@shop.example>: relay not permitted
"""


@pytest.mark.parametrize("log_format", ["postfix", "exim"])
def test_reconcile_settles_unknown_messages_from_the_relay_log(
    tmp_path, settings, sessions, unknown, log_format
):
    log = tmp_path / "mail.log"
    log.write_text((_postfix if log_format == "postfix" else _exim)(unknown))
    result = CliRunner().invoke(
        main,
        ["messages", "reconcile", "--log", str(log), "--format", log_format],
        env=_env(settings),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "unknown": 4,
        "sent": 2,  # delivered, and deferred (the relay has it and keeps trying)
        "failed": 0,
        "bounced": 1,
        "not_in_log": 1,
    }
    with sessions() as s:
        status = {
            name: s.get(Message, message_id) for name, (message_id, _header) in unknown.items()
        }
        assert status["delivered"].status is MessageStatus.SENT
        assert status["deferred"].status is MessageStatus.SENT
        assert status["delivered"].sent_at is not None
        assert status["bounced"].status is MessageStatus.FAILED
        assert status["bounced"].reason == "hard_bounce"
        assert "550 5.1.1" in status["bounced"].error
        assert status["absent"].status is MessageStatus.UNKNOWN  # for an operator to decide
        contacts = {c.email.split("@")[0]: c for c in s.scalars(select(Contact))}
        assert contacts["bounced"].status is ContactStatus.BOUNCED
        assert contacts["delivered"].emails_sent == 1
        sent_events = s.scalars(select(Event.contact_id).where(Event.name == "email.sent"))
        assert sorted(sent_events) == sorted([contacts["delivered"].id, contacts["deferred"].id])

    again = CliRunner().invoke(
        main,
        ["messages", "reconcile", "--log", str(log), "--format", log_format],
        env=_env(settings),
    )
    assert json.loads(again.output)["unknown"] == 1  # only the absent one is left
    with sessions() as s:
        assert (
            s.scalar(select(func.count()).select_from(Event).where(Event.name == "email.sent")) == 2
        )


def test_reconcile_refuses_a_missing_log_and_an_unknown_format(tmp_path, settings):
    missing = CliRunner().invoke(
        main, ["messages", "reconcile", "--log", str(tmp_path / "nope.log")], env=_env(settings)
    )
    assert missing.exit_code == 2 and "nope.log" in missing.output
    log = tmp_path / "mail.log"
    log.write_text("")
    wrong = CliRunner().invoke(
        main,
        ["messages", "reconcile", "--log", str(log), "--format", "sendmail"],
        env=_env(settings),
    )
    assert wrong.exit_code == 2 and "sendmail" in wrong.output


def test_the_message_id_is_shown_by_the_api_the_outbox_and_the_message_page(
    api, client, user_factory, unknown
):
    from conftest import login

    message_id, header = unknown["absent"]
    answer = api.get(f"/messages/{message_id}").get_json()
    assert answer["internet_message_id"] == header and answer["status"] == "unknown"
    listed = api.get("/messages?status=unknown").get_json()["items"]
    assert {m["internet_message_id"] for m in listed} == {h for _, h in unknown.values()}

    user_factory("viewer@example.com", "a long enough password", "viewer")
    login(client, "viewer@example.com", "a long enough password")
    outbox = client.get("/outbox?status=unknown").get_data(as_text=True)
    for _, shown in unknown.values():
        assert shown.replace("<", "&lt;").replace(">", "&gt;") in outbox
    contact = answer["contact_id"]
    page = client.get(f"/contacts/{contact}/emails/{message_id}").get_data(as_text=True)
    assert (
        f'<code id="message-id">{header.replace("<", "&lt;").replace(">", "&gt;")}</code>' in page
    )
