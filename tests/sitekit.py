"""Shared pieces for the site tracking and form tests: an app on PostgreSQL whose queues
and rate limits live in the real Redis (flushed first: it is this branch's own db)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REDIS_URL, make_api_key, make_settings, require_service

from automation.runtime import use_runtime
from automation.tracking.sites import ORIGINS, add_site_origin

SHOP = "https://shop.example"


@pytest.fixture
def site_app(tmp_path: Path, postgres_url: str) -> Iterator[Any]:
    yield from make_site_app(tmp_path, postgres_url)


def make_site_app(tmp_path: Path, postgres_url: str, **env: str) -> Iterator[Any]:
    """The site app with ``env`` on top of its settings (a fixture's body)."""
    import redis

    from web import create_app

    require_service("redis")
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = make_settings(
        tmp_path,
        postgres_url,
        **{"NURTURE_HIT_QUEUE_URL": REDIS_URL, "NURTURE_FORM_RATE_LIMIT": "3", **env},
    )
    app = create_app(settings, {"TESTING": True})
    use_runtime(app.extensions["nurture"])
    ORIGINS.invalidate()
    with app.extensions["nurture"].sessions() as s:
        add_site_origin(s, SHOP)
        s.commit()
    yield app
    ORIGINS.invalidate()
    app.extensions["nurture"].engine.dispose()
    use_runtime(None)


def admin_headers(app: Any, role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_api_key(app, role)}"}


def verified(app: Any, email: str, origin: str = SHOP) -> dict[str, str]:
    """``identify`` with the identity hash the site's server computes for ``email``."""
    import hashlib
    import hmac

    from automation.signing import TokenSigner, site_identity_secret

    signer = TokenSigner.from_settings(app.extensions["nurture"].settings)
    secret = site_identity_secret(signer, origin)
    digest = hmac.new(secret.encode(), email.lower().encode(), hashlib.sha256).hexdigest()
    return {"email": email, "hash": digest}
