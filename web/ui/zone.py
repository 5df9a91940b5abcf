"""The account time zone for the request: pages show dates in it (the ``local`` filter
behind the ``when`` macro) and views pass it to whatever counts per day or hour."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import g

from automation.accounts.workspace import account_zone
from web.database import db


def request_zone() -> ZoneInfo:
    """Read once per request."""
    zone = g.get("account_zone")
    if zone is None:
        zone = g.account_zone = account_zone(db())
    return zone


def local_time(value: Any) -> Any:
    """A stored instant (naive values are UTC) in the account time zone; dates and
    anything else unchanged."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(request_zone())
    return value


def zone_name() -> str:
    return request_zone().key


__all__ = ["local_time", "request_zone", "zone_name"]
