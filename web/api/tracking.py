"""Tracking over the API: resume a sender identity the complaint-rate guard paused."""

from __future__ import annotations

from automation.accounts.models import Role
from automation.email.schema import SenderIdentityOut
from automation.tracking.bounces import resume_identity
from web.api.routing import ApiBlueprint
from web.database import db

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
