"""Issue 17 item 7: failed logins slow down whoever fails, never everyone; an account's
lockout backs off instead of a flat block; behind a trusted proxy the client is the
address it forwards, and without one a forged X-Forwarded-For changes nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import make_settings

from automation import clock
from automation.runtime import use_runtime

PASSWORD = "correct horse battery"
ATTACKER = "198.51.100.7"
OFFICE = "203.0.113.5"


def attempt(client: Any, email: str, password: str, ip: str, **headers: str) -> Any:
    """One login from ``ip`` (the TCP peer), through the login page and its CSRF token."""
    environ = {"REMOTE_ADDR": ip}
    page = client.get("/login", environ_base=environ).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token},
        headers=headers,
        environ_base=environ,
    )


@pytest.fixture
def admin(user_factory) -> str:
    email, _ = user_factory("admin@example.com", PASSWORD, "admin")
    user_factory("maria@example.com", PASSWORD, "marketer")
    return email


@pytest.fixture
def frozen() -> Any:
    """A clock the test moves by hand."""
    at = [datetime(2026, 12, 1, 9, 0, tzinfo=UTC)]
    clock.set_source(lambda: at[0])
    yield at
    clock.set_source(None)


def test_twenty_bad_logins_from_one_address_do_not_stop_the_admin_from_another(app, admin):
    attacker = app.test_client()
    statuses = [attempt(attacker, admin, f"guess {n}", ATTACKER).status_code for n in range(20)]
    # Five guesses, then this address waits (and its refused tries are not even counted).
    assert statuses == [401] * 5 + [429] * 15
    assert attempt(app.test_client(), admin, PASSWORD, OFFICE).status_code == 302
    # The attacker's address stays slowed, for the admin's password too.
    refused = attempt(attacker, admin, PASSWORD, ATTACKER)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "Too many failed attempts" in refused.get_data(as_text=True)


def test_an_address_guessing_many_accounts_is_slowed_and_nobody_else(app, admin):
    attacker = app.test_client()
    statuses = [
        attempt(attacker, f"user{n}@example.com", "guess", ATTACKER).status_code for n in range(21)
    ]
    assert statuses == [401] * 20 + [429]  # the address, whatever account it tries next
    assert attempt(attacker, "maria@example.com", PASSWORD, ATTACKER).status_code == 429
    assert attempt(app.test_client(), "maria@example.com", PASSWORD, OFFICE).status_code == 302
    assert attempt(app.test_client(), admin, PASSWORD, "192.0.2.1").status_code == 302


def test_an_account_guessed_from_many_addresses_backs_off_exponentially(app, admin, frozen):
    client = app.test_client()
    for n in range(10):  # ten addresses, one guess each: no address is slowed by itself
        assert attempt(client, admin, "guess", f"192.0.2.{n + 1}").status_code == 401
    first = attempt(client, admin, PASSWORD, OFFICE)
    assert first.status_code == 429 and first.headers["Retry-After"] == "30"
    frozen[0] += timedelta(seconds=31)
    assert attempt(client, admin, "guess", "192.0.2.50").status_code == 401
    second = attempt(client, admin, PASSWORD, OFFICE)
    assert second.status_code == 429 and second.headers["Retry-After"] == "60"  # doubled
    frozen[0] += timedelta(seconds=61)
    assert attempt(client, admin, "guess", "192.0.2.51").status_code == 401
    third = attempt(client, admin, PASSWORD, OFFICE)
    assert third.headers["Retry-After"] == "120"
    frozen[0] += timedelta(seconds=121)
    # Not a flat block: once the wait is over the owner logs in, and that clears the count.
    assert attempt(client, admin, PASSWORD, OFFICE).status_code == 302
    assert attempt(app.test_client(), admin, "guess", "192.0.2.52").status_code == 401
    assert attempt(app.test_client(), admin, PASSWORD, OFFICE).status_code == 302


@pytest.fixture
def proxied_app(tmp_path, sqlite_url) -> Any:
    """The app behind one trusted reverse proxy (NURTURE_TRUSTED_PROXIES=1)."""
    from automation.accounts.models import Role
    from automation.accounts.service import create_user
    from web import create_app

    app = create_app(
        make_settings(tmp_path, sqlite_url, NURTURE_TRUSTED_PROXIES="1"), {"TESTING": True}
    )
    use_runtime(app.extensions["nurture"])
    with app.extensions["nurture"].sessions() as s:
        create_user(s, "admin@example.com", PASSWORD, role=Role.ADMIN)
        s.commit()
    yield app
    app.extensions["nurture"].engine.dispose()
    use_runtime(None)


PROXY = "10.0.0.2"


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(proxied_app):
    app = proxied_app
    client = app.test_client()
    for n in range(20):
        response = attempt(
            client, f"user{n}@example.com", "guess", PROXY, **{"X-Forwarded-For": ATTACKER}
        )
        assert response.status_code == 401
    slowed = attempt(client, "admin@example.com", PASSWORD, PROXY, **{"X-Forwarded-For": ATTACKER})
    assert slowed.status_code == 429
    # Every client comes through the same proxy; only the one that failed waits.
    other = attempt(
        app.test_client(), "admin@example.com", PASSWORD, PROXY, **{"X-Forwarded-For": OFFICE}
    )
    assert other.status_code == 302
    # The forwarded scheme counts too: https through the proxy gets HSTS, http does not.
    https = app.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert https.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in app.test_client().get("/login").headers
    # The tracking app trusts the same proxies.
    from web import create_tracking_app

    tracking = create_tracking_app(app.extensions["nurture"].settings)
    try:
        pixel = tracking.test_client().get("/t/o/x", headers={"X-Forwarded-Proto": "https"})
        assert "Strict-Transport-Security" in pixel.headers
        assert "Strict-Transport-Security" not in tracking.test_client().get("/t/o/x").headers
    finally:
        tracking.extensions["nurture"].engine.dispose()


def test_without_a_trusted_proxy_a_forged_forwarded_for_changes_nothing(app, admin):
    client = app.test_client()
    for n in range(20):
        forged = {"X-Forwarded-For": f"192.0.2.{n + 1}"}  # a new "address" each time
        assert (
            attempt(client, f"user{n}@example.com", "guess", ATTACKER, **forged).status_code == 401
        )
    escaped = attempt(client, admin, PASSWORD, ATTACKER, **{"X-Forwarded-For": OFFICE})
    assert escaped.status_code == 429
    forged_https = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in forged_https.headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {}),
        ("0", {}),
        ("2", {"for": 2, "proto": 2}),
        ("for=1,proto=1,host=1", {"for": 1, "proto": 1, "host": 1}),
    ],
)
def test_trusted_proxies_setting(value, expected):
    from automation.config import parse_trusted_proxies

    assert parse_trusted_proxies(value) == expected


def test_a_bad_trusted_proxies_setting_is_refused_naming_it():
    from automation.config import parse_trusted_proxies

    with pytest.raises(ValueError, match=r"NURTURE_TRUSTED_PROXIES.*'forwarded=1'"):
        parse_trusted_proxies("forwarded=1")
