"""Login, logout and the role checks every private route uses."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from automation.accounts.models import Role
from automation.accounts.service import authenticate, revoke_sessions, session_user
from automation.accounts.throttle import LoginThrottled
from web.database import db

bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., Any])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


def load_user() -> None:
    """Before each request: the logged-in user (or None) on ``g.user``. A cookie of an
    earlier session generation (the user logged out since) names nobody."""
    g.user = None
    user_id = session.get("user_id")
    if isinstance(user_id, int):
        g.user = session_user(db(), user_id, session.get("generation"))


def login_required(role: Role = Role.VIEWER) -> Callable[[F], F]:
    """Page views: anonymous users go to the login page, too-low roles get 403."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if g.user is None:
                return redirect(url_for("auth.login", next=request.full_path))
            if not g.user.role.allows(role):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate


def public(view: F) -> F:
    """Mark a view as open to anonymous visitors (the route walk test checks every other
    route declares a role)."""
    view.public = True  # type: ignore[attr-defined]
    return view


def safe_next(target: str | None, default: str | None = None) -> str:
    # Only same-site relative paths: never an open redirect to another host.
    fallback = default or url_for("ui.dashboard")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    parts = urlsplit(target)
    return target if not parts.netloc and not parts.scheme else fallback


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = authenticate(
                db(),
                form.email.data or "",
                form.password.data or "",
                request.remote_addr or "unknown",
            )
        except LoginThrottled as exc:
            seconds = max(1, math.ceil(exc.retry_after.total_seconds()))
            wait = f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"
            flash(f"Too many failed attempts. Try again in {wait}.", "error")
            return render_template("login.html", form=form), 429, {"Retry-After": str(seconds)}
        db().commit()
        if user is None:
            flash("Wrong email or password.", "error")
            status = 401
        else:
            session.clear()  # a fresh session on login: no fixation
            session["user_id"] = user.id
            session["generation"] = user.session_generation
            session.permanent = True
            return redirect(safe_next(request.args.get("next")))
    elif request.method == "POST":
        status = 400
    return render_template("login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Any:
    """Ends the session here and on the server: a copy of the cookie no longer works."""
    if g.user is not None:
        revoke_sessions(db(), g.user.id)
        db().commit()
    session.clear()
    return redirect(url_for("auth.login"))
