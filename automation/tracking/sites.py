"""The website origins allowed to use site tracking and forms (admin setting).

CORS on the collect and form endpoints answers only these origins, and the click redirect
hands the visitor identifier only to destinations on them. The public endpoints read the
list through ``OriginCache`` (one query per process every few seconds, not per request).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from automation import clock
from automation.errors import Conflict, FieldError, InvalidInput, NotFound
from automation.signing import TokenSigner, site_identity_secret
from automation.tracking.models import SiteOrigin

MAX_ORIGINS = 200


def normalize_origin(value: str, path: str = "origin") -> str:
    """``https://Shop.Example:443/`` → ``https://shop.example``; InvalidInput naming
    ``path`` for anything that is not a bare http(s) origin."""
    raw = (value or "").strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise InvalidInput(FieldError(path, "not a valid origin")) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(FieldError(path, "an origin is http(s)://host[:port]"))
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise InvalidInput(
            FieldError(path, "an origin has no path, query or credentials: https://shop.example")
        )
    host = parts.hostname.lower()
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def origin_of(url: str) -> str | None:
    """The origin of a URL, or None when it has none."""
    try:
        return normalize_origin(f"{urlsplit(url).scheme}://{urlsplit(url).netloc}")
    except (InvalidInput, ValueError):
        return None


def list_site_origins(session: Session) -> list[SiteOrigin]:
    return list(session.scalars(select(SiteOrigin).order_by(SiteOrigin.origin)))


def add_site_origin(session: Session, origin: str) -> SiteOrigin:
    clean = normalize_origin(origin)
    if session.scalar(select(SiteOrigin.id).where(SiteOrigin.origin == clean)) is not None:
        raise Conflict(f"{clean} is already allowed", [FieldError("origin", "already allowed")])
    if len(list_site_origins(session)) >= MAX_ORIGINS:
        raise InvalidInput(FieldError("origin", f"at most {MAX_ORIGINS} origins"))
    row = SiteOrigin(origin=clean, created_at=clock.now())
    session.add(row)
    session.flush()
    ORIGINS.invalidate()
    return row


def remove_site_origin(session: Session, origin_id: int) -> None:
    if session.execute(delete(SiteOrigin).where(SiteOrigin.id == origin_id)).rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"site origin {origin_id} not found")
    ORIGINS.invalidate()


def identity_secret(session: Session, signer: TokenSigner, origin_id: int) -> tuple[str, str]:
    """(origin, its identity secret): what the site's server signs identify calls with."""
    origin = session.scalar(select(SiteOrigin.origin).where(SiteOrigin.id == origin_id))
    if origin is None:
        raise NotFound(f"site origin {origin_id} not found")
    return origin, site_identity_secret(signer, origin)


def allowed_origins(session: Session) -> frozenset[str]:
    return frozenset(session.scalars(select(SiteOrigin.origin)))


class OriginCache:
    """The allowed origins, re-read at most every ``ttl`` seconds per process (a change
    made in this process is seen at once; in others within ``ttl``)."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._value: frozenset[str] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._value = None

    def get(self, load: Callable[[], frozenset[str]]) -> frozenset[str]:
        value = self._value
        if value is None or time.monotonic() - self._at > self.ttl:
            with self._lock:
                value = load()
                self._value, self._at = value, time.monotonic()
        return value


ORIGINS = OriginCache()
