"""Sender identities: the From name and address (and Reply-To) an email goes out with, and
the rate its sends are limited to."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.events import validation_errors
from automation.contacts.schema import Email
from automation.email.models import SenderIdentity
from automation.errors import Conflict, FieldError, InvalidInput, NotFound


class SenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(..., min_length=1, max_length=100, description="Shown to marketers only")
    from_name: str = Field(..., min_length=1, max_length=100)
    from_email: Email
    reply_to: Email | None = None
    max_per_minute: int = Field(600, ge=1, le=1_000_000)


def parse_sender(data: dict[str, object]) -> SenderIn:
    """Validated input, or InvalidInput naming each bad field."""
    try:
        return SenderIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_errors(exc)) from None


def list_senders(session: Session) -> list[SenderIdentity]:
    return list(session.scalars(select(SenderIdentity).order_by(SenderIdentity.name)))


def get_sender(session: Session, sender_id: int) -> SenderIdentity:
    sender = session.get(SenderIdentity, sender_id)
    if sender is None:
        raise NotFound(f"sender identity {sender_id} not found")
    return sender


def _ensure_unique_name(session: Session, name: str, exclude_id: int | None = None) -> None:
    query = select(SenderIdentity.id).where(SenderIdentity.name == name)
    if exclude_id is not None:
        query = query.where(SenderIdentity.id != exclude_id)
    if session.scalar(query) is not None:
        raise Conflict(
            f"a sender identity named {name!r} exists",
            [FieldError("name", "another sender identity has this name")],
        )


def create_sender(session: Session, data: SenderIn) -> SenderIdentity:
    _ensure_unique_name(session, data.name)
    sender = SenderIdentity(**data.model_dump(), created_at=clock.now())
    session.add(sender)
    session.flush()
    return sender


def update_sender(session: Session, sender_id: int, data: SenderIn) -> SenderIdentity:
    sender = get_sender(session, sender_id)
    _ensure_unique_name(session, data.name, exclude_id=sender.id)
    for name, value in data.model_dump().items():
        setattr(sender, name, value)
    session.flush()
    return sender


def delete_sender(session: Session, sender_id: int) -> None:
    """Delete an identity; refused while anything (a template, a campaign) still uses it.
    After a refusal the session must be rolled back (the failed flush left it unusable)."""
    sender = get_sender(session, sender_id)
    try:
        session.delete(sender)
        session.flush()
    except IntegrityError:
        raise Conflict(f"sender identity {sender.name!r} is in use and cannot be deleted") from None


def format_address(sender: SenderIdentity) -> str:
    """The From header value, e.g. ``Nurture Outdoor <hello@example.com>``."""
    from email.headerregistry import Address

    return str(Address(display_name=sender.from_name, addr_spec=sender.from_email))
