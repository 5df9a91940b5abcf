from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from automation.addresses import normalize_email, validate_time_zone

local = st.from_regex(r"[A-Za-z0-9._%+\-!#]{1,20}", fullmatch=True)
domain = st.from_regex(r"([a-zA-Z0-9\-]{1,10}\.){1,3}[a-zA-Z]{2,6}", fullmatch=True)


@settings(max_examples=500)
@given(local, domain)
def test_fast_path_agrees_with_email_validator(user, host):
    address = f"{user}@{host}"
    try:
        expected = validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        expected = None
    try:
        got = normalize_email(address)
    except ValueError:
        got = None
    assert got == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "no-at-sign",
        "a@b",
        "a@@b.com",
        "a@b.test",
        "a..b@example.com",
        ".a@example.com",
        "a@-x.com",
    ],
)
def test_bad_addresses_are_refused(bad):
    with pytest.raises(ValueError):
        normalize_email(bad)


def test_unicode_addresses_go_through_the_full_validator():
    assert normalize_email("José@Exämple.com") == "josé@exämple.com"


def test_time_zone_validation():
    assert validate_time_zone("America/Sao_Paulo") == "America/Sao_Paulo"
    with pytest.raises(ValueError, match="unknown time zone"):
        validate_time_zone("Europe/Atlantis")


def test_first_admin_is_created_once(session):
    from automation.accounts.service import ensure_admin
    from automation.cli import ADMIN_EMAIL

    password = ensure_admin(session, ADMIN_EMAIL)
    assert password and len(password) >= 10
    assert ensure_admin(session, ADMIN_EMAIL) is None


@pytest.mark.parametrize("address", ["0@00--0.aa", "x@ab--c.com", "x@xn--b.com"])
def test_reserved_double_dash_labels_are_refused_like_email_validator_does(address):
    with pytest.raises(ValueError):
        normalize_email(address)
