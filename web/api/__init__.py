"""The JSON API under /api/v1: one ApiBlueprint per area, plus the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, jsonify

from web.api import (
    accounts,
    campaigns,
    contacts,
    events,
    messages,
    policy,
    segments,
    site,
    templates,
    tracking,
    workflows,
)
from web.api.openapi import build_openapi
from web.auth import public
from web.database import nurture

PREFIX = "/api/v1"
meta = Blueprint("api", __name__)
BLUEPRINTS: list[Blueprint] = [
    meta,
    contacts.bp,
    events.bp,
    accounts.bp,
    segments.bp,
    templates.bp,
    messages.bp,
    workflows.bp,
    campaigns.bp,
    tracking.bp,
    policy.bp,
    site.bp,
]


@meta.get("/openapi.json")
@public
def openapi() -> Any:
    return jsonify(build_openapi(nurture().settings.base_url + PREFIX))


def register_api(app: Flask, csrf: Any) -> None:
    for blueprint in BLUEPRINTS:
        # The API checks CSRF itself, and only for cookie sessions (web/api/access.py).
        csrf.exempt(blueprint)
        app.register_blueprint(blueprint, url_prefix=PREFIX)
