"""Shared pieces for the email tests: a real SMTP server on loopback (aiosmtpd, in the
test process) whose answers depend on the recipient, and template / contact factories."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select, update

from automation import clock
from automation.contacts.models import ContactStatus
from automation.contacts.schema import ContactIn
from automation.contacts.service import create_contact
from automation.db import make_engine, make_session_factory
from automation.email.catcher import free_port
from automation.email.identities import create_sender_identity
from automation.email.models import Message, MessageStatus
from automation.email.schema import SenderIdentityIn, TemplateIn
from automation.email.sender import Sending
from automation.email.templates import create_template
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.signing import TokenSigner

MJML = """<mjml>
  <mj-head><mj-title>{{ contact.first_name | default("Hello") }}</mj-title></mj-head>
  <mj-body background-color="#f4f4f4">
    <mj-section background-color="#ffffff">
      <mj-column>
        <mj-text font-size="18px">Hello {{ contact.first_name | default("there") }},</mj-text>
        <mj-text>Your plan: {{ contact.attributes.plan | default("free") }} — ünïcödé ✓</mj-text>
        <mj-button href="https://shop.example/start?utm=1&amp;x=2">Get started</mj-button>
        {% if "vip" in contact.tags %}
        <mj-text>Thank you for being a VIP.</mj-text>
        {% endif %}
      </mj-column>
    </mj-section>
    {% for tag in contact.tags %}
    <mj-section><mj-column><mj-text>Tag: {{ tag }}</mj-text></mj-column></mj-section>
    {% endfor %}
    <mj-section>
      <mj-column>
        <mj-text font-size="11px">
          <a href="https://shop.example/about">About us</a> ·
          <a href="{{ view_in_browser_url }}">View in browser</a> ·
          <a href="{{ preferences_url }}">Preferences</a> ·
          <a href="{{ unsubscribe_url }}">Unsubscribe</a>
        </mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Behaviour:
    """How the server answers, by recipient local part."""

    rcpt: dict[str, str] = field(default_factory=dict)  # local part → "550 …" reply
    data: dict[str, str] = field(default_factory=dict)  # local part → reply to the data
    # local parts for which the connection drops: at RCPT, or after the whole message
    drop_at_rcpt: set[str] = field(default_factory=set)
    drop_after_data: set[str] = field(default_factory=set)
    pipelining: bool = False  # advertise RFC 2920 PIPELINING
    # local part → an event the answer to its data waits for (a relay that stalls)
    stall_data: dict[str, threading.Event] = field(default_factory=dict)


class RecordingHandler:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.behaviour.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.split("@")[0] in self.behaviour.drop_at_rcpt:
            server.transport.close()
            return "421 closing"
        reply = self.behaviour.rcpt.get(address.split("@")[0])
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        local = envelope.rcpt_tos[0].split("@")[0]
        stall = self.behaviour.stall_data.get(local)
        if stall is not None:
            await asyncio.get_running_loop().run_in_executor(None, stall.wait, 60)
        if local in self.behaviour.drop_after_data:
            with self.lock:  # it did arrive; the client just never hears so
                self.received.append(
                    Received(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        bytes(envelope.original_content),
                    )
                )
            server.transport.close()
            return "250 too late"
        reply = self.behaviour.data.get(local)
        if reply:
            return reply
        with self.lock:
            self.received.append(
                Received(
                    envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)
                )
            )
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler
    controller: Controller

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def behaviour(self) -> Behaviour:
        return self.handler.behaviour


def start_smtp(**kwargs: Any) -> SmtpServer:
    handler = RecordingHandler(Behaviour())
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return SmtpServer("127.0.0.1", port, handler, controller)


@pytest.fixture
def smtp_server():
    server = start_smtp()
    yield server
    server.controller.stop()


@pytest.fixture
def sessions(settings):
    """A session factory of its own on the test database (senders commit per batch)."""
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def sending(settings, smtp_server):
    """The email channel, sending to the loopback SMTP server."""
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    yield Sending(settings, transport, TokenSigner.from_settings(settings))
    transport.close()


def login_checker(username: str, password: str) -> Any:
    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == username
            and (data.password.decode() == password)
        )
        return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535 itself

    return authenticate


def make_identity(session: Any, **overrides: Any) -> int:
    data = {
        "name": "Outdoor",
        "from_name": "Nurture Öutdoor",
        "from_email": "hello@shop.example",
        "reply_to": "help@shop.example",
        "max_per_minute": 100_000,
    }
    data.update(overrides)
    return create_sender_identity(session, SenderIdentityIn(**data)).id


def ensure_plan_field(session: Any) -> None:
    from sqlalchemy import select

    from automation.contacts.models import CustomField, FieldType
    from automation.contacts.schema import CustomFieldIn
    from automation.contacts.service import declare_field

    if session.scalar(select(CustomField.id).where(CustomField.name == "plan")) is None:
        declare_field(session, CustomFieldIn(name="plan", label="Plan", type=FieldType.TEXT))


def make_template(session: Any, **overrides: Any) -> Any:
    ensure_plan_field(session)
    data: dict[str, Any] = {
        "name": "Welcome",
        "subject": "Welcome, {{ contact.first_name | default('friend') }} — ça va?",
        "preheader": "Your account is ready",
        "mjml": MJML,
    }
    data.update(overrides)
    return create_template(session, TemplateIn(**data))


def make_contact(session: Any, email: str, **overrides: Any) -> int:
    ensure_plan_field(session)
    data: dict[str, Any] = {"email": email, "first_name": "Zoë", "last_name": "Dubois"}
    data.update(overrides)
    status = data.pop("status", ContactStatus.SUBSCRIBED)
    return create_contact(session, ContactIn(status=status, **data), source="test").id


def mark_sent(session: Any, message_id: int, ago: timedelta) -> int:
    """Mark a queued message sent ``ago`` before now (as the sender would); its token
    nonce, for building its tracking tokens."""
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status=MessageStatus.SENT, sent_at=clock.now() - ago)
    )
    return int(session.scalar(select(Message.token_nonce).where(Message.id == message_id)))
