"""Settings → Workspace: the account time zone every page and chart shows dates in (an
admin changes it; everyone reads it). The API offers the same at
/api/v1/settings/workspace."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for

from automation.accounts import workspace
from automation.accounts.models import Role
from automation.addresses import known_time_zones
from web.auth import login_required
from web.database import db
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, INVALID, errors_of, parse


def _page(values: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    return (
        render_template(
            "settings/workspace.html",
            values=values,
            errors=errors,
            zones=sorted(known_time_zones()),
        ),
        status,
    )


@bp.route("/settings/workspace", endpoint="workspace_settings")
@login_required()
def workspace_settings() -> Any:
    return _page({"time_zone": workspace.time_zone_name(db())}, {})


@bp.route("/settings/workspace", methods=["POST"])
@login_required(Role.ADMIN)
def workspace_save() -> Any:
    values = {"time_zone": request.form.get("time_zone", "").strip()}
    try:
        data = parse(workspace.WorkspaceIn, values)
        saved = workspace.save_workspace(db(), data, user_id=g.user.id)
    except FORM_ERRORS as exc:
        db().rollback()
        return _page(values, errors_of(exc), INVALID)
    db().commit()
    flash(f"Account time zone saved: pages and charts now show {saved.time_zone}.", "success")
    return redirect(url_for("ui.workspace_settings"))
