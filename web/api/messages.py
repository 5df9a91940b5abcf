"""The outbox and send log over the API: list, detail, exact preview, manual resend."""

from __future__ import annotations

from automation.accounts.models import Role
from automation.email import outbox
from automation.email.schema import MessageOut, MessagePage, MessageSearch, PreviewOut
from automation.email.sender import render_message
from automation.email.templates import VIEWPORTS
from web.api.routing import ApiBlueprint
from web.database import db, nurture

bp = ApiBlueprint("messages", __name__)


@bp.operation(
    "/messages",
    "GET",
    summary="Messages, newest first (filter by status, contact, template, campaign)",
    query=MessageSearch,
    response=MessagePage,
)
def list_messages(query: MessageSearch) -> MessagePage:
    items, total = outbox.search_messages(
        db(),
        status=query.status,
        contact_id=query.contact_id,
        template_id=query.template_id,
        campaign_id=query.campaign_id,
        enrollment_id=query.enrollment_id,
        page=query.page,
        per_page=query.per_page,
    )
    return MessagePage(
        items=[MessageOut.model_validate(m) for m in items],
        total=total,
        page=query.page,
        per_page=query.per_page,
    )


@bp.operation("/messages/<bigid:message_id>", "GET", summary="One message", response=MessageOut)
def get_message(message_id: int) -> MessageOut:
    return MessageOut.model_validate(outbox.get_message(db(), message_id))


@bp.operation(
    "/messages/<bigid:message_id>/preview",
    "GET",
    summary="Exactly what this message's recipient gets: its own links and contact data",
    response=PreviewOut,
)
def preview_message(message_id: int) -> PreviewOut:
    message = outbox.get_message(db(), message_id)
    email = render_message(db(), message_id, nurture().settings)
    return PreviewOut(
        subject=email.subject,
        html=email.html,
        text=email.text,
        viewports=VIEWPORTS,
        contact=str(message.contact_id),
    )


@bp.operation(
    "/messages/<bigid:message_id>/resend",
    "POST",
    summary="Queue an `unknown` message again (it may already have been delivered once)",
    role=Role.MARKETER,
    response=MessageOut,
)
def resend(message_id: int) -> MessageOut:
    message = outbox.resend_message(db(), message_id)
    db().commit()
    return MessageOut.model_validate(message)
