"""Tracking over the API: resume a sender the complaint-rate guard paused (a sender
identity, or the default sender, NURTURE_DEFAULT_SENDER, used when a template names none)."""

from __future__ import annotations

from automation.accounts.models import Role
from automation.email.schema import DefaultSenderOut, SenderIdentityOut
from automation.tracking.bounces import default_sender_state, resume_default, resume_identity
from web.api.routing import ApiBlueprint
from web.database import db, nurture

bp = ApiBlueprint("tracking_api", __name__)


@bp.operation(
    "/sender-identities/<int:identity_id>/resume",
    "POST",
    summary="Resume sending for a paused sender identity",
    role=Role.ADMIN,
    response=SenderIdentityOut,
)
def resume(identity_id: int) -> SenderIdentityOut:
    identity = resume_identity(db(), identity_id)
    db().commit()
    return SenderIdentityOut.model_validate(identity)


@bp.operation(
    "/sender-identities/default",
    "GET",
    summary="The default sender (NURTURE_DEFAULT_SENDER) and whether it is paused",
    response=DefaultSenderOut,
)
def default_sender() -> DefaultSenderOut:
    return default_sender_state(db(), nurture().settings)


@bp.operation(
    "/sender-identities/default/resume",
    "POST",
    summary="Resume sending for the default sender after the complaint guard paused it",
    role=Role.ADMIN,
    response=DefaultSenderOut,
)
def resume_default_sender() -> DefaultSenderOut:
    state = resume_default(db(), nurture().settings)
    db().commit()
    return state
