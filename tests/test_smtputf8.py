"""Addresses with a non-ASCII local part (민준@example.kr, grace.lópez@example.com) in
contacts and in a sender identity's From and Reply-To: sent with SMTPUTF8 when the relay
offers it, held with a clear reason when it does not (never failed as `invalid_address`,
never a 500), and said so when they are saved. IDN domains go out as IDNA."""

from __future__ import annotations

from email import parser as email_parser
from email import policy

import emailkit
import pytest
from conftest import login, make_settings
from emailkit import make_contact, make_template, start_smtp
from sqlalchemy import select

from automation.contacts.models import Contact
from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message, send_due

sessions, sending = emailkit.sessions, emailkit.sending
KOREAN, SPANISH, IDN = "민준@example.kr", "grace.lópez@example.com", "ana@bücher.example"


@pytest.fixture(params=[True, False], ids=["relay-smtputf8", "relay-ascii"])
def offers_smtputf8(request):
    return request.param


@pytest.fixture(params=[False, True], ids=["serial", "pipelined"])
def smtp_server(request, offers_smtputf8):
    server = start_smtp(enable_SMTPUTF8=offers_smtputf8)
    server.behaviour.pipelining = request.param
    yield server
    server.controller.stop()


@pytest.fixture
def settings(tmp_path, db_url, smtp_server):
    return make_settings(
        tmp_path,
        db_url,
        NURTURE_SMTP_HOST=smtp_server.host,
        NURTURE_SMTP_PORT=str(smtp_server.port),
        NURTURE_SMTP_TLS="none",
    )


def _parsed(received):
    """A message with UTF-8 headers (RFC 6532) as a mail client reads it."""
    return email_parser.Parser(policy=policy.SMTPUTF8).parsestr(received.data.decode("utf-8"))


def _send(session, sessions, sending, version_id, emails):
    ids = {}
    for email in emails:
        contact = session.scalar(select(Contact.id).where(Contact.email == email))
        ids[email] = queue_message(
            session,
            dedupe_key=email,
            contact_id=contact or make_contact(session, email),
            template_version_id=version_id,
        )
    session.commit()
    send_due(sessions, sending)
    with sessions() as s:
        return {email: s.get(Message, i) for email, i in ids.items()}


def test_contacts_with_non_ascii_addresses_are_sent_with_smtputf8_or_held(
    api, session, sessions, sending, smtp_server, offers_smtputf8
):
    for email in (KOREAN, SPANISH):
        created = api.post("/contacts", {"email": email, "first_name": "Min"})
        assert created.status_code == 201, created.get_json()
        assert created.get_json()["email"] == email
        assert "SMTPUTF8" in created.get_json()["warnings"][0]
        assert email in created.get_json()["warnings"][0]
    plain = api.post("/contacts", {"email": "zoe@example.com"}).get_json()
    assert plain["warnings"] == []
    version = make_template(session, kind="transactional").version.id
    emails = ["zoe@example.com", KOREAN, IDN, SPANISH, "ben@example.com"]
    rows = _send(session, sessions, sending, version, emails)

    received = {r.recipients[0]: r for r in smtp_server.received}
    # IDN domains need no SMTPUTF8: the domain travels as IDNA.
    assert rows[IDN].status is MessageStatus.SENT
    assert "ana@xn--bcher-kva.example" in received
    for email in ("zoe@example.com", "ben@example.com"):
        assert rows[email].status is MessageStatus.SENT
    if offers_smtputf8:
        for email in (KOREAN, SPANISH):
            assert rows[email].status is MessageStatus.SENT, rows[email].error
            assert rows[email].internet_message_id
            message = _parsed(received[email])
            assert message["To"].addresses[0].addr_spec == email
            assert message.get_body(("plain",)).get_content()
        assert len(smtp_server.received) == 5
    else:
        for email in (KOREAN, SPANISH):
            row = rows[email]
            assert row.status is MessageStatus.DEFERRED  # held, not failed
            assert row.reason == "needs_smtputf8"
            assert email in row.error and "SMTPUTF8" in row.error
            assert email not in received
        assert len(smtp_server.received) == 3


def test_a_sender_identity_with_a_non_ascii_reply_to_saves_with_a_warning_and_never_500s(
    api, session, sessions, sending, smtp_server, offers_smtputf8
):
    saved = api.post(
        "/sender-identities",
        {
            "name": "Support KR",
            "from_name": "지원팀",
            "from_email": "hello@shop.example",
            "reply_to": "지원@example.kr",
            "max_per_minute": 1000,
        },
    )
    assert saved.status_code == 201, saved.get_json()
    assert "지원@example.kr" in saved.get_json()["warnings"][0]
    identity = saved.get_json()["id"]
    template = make_template(session, sender_identity_id=identity, kind="transactional")
    session.commit()

    answer = api.post(f"/templates/{template.template.id}/test-send", {"to": "qa@example.com"})
    assert answer.status_code != 500
    if offers_smtputf8:
        assert answer.status_code == 200, answer.get_json()
        [test_mail] = smtp_server.received
        assert _parsed(test_mail)["Reply-To"] == "지원@example.kr"
    else:
        assert answer.status_code == 409, answer.get_json()
        assert "지원@example.kr" in str(answer.get_json()) and "SMTPUTF8" in str(answer.get_json())
        assert smtp_server.received == []
    smtp_server.received.clear()

    rows = _send(session, sessions, sending, template.version.id, ["zoe@example.com"])
    row = rows["zoe@example.com"]
    if offers_smtputf8:
        assert row.status is MessageStatus.SENT
        [mail] = smtp_server.received
        assert _parsed(mail)["Reply-To"] == "지원@example.kr"
    else:
        assert (row.status, row.reason) == (MessageStatus.DEFERRED, "needs_smtputf8")
        assert "지원@example.kr" in row.error and "SMTPUTF8" in row.error
        assert smtp_server.received == []


def test_the_contact_page_and_the_identity_form_say_an_address_needs_smtputf8(
    api, client, user_factory, offers_smtputf8
):
    if not offers_smtputf8:
        pytest.skip("the pages do not depend on the relay")
    contact = api.post("/contacts", {"email": KOREAN}).get_json()
    user_factory("admin@example.com", "a long enough password", "admin")
    login(client, "admin@example.com", "a long enough password")
    page = client.get(f"/contacts/{contact['id']}").get_data(as_text=True)
    assert 'id="smtputf8-warning"' in page and "SMTPUTF8" in page
    from test_ui_forms import Form  # the CSRF-aware form poster

    saved = Form(client).post(
        "/settings/senders/new",
        {
            "name": "KR",
            "from_name": "Min",
            "from_email": "민준@example.kr",
            "reply_to": "",
            "max_per_minute": "600",
        },
    )
    assert saved.status_code == 302
    listing = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert "민준@example.kr has a non-ASCII local part" in listing
