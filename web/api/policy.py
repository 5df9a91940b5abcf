"""The sending policy (admin): the global frequency cap, sunset and engagement half-life.
Values saved here override the environment's defaults for every process at once."""

from __future__ import annotations

from flask import g

from automation import policy
from automation.accounts.models import Role
from web.api.routing import ApiBlueprint
from web.database import db, nurture

bp = ApiBlueprint("policy", __name__)


@bp.operation(
    "/settings/sending-policy",
    "GET",
    summary="The sending policy in force",
    role=Role.ADMIN,
    response=policy.PolicyOut,
)
def get_policy() -> policy.PolicyOut:
    return policy.get_policy(db(), nurture().settings)


@bp.operation(
    "/settings/sending-policy",
    "PUT",
    summary="Save the sending policy (null fields follow the environment)",
    role=Role.ADMIN,
    body=policy.PolicyIn,
    response=policy.PolicyOut,
)
def put_policy(body: policy.PolicyIn) -> policy.PolicyOut:
    saved = policy.save_policy(
        db(), body, nurture().settings, user_id=getattr(g.principal, "user_id", None)
    )
    db().commit()
    return saved
