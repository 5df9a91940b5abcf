"""What operators look at and do by hand: one message, a filtered list, a resend."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation import clock
from automation.email.models import Message, MessageStatus, TemplateVersion
from automation.email.outbox.states import check_transition, move
from automation.errors import Conflict, NotFound


def resend_message(session: Session, message_id: int) -> Message:
    """An operator decided an `unknown` message should go (again): back to the queue."""
    message = get_message(session, message_id)
    check_transition(message.status, MessageStatus.QUEUED)
    moved = move(
        session,
        [message.id],
        MessageStatus.QUEUED,
        from_=[message.status],
        reason="manual_resend",
        error=None,
        next_attempt_at=clock.now(),
        lease_owner=None,
        lease_expires_at=None,
    )
    if not moved:
        raise Conflict("the message changed meanwhile; reload it")
    session.refresh(message)
    return message


def get_message(session: Session, message_id: int) -> Message:
    message = session.get(Message, message_id)
    if message is None:
        raise NotFound(f"message {message_id} not found")
    return message


def search_messages(
    session: Session,
    *,
    status: MessageStatus | None = None,
    contact_id: int | None = None,
    template_id: int | None = None,
    campaign_id: int | None = None,
    enrollment_id: int | None = None,
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[Message], int]:
    query = select(Message)
    if status is not None:
        query = query.where(Message.status == status)
    if contact_id is not None:
        query = query.where(Message.contact_id == contact_id)
    if campaign_id is not None:
        query = query.where(Message.campaign_id == campaign_id)
    if enrollment_id is not None:
        query = query.where(Message.enrollment_id == enrollment_id)
    if template_id is not None:
        query = query.where(
            Message.template_version_id.in_(
                select(TemplateVersion.id).where(TemplateVersion.template_id == template_id)
            )
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.order_by(Message.id.desc()).limit(per_page).offset((page - 1) * per_page)
    )
    return list(items), total
