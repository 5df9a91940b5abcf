"""Settings → Website: the origins allowed to embed the tracking snippet and forms (admins)
and the preference topics contacts may choose (marketers). The API offers the same under
/api/v1/site-origins and /api/v1/preference-topics; both go through the same domain calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from sqlalchemy.orm import Session

from automation.accounts.models import Role
from automation.errors import NotFound
from automation.signing import TokenSigner, site_identity_secret
from automation.tracking import sites, topics
from web.auth import login_required
from web.database import db, nurture
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, INVALID, errors_of


def _website_page(
    origin_values: dict[str, str] | None = None,
    origin_errors: dict[str, str] | None = None,
    topic_values: dict[str, str] | None = None,
    topic_errors: dict[str, str] | None = None,
    status: int = 200,
) -> tuple[str, int]:
    base = nurture().settings.base_url
    origins = sites.list_site_origins(db())
    signer = TokenSigner.from_settings(nurture().settings)
    # The identity secrets are an admin's to see (a site's server signs identify calls).
    user = getattr(g, "user", None)
    admin = user is not None and user.role.allows(Role.ADMIN)
    secrets = {o.id: site_identity_secret(signer, o.origin) for o in origins} if admin else {}
    return (
        render_template(
            "settings/website.html",
            origins=origins,
            identity_secrets=secrets,
            topics=topics.list_topics(db()),
            script_url=f"{base}/t/nurture.js",
            origin_values=origin_values or {},
            origin_errors=origin_errors or {},
            topic_values=topic_values or {},
            topic_errors=topic_errors or {},
        ),
        status,
    )


@bp.route("/settings/website", endpoint="website_settings")
@login_required()
def website_settings() -> Any:
    return _website_page()


def _saved(message: str) -> Any:
    db().commit()
    flash(message, "success")
    return redirect(url_for("ui.website_settings"))


def _removed(remove: Callable[[Session, int], None], row_id: int, message: str) -> Any:
    try:
        remove(db(), row_id)
    except NotFound:
        flash("That was already removed.", "error")
        return redirect(url_for("ui.website_settings"))
    return _saved(message)


@bp.route("/settings/website/origins", methods=["POST"])
@login_required(Role.ADMIN)
def site_origin_add() -> Any:
    values = {"origin": request.form.get("origin", "").strip()}
    try:
        origin = sites.add_site_origin(db(), values["origin"])
    except FORM_ERRORS as exc:
        db().rollback()
        return _website_page(origin_values=values, origin_errors=errors_of(exc), status=INVALID)
    return _saved(f"{origin.origin} may now embed the tracking snippet and forms.")


@bp.route("/settings/website/origins/<int:origin_id>/delete", methods=["POST"])
@login_required(Role.ADMIN)
def site_origin_remove(origin_id: int) -> Any:
    message = "Origin removed: its pages can no longer post events or forms."
    return _removed(sites.remove_site_origin, origin_id, message)


@bp.route("/settings/website/topics", methods=["POST"])
@login_required(Role.MARKETER)
def topic_add() -> Any:
    values = {name: request.form.get(name, "").strip() for name in ("tag", "label")}
    try:
        topic = topics.add_topic(db(), values["tag"], values["label"])
    except FORM_ERRORS as exc:
        db().rollback()
        return _website_page(topic_values=values, topic_errors=errors_of(exc), status=INVALID)
    return _saved(f"Topic {topic.label} is now offered on the preferences page.")


@bp.route("/settings/website/topics/<int:topic_id>/delete", methods=["POST"])
@login_required(Role.MARKETER)
def topic_remove(topic_id: int) -> Any:
    return _removed(topics.remove_topic, topic_id, "Topic removed; contacts keep the tag.")
