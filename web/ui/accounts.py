"""Settings → users and roles, and API keys. Admins only, reading included: the list of
accounts and keys is itself sensitive."""

from __future__ import annotations

from typing import Any

from flask import flash, g, make_response, redirect, render_template, request, url_for

from automation.accounts import service as accounts
from automation.accounts.models import Role
from automation.errors import FieldError, InvalidInput
from web.auth import login_required
from web.database import db
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, INVALID, errors_of

ROLES = [(r.value, r.value) for r in Role]


def _role(value: str | None) -> Role:
    try:
        return Role(value or "")
    except ValueError:
        raise InvalidInput(FieldError("role", "choose viewer, marketer or admin")) from None


def _secret_page(template: str, **context: Any) -> Any:
    """A page that shows a secret once: never cached, never stored."""
    response = make_response(render_template(template, **context))
    response.headers["Cache-Control"] = "no-store"
    return response


# --- users -----------------------------------------------------------------------------


def _users_page(values: Any, errors: dict[str, str]) -> str:
    return render_template(
        "settings/users.html",
        users=accounts.list_users(db()),
        roles=ROLES,
        values=values,
        errors=errors,
    )


@bp.route("/settings/users", methods=["GET"])
@login_required(Role.ADMIN)
def users() -> Any:
    return _users_page({"role": "marketer"}, {})


@bp.route("/settings/users", methods=["POST"])
@login_required(Role.ADMIN)
def user_create() -> Any:
    """Create an account; a blank password gets a generated one, shown once."""
    password = request.form.get("password", "")
    generated = not password
    try:
        role = _role(request.form.get("role"))
        if generated:
            password = accounts.new_password()
        user = accounts.create_user(
            db(),
            request.form.get("email", ""),
            password,
            role=role,
            name=request.form.get("name", "").strip(),
        )
    except FORM_ERRORS as exc:
        db().rollback()
        values = {k: v for k, v in request.form.items() if k != "password"}
        return _users_page(values, errors_of(exc)), INVALID
    db().commit()
    if generated:
        return _secret_page("settings/password_shown.html", user=user, password=password)
    flash(f"Created {user.email} ({user.role.value}).", "success")
    return redirect(url_for("ui.users"))


def _user_action(action: Any, success: str) -> Any:
    try:
        action()
    except FORM_ERRORS as exc:
        db().rollback()
        # Shown above the list, not on the new-user form's fields.
        return _users_page({"role": "marketer"}, {"": next(iter(errors_of(exc).values()))}), INVALID
    db().commit()
    flash(success, "success")
    return redirect(url_for("ui.users"))


@bp.route("/settings/users/<int:user_id>/role", methods=["POST"])
@login_required(Role.ADMIN)
def user_role(user_id: int) -> Any:
    user = accounts.get_user(db(), user_id)
    return _user_action(
        lambda: accounts.change_role(db(), user_id, _role(request.form.get("role"))),
        f"{user.email} is now {request.form.get('role')}.",
    )


@bp.route("/settings/users/<int:user_id>/active", methods=["POST"])
@login_required(Role.ADMIN)
def user_active(user_id: int) -> Any:
    user = accounts.get_user(db(), user_id)
    active = request.form.get("active") == "true"
    if not active and user.id == g.user.id:
        return _users_page(
            {"role": "marketer"}, {"": "You cannot deactivate your own account."}
        ), INVALID
    state = "reactivated" if active else "deactivated and logged out"
    return _user_action(
        lambda: accounts.set_active(db(), user_id, active), f"{user.email} is {state}."
    )


@bp.route("/settings/users/<int:user_id>/password", methods=["POST"])
@login_required(Role.ADMIN)
def user_password(user_id: int) -> Any:
    user = accounts.get_user(db(), user_id)
    password = accounts.reset_password(db(), user_id)
    db().commit()
    return _secret_page("settings/password_shown.html", user=user, password=password)


# --- API keys --------------------------------------------------------------------------


def _keys_page(values: Any, errors: dict[str, str]) -> str:
    return render_template(
        "settings/api_keys.html",
        keys=accounts.list_api_keys(db()),
        roles=ROLES,
        values=values,
        errors=errors,
    )


@bp.route("/settings/api-keys", methods=["GET"])
@login_required(Role.ADMIN)
def api_keys() -> Any:
    return _keys_page({"role": "marketer"}, {})


@bp.route("/settings/api-keys", methods=["POST"])
@login_required(Role.ADMIN)
def api_key_create() -> Any:
    try:
        new = accounts.create_api_key(
            db(),
            request.form.get("name", ""),
            role=_role(request.form.get("role")),
            created_by_id=g.user.id,
        )
    except FORM_ERRORS as exc:
        db().rollback()
        return _keys_page(request.form, errors_of(exc)), INVALID
    db().commit()
    # Rendered straight from the POST, never redirected: the token must not pass through
    # the session cookie or any later page.
    return _secret_page("settings/api_key_created.html", key=new.key, token=new.token)


@bp.route("/settings/api-keys/<int:key_id>/revoke", methods=["POST"])
@login_required(Role.ADMIN)
def api_key_revoke(key_id: int) -> Any:
    accounts.revoke_api_key(db(), key_id)
    db().commit()
    flash("API key revoked: requests with it are refused from now on.", "success")
    return redirect(url_for("ui.api_keys"))
