"""The per-app state the public endpoints share (the signer, the hit writer, the caches of
the click's links, UTM parameters and message owners) and what a click and the site
endpoints both know: the site origins and the identity cookie."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import current_app
from werkzeug.urls import iri_to_uri

from automation.campaigns.models import Campaign, CampaignVariant
from automation.config import Settings
from automation.email.models import Message, TemplateVersion
from automation.signing import TokenClaims, TokenSigner
from automation.tracking.hits import HitQueue, make_hit_writer, new_hit_id
from automation.tracking.sites import ORIGINS, allowed_origins, origin_of
from web.database import nurture

# The contact's signed identifier on a site: a click to a site origin sets it, the snippet
# and the collect endpoint read it.
IDENTITY_COOKIE = "nurture_id"

T = TypeVar("T")


class _Link(NamedTuple):
    """A compiled link as the click redirect uses it, worked out once per process."""

    url: str  # the destination with the link's own UTM parameters (as compiled: an IRI)
    location: str  # the same as a URI: the Location header when the click adds nothing
    origin: str | None  # its origin: destinations on a site origin identify the visitor
    honeypot: bool


def _link(link: dict[str, Any]) -> _Link:
    if link.get("honeypot"):
        return _Link("", "", None, True)
    # A compiled destination (http/https, checked at compile time), never the request's.
    url = with_utm(str(link["url"]), link.get("utm"))
    return _Link(url, iri_to_uri(url), origin_of(url), False)


class TrackingState:
    """Per-app pieces of the hot path, built once."""

    def __init__(self, settings: Settings) -> None:
        self.signer = TokenSigner.from_settings(settings)
        self.queue: HitQueue = make_hit_writer(settings)
        self._links: dict[int, list[_Link]] = {}
        self._lock = threading.Lock()
        # Hit ids: a random per-process prefix and a counter (no syscall per hit).
        self._prefix = new_hit_id()
        self._counter = itertools.count()
        # Campaign UTM parameters by template version (re-read every 30 s) and the
        # (contact, campaign) of messages whose clicks need them: read only for versions a
        # campaign with UTM uses, or destinations on a site origin.
        self._utm: dict[int, tuple[float, dict[int, dict[str, str]]]] = {}
        self._owners: dict[int, tuple[int, int | None] | None] = {}

    def hit_id(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def links(self, version_id: int) -> list[_Link] | None:
        links = self._links.get(version_id)
        if links is None:
            with nurture().sessions() as session:
                version = session.get(TemplateVersion, version_id)
                if version is None:
                    return None
                links = [_link(link) for link in version.links]
            with self._lock:
                if len(self._links) > 10_000:
                    self._links.clear()
                self._links[version_id] = links
        return links

    def campaign_utm(self, version_id: int) -> dict[int, dict[str, str]]:
        """{campaign id: utm} of the campaigns sending ``version_id`` that ask for UTM."""
        cached = self._utm.get(version_id)
        if cached is not None and time.monotonic() - cached[0] < 30:
            return cached[1]
        from sqlalchemy import select

        with nurture().sessions() as session:
            rows = session.execute(
                select(Campaign.id, Campaign.utm)
                .join(CampaignVariant, CampaignVariant.campaign_id == Campaign.id)
                .where(CampaignVariant.template_version_id == version_id)
            ).all()
        found = {cid: dict(utm) for cid, utm in rows if utm}
        with self._lock:
            if len(self._utm) > 10_000:
                self._utm.clear()
            self._utm[version_id] = (time.monotonic(), found)
        return found

    def owner(self, claims: TokenClaims) -> tuple[int, int | None] | None:
        """(contact id, campaign id) of the token's message; None if it is gone."""
        if claims.message_id in self._owners:
            return self._owners[claims.message_id]
        from sqlalchemy import select

        with nurture().sessions() as session:
            row = session.execute(
                select(Message.contact_id, Message.campaign_id, Message.token_nonce).where(
                    Message.id == claims.message_id
                )
            ).first()
        found = (
            (row.contact_id, row.campaign_id)
            if row is not None and (row.token_nonce & 0xFFFFFFFF) == claims.nonce
            else None
        )
        with self._lock:
            if len(self._owners) > 50_000:
                self._owners.clear()
            self._owners[claims.message_id] = found
        return found


def app_state(name: str, build: Callable[[Settings], T]) -> T:
    """This app's one ``name`` object, built from the app's settings on first use (several
    apps in one process, as tests run them, each keep their own)."""
    found: T | None = current_app.extensions.get(name)
    if found is None:
        found = build(current_app.extensions["nurture"].settings)
        current_app.extensions[name] = found
    return found


def tracking() -> TrackingState:
    return app_state("nurture_tracking", TrackingState)


def with_utm(url: str, utm: dict[str, str] | None) -> str:
    """``url`` with the template's UTM parameters added (existing ones are kept)."""
    if not utm:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    query += [(k, str(v)) for k, v in utm.items() if k not in present and v]
    return urlunsplit(parts._replace(query=urlencode(query)))


def site_origins() -> frozenset[str]:
    return ORIGINS.get(_load_origins)  # every click asks: no closure or import per call


def _load_origins() -> frozenset[str]:
    with nurture().sessions() as session:
        return allowed_origins(session)
