"""The sending policy (admin): the global frequency cap, sunset and engagement half-life.
Values saved here override the environment's defaults for every process at once. And the
workspace settings (the account time zone)."""

from __future__ import annotations

from flask import g

from automation import policy
from automation.accounts import workspace
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


@bp.operation(
    "/settings/workspace",
    "GET",
    summary="The workspace settings: the account time zone pages and charts use",
    response=workspace.WorkspaceOut,
)
def get_workspace() -> workspace.WorkspaceOut:
    return workspace.WorkspaceOut(time_zone=workspace.time_zone_name(db()))


@bp.operation(
    "/settings/workspace",
    "PUT",
    summary="Set the account time zone (an IANA name; default UTC)",
    role=Role.ADMIN,
    body=workspace.WorkspaceIn,
    response=workspace.WorkspaceOut,
)
def put_workspace(body: workspace.WorkspaceIn) -> workspace.WorkspaceOut:
    saved = workspace.save_workspace(db(), body, user_id=getattr(g.principal, "user_id", None))
    db().commit()
    return saved
