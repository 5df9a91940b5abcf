"""Sender identities: who an email is from, and how fast it may go out."""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from automation import clock
from automation.addresses import ascii_domain, needs_smtputf8
from automation.email.models import Message, SenderIdentity
from automation.email.outbox import OUTSTANDING
from automation.email.schema import SenderIdentityIn
from automation.errors import Conflict, FieldError, InvalidInput, NotFound, field_errors
from automation.references import Target, refuse_if_used


@dataclass(frozen=True)
class Sender:
    from_name: str
    from_email: str
    reply_to: str | None

    @property
    def domain(self) -> str:
        return self.from_email.rsplit("@", 1)[-1]

    @property
    def header_domain(self) -> str:
        """The domain as it may stand in a Message-ID: ASCII (an IDN as punycode)."""
        return ascii_domain(self.domain)


def needs_smtputf8_for(sender: Sender, to: str) -> tuple[str, ...]:
    """The addresses of a message from ``sender`` to ``to`` that can go only with
    SMTPUTF8 (none: it goes without)."""
    return tuple(a for a in (sender.from_email, sender.reply_to, to) if a and needs_smtputf8(a))


def default_sender(value: str) -> Sender:
    """NURTURE_DEFAULT_SENDER, "Name <address>", used when a template names no identity."""
    name, address = parseaddr(value)
    return Sender(name or address, address or "hello@example.com", None)


def sender_of(identity: SenderIdentity | None, fallback: str) -> Sender:
    if identity is None:
        return default_sender(fallback)
    return Sender(identity.from_name, identity.from_email, identity.reply_to)


def parse_sender_identity(data: dict[str, object]) -> SenderIdentityIn:
    """Validated input from a form, or InvalidInput naming each bad field."""
    try:
        return SenderIdentityIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc)) from None


def _ensure_unique_name(session: Session, name: str, exclude_id: int | None = None) -> None:
    query = select(SenderIdentity.id).where(SenderIdentity.name == name)
    if exclude_id is not None:
        query = query.where(SenderIdentity.id != exclude_id)
    if session.scalar(query) is not None:
        raise Conflict(
            f"a sender identity named {name!r} exists",
            [FieldError("name", "another sender identity has this name")],
        )


def create_sender_identity(session: Session, data: SenderIdentityIn) -> SenderIdentity:
    _ensure_unique_name(session, data.name)
    identity = SenderIdentity(**data.model_dump(), created_at=clock.now())
    session.add(identity)
    session.flush()
    return identity


def update_sender_identity(
    session: Session, identity_id: int, data: SenderIdentityIn
) -> SenderIdentity:
    identity = get_sender_identity(session, identity_id)
    _ensure_unique_name(session, data.name, exclude_id=identity.id)
    for name, value in data.model_dump().items():
        setattr(identity, name, value)
    session.flush()
    return identity


def delete_sender_identity(session: Session, identity_id: int) -> None:
    """Delete an identity; refused while anything (a template, a campaign, a live
    workflow's send step) still uses it. After a refusal the session must be rolled back
    (the failed flush left it unusable)."""
    identity = get_sender_identity(session, identity_id)
    waiting = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(Message.sender_identity_id == identity.id, Message.status.in_(OUTSTANDING))
    )
    if waiting:
        # Their sender would become null: they would go out from the default sender.
        raise Conflict(
            f"sender identity {identity.name!r} has {waiting} message(s) waiting to be sent "
            "from it; they must go out (or be cancelled) first"
        )
    refuse_if_used(
        session, Target.SENDER_IDENTITY, identity.id, f"sender identity {identity.name!r}"
    )
    try:
        session.delete(identity)
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"sender identity {identity.name!r} is in use and cannot be deleted"
        ) from None


def list_sender_identities(session: Session) -> list[SenderIdentity]:
    return list(session.scalars(select(SenderIdentity).order_by(SenderIdentity.name)))


def get_sender_identity(session: Session, identity_id: int) -> SenderIdentity:
    identity = session.get(SenderIdentity, identity_id)
    if identity is None:
        raise NotFound(f"sender identity {identity_id} not found")
    return identity


def format_address(identity: SenderIdentity) -> str:
    """The From header value, e.g. ``Nurture Outdoor <hello@example.com>``."""
    return str(Address(display_name=identity.from_name, addr_spec=identity.from_email))
