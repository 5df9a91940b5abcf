"""Sender identities: who an email is from, and how fast it may go out."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.email.models import SenderIdentity
from automation.email.schema import SenderIdentityIn
from automation.errors import Conflict, NotFound


@dataclass(frozen=True)
class Sender:
    from_name: str
    from_email: str
    reply_to: str | None

    @property
    def domain(self) -> str:
        return self.from_email.rsplit("@", 1)[-1]


def default_sender(value: str) -> Sender:
    """NURTURE_DEFAULT_SENDER, "Name <address>", used when a template names no identity."""
    name, address = parseaddr(value)
    return Sender(name or address, address or "hello@example.com", None)


def sender_of(identity: SenderIdentity | None, fallback: str) -> Sender:
    if identity is None:
        return default_sender(fallback)
    return Sender(identity.from_name, identity.from_email, identity.reply_to)


def create_sender_identity(session: Session, data: SenderIdentityIn) -> SenderIdentity:
    if session.scalar(select(SenderIdentity.id).where(SenderIdentity.name == data.name)):
        raise Conflict(f"a sender identity named {data.name!r} already exists")
    identity = SenderIdentity(
        name=data.name,
        from_name=data.from_name,
        from_email=data.from_email,
        reply_to=data.reply_to,
        max_per_minute=data.max_per_minute,
        created_at=clock.now(),
    )
    session.add(identity)
    session.flush()
    return identity


def list_sender_identities(session: Session) -> list[SenderIdentity]:
    return list(session.scalars(select(SenderIdentity).order_by(SenderIdentity.id)))


def get_sender_identity(session: Session, identity_id: int) -> SenderIdentity:
    identity = session.get(SenderIdentity, identity_id)
    if identity is None:
        raise NotFound(f"sender identity {identity_id} not found")
    return identity
