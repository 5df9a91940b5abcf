"""What both apps do to every request and response for safety: trust X-Forwarded-*
headers only from the configured number of proxies (werkzeug's ProxyFix), and the security
headers: HSTS on https, ``no-store`` on private pages, the content security policy."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from automation.config import Settings

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https: http:; font-src 'self' data:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
NO_STORE = "no-store"


def trust_proxies(app: Flask, settings: Settings) -> None:
    """Behind ``settings.trusted_proxies`` proxies, the client address, scheme and host are
    the ones they forward (X-Forwarded-For, -Proto, ...); with none configured a forged
    X-Forwarded-For is ignored and the client is the TCP peer."""
    counts = {f"x_{name}": count for name, count in settings.trusted_proxies.items()}
    if counts:
        app.wsgi_app = ProxyFix(app.wsgi_app, **{"x_for": 0, "x_proto": 0, **counts})  # type: ignore[method-assign]


def _https(settings: Settings) -> bool:
    return request.is_secure or settings.base_url.startswith("https://")


def strict_transport(response: Any) -> Any:
    """HSTS whenever the request came over https (directly or, trusted, through a proxy)
    or the configured public URL is https. Browsers ignore it on plain http."""
    settings: Settings = current_app.extensions["nurture"].settings
    if settings.hsts_seconds > 0 and _https(settings):
        response.headers.setdefault(
            "Strict-Transport-Security", f"max-age={settings.hsts_seconds}; includeSubDomains"
        )
    return response


def private_headers(response: Any) -> Any:
    """The main app's headers. A private page or API answer (a view that is not public)
    holds personal data: no shared or browser cache may keep it."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    # Scripts only from our own files; inline styles stay allowed because email previews
    # (srcdoc iframes inherit this policy) are made of them.
    response.headers.setdefault("Content-Security-Policy", CSP)
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and request.endpoint != "static" and not getattr(view, "public", False):
        response.headers["Cache-Control"] = NO_STORE
    return strict_transport(response)
