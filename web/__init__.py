"""The Flask app factories: ``create_app`` (the UI, the API and the public endpoints) and
``create_tracking_app`` (only the public endpoints, scaled apart from the UI). Each wires
the runtime built from the settings it is given; nothing here reads the environment
unless no settings are given."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from automation.config import Settings, load_settings
from automation.runtime import build_runtime
from web import auth, database, ops, ui
from web.api import register_api
from web.api.errors import register_api_errors, register_public_errors
from web.ids import CONVERTERS
from web.input import check_request_text
from web.public import site, tracking
from web.security import private_headers, strict_transport, trust_proxies
from web.ui import zone

csrf = CSRFProtect()


def create_app(
    settings: Settings | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    app.url_map.converters.update(CONVERTERS)  # before any route is added
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["nurture"] = build_runtime(settings)

    csrf.init_app(app)
    app.before_request(check_request_text)
    app.before_request(auth.load_user)
    app.teardown_appcontext(database.close_session)
    register_api_errors(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(ui.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(tracking.bp)
    csrf.exempt(tracking.bp)  # the signed token is the authority (RFC 8058 one-click POST)
    app.register_blueprint(site.bp)
    csrf.exempt(site.bp)  # cross-origin posts from sites: Origin check, honeypot, rate limit
    register_api(app, csrf)
    app.jinja_env.globals.update(
        nav_items=ui.nav_items,
        can=ui.can,
        paused_sender_count=ui.paused_sender_count,
        account_zone=zone.zone_name,
    )
    app.jinja_env.filters["readable_json"] = readable_json
    app.jinja_env.filters["local"] = zone.local_time
    app.after_request(private_headers)
    trust_proxies(app, settings)
    return app


def create_tracking_app(settings: Settings | None = None) -> Flask:
    """A process that serves only the public tracking URLs (scaled apart from the UI)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.url_map.converters.update(CONVERTERS)
    # No SECRET_KEY: these pages use no cookie session (opening one costs ~0.3 ms a hit).
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    app.extensions["nurture"] = build_runtime(settings)
    app.before_request(check_request_text)
    app.teardown_appcontext(database.close_session)
    register_public_errors(app)
    app.register_blueprint(tracking.bp)
    app.register_blueprint(site.bp)
    app.after_request(strict_transport)
    trust_proxies(app, settings)
    return app


def readable_json(value: Any) -> str:
    """JSON for people to read on a page: indented, keys sorted, non-ASCII as itself. Plain
    text, so autoescaping makes markup in it (a ``<script>`` user agent) inert; ``tojson``
    is for script contexts and turns ``<`` into ``\\u003c``, which nobody can read."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
