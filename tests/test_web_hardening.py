"""Issue 17 items 12 and 4 (its rate limit): /metrics needs its token outside the embedded
default, logout ends the session on the server, private pages are never cached, HSTS on
https, every 405 says what is allowed, /readyz names no host, and /t/collect is limited
per visitor and per address."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import emailkit
import pytest
import sitekit
from conftest import METRICS_AUTH, login, make_settings
from sitekit import SHOP

from automation.runtime import use_runtime
from automation.tracking.forwarding import Forwarder
from automation.tracking.hits import make_hit_queue
from automation.tracking.site import drain_site_events

smtp_server = emailkit.smtp_server
PASSWORD = "correct horse battery"


def _app(tmp_path: Any, db_url: str, **env: str) -> Any:
    from web import create_app

    app = create_app(make_settings(tmp_path, db_url, **env), {"TESTING": True})
    use_runtime(app.extensions["nurture"])
    return app


@pytest.fixture
def make_app(tmp_path) -> Iterator[Any]:
    made: list[Any] = []

    def make(db_url: str, **env: str) -> Any:
        app = _app(tmp_path / str(len(made)), db_url, **env)
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["nurture"].engine.dispose()
    use_runtime(None)


# --- /metrics -------------------------------------------------------------------------


def test_metrics_need_the_token_outside_the_embedded_default(make_app, postgres_url, sqlite_url):
    served = make_app(postgres_url, NURTURE_METRICS_TOKEN="")
    refused = served.test_client().get("/metrics")
    assert refused.status_code == 403
    assert "NURTURE_METRICS_TOKEN" in refused.get_data(as_text=True)
    assert "nurture_" not in refused.get_data(as_text=True)
    guarded = make_app(postgres_url).test_client()
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer ünï"}).status_code == 401
    assert guarded.get("/metrics", headers=METRICS_AUTH).status_code == 200
    # The embedded default (SQLite, one machine) still answers without one.
    embedded = make_app(sqlite_url, NURTURE_METRICS_TOKEN="").test_client()
    assert "nurture_" in embedded.get("/metrics").get_data(as_text=True)


# --- logout ----------------------------------------------------------------------------


def _csrf(page: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_logout_ends_the_session_on_the_server(app, client, user_factory):
    email, password = user_factory()
    assert login(client, email, password).status_code == 302
    stolen = client.get_cookie("session").value
    token = _csrf(client.get("/").get_data(as_text=True))
    copy = app.test_client()
    copy.set_cookie("session", stolen)
    assert copy.get("/contacts").status_code == 200  # the copy works while logged in
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    # The same cookie, replayed after logout: nobody.
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/contacts").status_code == 302
    assert replay.get("/api/v1/contacts").status_code == 401
    # Logging in again gives a new session that works.
    assert login(client, email, password).status_code == 302
    assert client.get("/contacts").status_code == 200


def test_a_password_reset_ends_the_users_other_sessions(app, client, user_factory):
    email, password = user_factory()
    user_factory("admin@example.com", PASSWORD, "admin")
    assert login(client, email, password).status_code == 302
    admin = app.test_client()
    assert login(admin, "admin@example.com", PASSWORD).status_code == 302
    token = _csrf(admin.get("/settings/users").get_data(as_text=True))
    with app.extensions["nurture"].sessions() as s:
        from sqlalchemy import select

        from automation.accounts.models import User

        user_id = s.scalar(select(User.id).where(User.email == email))
    reset = admin.post(f"/settings/users/{user_id}/password", data={"csrf_token": token})
    assert reset.status_code in (200, 302)
    assert client.get("/contacts").status_code == 302


# --- caching, HSTS, 405 ----------------------------------------------------------------


def test_private_pages_and_api_answers_are_never_cached(app, client, user_factory, api):
    contact = api.post("/contacts", {"email": "ana@example.com"}).json
    email, password = user_factory()
    login(client, email, password)
    for path in ("/", "/contacts", f"/contacts/{contact['id']}", "/api/v1/contacts"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path
    keyed = api.get(f"/contacts/{contact['id']}")
    assert keyed.headers["Cache-Control"] == "no-store"
    # Public, shared files keep their own caching.
    assert client.get("/t/nurture.js").headers["Cache-Control"] == "public, max-age=3600"


def test_hsts_on_https_only(make_app, sqlite_url):
    from web import create_tracking_app

    plain = make_app(sqlite_url)
    assert "Strict-Transport-Security" not in plain.test_client().get("/login").headers
    secure = plain.test_client().get("/login", base_url="https://nurture.test")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    configured = make_app(sqlite_url, NURTURE_BASE_URL="https://mail.example.com")
    assert "Strict-Transport-Security" in configured.test_client().get("/login").headers
    tracking = create_tracking_app(configured.extensions["nurture"].settings)
    try:
        pixel = tracking.test_client().get("/t/o/not-a-token")
        assert "Strict-Transport-Security" in pixel.headers
    finally:
        tracking.extensions["nurture"].engine.dispose()
    off = make_app(
        sqlite_url, NURTURE_BASE_URL="https://mail.example.com", NURTURE_HSTS_SECONDS="0"
    )
    assert "Strict-Transport-Security" not in off.test_client().get("/login").headers


def _allowed(response: Any) -> set[str]:
    return {m.strip() for m in response.headers["Allow"].split(",")}


def test_a_405_says_which_methods_are_allowed(app, client, api):
    from web import create_tracking_app

    page = client.get("/logout")
    assert page.status_code == 405 and _allowed(page) == {"POST", "OPTIONS"}
    contact = api.post("/contacts", {"email": "ana@example.com"}).json
    erase = api.get(f"/contacts/{contact['id']}/erase")
    assert erase.status_code == 405 and _allowed(erase) == {"POST", "OPTIONS"}
    assert erase.json["error"]["code"] == "method_not_allowed"
    deleted = client.put("/api/v1/contacts")
    assert deleted.status_code == 405 and _allowed(deleted) >= {"GET", "POST"}
    tracking = create_tracking_app(app.extensions["nurture"].settings)
    try:
        collect = tracking.test_client().get("/t/collect")
        assert collect.status_code == 405
        assert _allowed(collect) == {"POST", "OPTIONS"}
    finally:
        tracking.extensions["nurture"].engine.dispose()


# --- /readyz ---------------------------------------------------------------------------


def test_readyz_names_no_host(make_app, postgres_url, smtp_server):
    app = make_app(
        postgres_url,
        NURTURE_SMTP_HOST=smtp_server.host,
        NURTURE_SMTP_PORT=str(smtp_server.port),
        NURTURE_BROKER_URL="redis://127.0.0.1:1/0",  # nothing listens there
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json["checks"]}
    assert checks["database"]["ok"] and checks["smtp"]["ok"]
    assert not checks["broker"]["ok"]
    assert "server log" in checks["broker"]["detail"]
    body = response.get_data(as_text=True)
    for secret in ("127.0.0.1", f":{smtp_server.port}", "root@", "redis://"):
        assert secret not in body, secret


# --- /t/collect ------------------------------------------------------------------------


@pytest.fixture
def limited_site(tmp_path, postgres_url) -> Iterator[Any]:
    yield from sitekit.make_site_app(
        tmp_path,
        postgres_url,
        NURTURE_COLLECT_RATE_LIMIT_VISITOR="5",
        NURTURE_COLLECT_RATE_LIMIT_ADDRESS="8",
    )


def _collect(client: Any, visitor: str, ip: str = "198.51.100.7") -> Any:
    body = {"visitor_id": visitor, "events": [{"name": "page.viewed"}]}
    return client.post(
        "/t/collect",
        data=json.dumps(body),
        content_type="text/plain",
        headers={"Origin": SHOP},
        environ_base={"REMOTE_ADDR": ip},
    )


@pytest.mark.redis
def test_collect_is_rate_limited_per_visitor_and_per_address(limited_site):
    client = limited_site.test_client()
    one, two, three = "a" * 24, "b" * 24, "c" * 24
    assert [_collect(client, one).status_code for _ in range(6)] == [202] * 5 + [429]
    limited = _collect(client, one)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json["error"]["code"] == "rate_limited"
    assert limited.headers["Access-Control-Allow-Origin"] == SHOP  # the snippet can read it
    # Another visitor on the same address, until the address's own limit (8 a minute:
    # seven were spent above, the refused ones too).
    assert [_collect(client, two).status_code for _ in range(2)] == [202, 429]
    assert _collect(client, three, ip="203.0.113.5").status_code == 202
    runtime = limited_site.extensions["nurture"]
    Forwarder.from_settings(runtime.settings).forward_all()
    report = drain_site_events(runtime.sessions, make_hit_queue(runtime.settings, "site"))
    assert report.anonymous == 7  # only the accepted requests' events were queued


@pytest.mark.redis
def test_the_collect_limits_are_shared_through_redis(limited_site):
    """Two web processes (two apps here) count together: the limit is the site's, not a
    process's."""
    from web import create_tracking_app

    other = create_tracking_app(limited_site.extensions["nurture"].settings)
    try:
        clients = [limited_site.test_client(), other.test_client()]
        statuses = [_collect(clients[n % 2], "d" * 24).status_code for n in range(6)]
    finally:
        other.extensions["nurture"].engine.dispose()
    assert statuses == [202] * 5 + [429]


def test_collect_still_answers_when_the_rate_limit_store_is_unreachable(make_app, sqlite_url):
    """The counters live in Redis; a Redis outage lets requests through (the hits still
    spool on disk) instead of turning every one into a 500."""
    from automation.tracking.sites import ORIGINS, add_site_origin

    app = make_app(sqlite_url, NURTURE_HIT_QUEUE_URL="redis://127.0.0.1:1/0")  # nothing there
    ORIGINS.invalidate()
    with app.extensions["nurture"].sessions() as s:
        add_site_origin(s, SHOP)
        s.commit()
    try:
        assert _collect(app.test_client(), "e" * 24).status_code == 202
    finally:
        ORIGINS.invalidate()
