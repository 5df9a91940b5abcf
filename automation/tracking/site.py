"""Site tracking: the collect payload's rules, the queued record, and batch ingestion.

The collect endpoint validates a payload (``parse_collect``), turns it into queued lines
(``SiteRecord``) and answers; nothing is written to the database on that path. The
`tracking` worker drains the "site" queue (``drain_site_events``):

1. records carrying proof of who the visitor is link their visitor id to a contact
   (``site_visitors``): a verified contact identifier (from a tracked email click), or an
   identify call whose identity hash the site's server computed with the site's secret
   (``signing.verify_identity_hash``, checked by the collect view). An identify call
   without valid proof is never queued: anyone can post any address, and a known
   contact's behaviour, workflows and emails must not follow from that;
2. events of a known visitor go through the ordinary event ingestion
   (``contacts.events.ingest_events``: idempotent, triggers, segments, goals);
3. events of an unknown visitor wait in ``anonymous_events``; when the visitor is
   identified they are ingested for the contact with the same idempotency key and removed.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.addresses import normalize_email
from automation.contacts.events import ingest_events
from automation.contacts.models import Contact
from automation.db import dialect_insert, one_of
from automation.errors import FieldError, InvalidInput
from automation.tracking.draining import drain_in_batches
from automation.tracking.hits import HitQueue
from automation.tracking.models import AnonymousEvent, SiteVisitor

MAX_BODY_BYTES = 16 * 1024
MAX_EVENTS = 20
MAX_PROPERTIES = 30
MAX_STRING = 500
MAX_LIST = 20
EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]{0,99}$")
PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
VISITOR_ID = re.compile(r"^[A-Za-z0-9_\-]{16,64}$")
IDENTITY_HASH = re.compile(r"^[0-9A-Fa-f]{64}$")
RESERVED_PREFIXES = ("email.", "form.", "site.")
PAGE_VIEW = "page.viewed"  # the snippet's page views; the only reserved-looking name allowed
IDENTIFIED = "site.identified"
SITE_SOURCE = "site"


@dataclass(frozen=True)
class CollectEvent:
    name: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class Collect:
    visitor_id: str
    events: list[CollectEvent]
    identity: str | None = None  # the signed contact identifier, still to verify
    email: str | None = None  # identify({email})
    identity_hash: str | None = None  # identify({email, hash}): the site's proof, to verify


def _scalar_ok(value: Any) -> str | None:
    """Why ``value`` is not an allowed property value (None when it is)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= 10**15 else "numbers are limited to ±10^15"
    if isinstance(value, float):
        return None if math.isfinite(value) and abs(value) <= 1e15 else "not a finite number"
    if isinstance(value, str):
        return None if len(value) <= MAX_STRING else f"longer than {MAX_STRING} characters"
    return "must be a string, number, boolean, null or a list of those"


def check_properties(raw: Any, path: str) -> tuple[dict[str, Any], list[FieldError]]:
    """Event properties: a flat object of ≤ 30 named scalars (or short lists of scalars)."""
    if not isinstance(raw, dict):
        return {}, [FieldError(path, "must be a JSON object")]
    errors: list[FieldError] = []
    if len(raw) > MAX_PROPERTIES:
        return {}, [FieldError(path, f"at most {MAX_PROPERTIES} properties")]
    for key, value in raw.items():
        if not isinstance(key, str) or not PROPERTY_NAME.match(key):
            errors.append(
                FieldError(f"{path}.{str(key)[:40]}", "property names are letters, digits, _")
            )
            continue
        if isinstance(value, list):
            if len(value) > MAX_LIST:
                errors.append(FieldError(f"{path}.{key}", f"at most {MAX_LIST} items"))
                continue
            for i, item in enumerate(value):
                problem = _scalar_ok(item) if not isinstance(item, list) else "no nested lists"
                if problem:
                    errors.append(FieldError(f"{path}.{key}[{i}]", problem))
            continue
        problem = _scalar_ok(value)
        if problem:
            errors.append(FieldError(f"{path}.{key}", problem))
    return dict(raw), errors


def parse_collect(payload: Any) -> Collect:
    """The collect payload, checked field by field; InvalidInput names every bad field::

    {"visitor_id": "…", "identity": "<signed, optional>",
     "identify": {"email": "…"},                      (optional)
     "events": [{"name": "cart_abandoned", "properties": {…}}, …]}
    """
    if not isinstance(payload, dict):
        raise InvalidInput(FieldError("body", "must be a JSON object"))
    errors: list[FieldError] = []
    unknown = set(payload) - {"visitor_id", "identity", "identify", "events"}
    errors += [FieldError(str(k)[:40], "unknown field") for k in sorted(map(str, unknown))]
    visitor = payload.get("visitor_id")
    if not isinstance(visitor, str) or not VISITOR_ID.match(visitor):
        errors.append(FieldError("visitor_id", "16 to 64 letters, digits, - or _"))
    identity = payload.get("identity")
    if identity is not None and (not isinstance(identity, str) or len(identity) > 64):
        errors.append(FieldError("identity", "must be the identifier the snippet was given"))
    email: str | None = None
    identify = payload.get("identify")
    digest: str | None = None
    if identify is not None:
        if not isinstance(identify, dict) or not {"email"} <= set(identify) <= {"email", "hash"}:
            errors.append(FieldError("identify", 'must be {"email": "…", "hash": "…"}'))
        else:
            try:
                email = normalize_email(identify["email"])
            except ValueError as exc:
                errors.append(FieldError("identify.email", str(exc)))
            digest = identify.get("hash")
            if digest is not None and not (isinstance(digest, str) and IDENTITY_HASH.match(digest)):
                errors.append(
                    FieldError("identify.hash", "64 hex digits: HMAC-SHA256 of the email")
                )
    raw_events = payload.get("events", [])
    events: list[CollectEvent] = []
    if not isinstance(raw_events, list):
        errors.append(FieldError("events", "must be a list"))
    elif len(raw_events) > MAX_EVENTS:
        errors.append(FieldError("events", f"at most {MAX_EVENTS} events per request"))
    else:
        for i, raw in enumerate(raw_events):
            path = f"events[{i}]"
            if not isinstance(raw, dict):
                errors.append(FieldError(path, "must be a JSON object"))
                continue
            extra = set(raw) - {"name", "properties"}
            errors += [FieldError(f"{path}.{str(k)[:40]}", "unknown field") for k in sorted(extra)]
            name = raw.get("name")
            if not isinstance(name, str) or not EVENT_NAME.match(name):
                errors.append(
                    FieldError(
                        f"{path}.name",
                        "1 to 100 characters: a letter, then letters, digits, _ . : -",
                    )
                )
                continue
            if name != PAGE_VIEW and name.lower().startswith(RESERVED_PREFIXES):
                errors.append(
                    FieldError(f"{path}.name", "email., form. and site. are Nurture's own events")
                )
                continue
            properties, problems = check_properties(raw.get("properties", {}), f"{path}.properties")
            errors += problems
            events.append(CollectEvent(name, properties))
    if not errors and not events and email is None and identity is None:
        errors.append(FieldError("events", "send at least one event, or identify"))
    if errors:
        raise InvalidInput(errors)
    return Collect(str(visitor), events, identity, email, digest)


# --- the queued record -------------------------------------------------------------------


@dataclass(frozen=True)
class SiteRecord:
    """One queued line: an event, or an identification (``name`` None)."""

    id: str  # random; the idempotency key of the event it becomes
    visitor_id: str
    at: float
    name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    contact_id: int | None = None  # from a verified identifier
    email: str | None = None  # identify({email, hash}) with a valid hash
    via: str = "identity_hash"  # how the visitor was identified: identity_hash | email_link

    def encode(self) -> bytes:
        return json.dumps(
            [
                self.id,
                self.visitor_id,
                self.at,
                self.name,
                self.properties,
                self.contact_id,
                self.email,
                self.via,
            ],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SiteRecord | None:
        try:
            v = json.loads(raw)
            return cls(
                str(v[0]),
                str(v[1]),
                float(v[2]),
                None if v[3] is None else str(v[3]),
                dict(v[4]),
                None if v[5] is None else int(v[5]),
                None if v[6] is None else str(v[6]),
                str(v[7]),
            )
        except (ValueError, TypeError, IndexError, KeyError):
            return None


def records_of(
    collect: Collect, *, contact_id: int | None, email_verified: bool, at: float
) -> list[SiteRecord]:
    """The lines one accepted collect request becomes (identification first):
    ``contact_id`` from a verified identifier; the identify call's email only when its
    identity hash was verified (``email_verified``), else the call identifies nobody."""
    out: list[SiteRecord] = []
    prefix = secrets.token_hex(8)
    if contact_id is not None:
        out.append(
            SiteRecord(
                f"{prefix}i", collect.visitor_id, at, contact_id=contact_id, via="email_link"
            )
        )
    if collect.email is not None and email_verified:
        out.append(SiteRecord(f"{prefix}e", collect.visitor_id, at, email=collect.email))
    for n, event in enumerate(collect.events):
        out.append(SiteRecord(f"{prefix}{n}", collect.visitor_id, at, event.name, event.properties))
    return out


# --- ingestion ---------------------------------------------------------------------------


@dataclass
class SiteReport:
    received: int = 0
    ingested: int = 0  # events stored for a contact (new ones)
    anonymous: int = 0  # events kept for a visitor not known yet
    relinked: int = 0  # anonymous events moved onto a contact
    identified: int = 0  # visitors linked to a contact
    unknown_emails: int = 0  # identify calls naming no contact (nothing is created)
    errors: int = 0

    def add(self, other: SiteReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def link_visitors(session: Session, links: dict[str, tuple[int, str]]) -> list[str]:
    """Record ``visitor_id → (contact_id, source)``; the latest identification wins.
    Returns the visitor ids whose contact is new or changed."""
    if not links:
        return []
    current = dict(
        session.execute(
            select(SiteVisitor.visitor_id, SiteVisitor.contact_id).where(
                one_of(session, SiteVisitor.visitor_id, list(links))
            )
        ).all()
    )
    changed = [v for v, (c, _) in links.items() if current.get(v) != c]
    if not changed:
        return []
    now = clock.now()
    stmt = dialect_insert(session, SiteVisitor)
    stmt = stmt.on_conflict_do_update(
        index_elements=["visitor_id"],
        set_={
            "contact_id": stmt.excluded.contact_id,
            "identified_at": stmt.excluded.identified_at,
            "source": stmt.excluded.source,
        },
    )
    session.execute(
        stmt,
        [
            {
                "visitor_id": v,
                "contact_id": links[v][0],
                "identified_at": now,
                "source": links[v][1],
            }
            for v in changed
        ],
    )
    return changed


def _emails(session: Session, contact_ids: set[int]) -> dict[int, str]:
    if not contact_ids:
        return {}
    rows = session.execute(
        select(Contact.id, Contact.email).where(one_of(session, Contact.id, sorted(contact_ids)))
    )
    return {contact_id: email for contact_id, email in rows}


def _ingest_for_contacts(
    session: Session, rows: list[tuple[int, dict[str, Any]]], report: SiteReport
) -> None:
    """(contact id, event) pairs through the ordinary event ingestion."""
    emails = _emails(session, {c for c, _ in rows})
    items = [
        {**event, "email": emails[contact_id]} for contact_id, event in rows if contact_id in emails
    ]
    report.errors += len(rows) - len(items)  # contacts deleted meanwhile
    if not items:
        return
    result = ingest_events(session, items, source=SITE_SOURCE)
    report.ingested += result.count("created")
    report.errors += result.count("error")


def relink_anonymous(session: Session, visitors: Sequence[str], report: SiteReport) -> None:
    """Move the anonymous events of newly identified visitors onto their contacts."""
    if not visitors:
        return
    owners = dict(
        session.execute(
            select(SiteVisitor.visitor_id, SiteVisitor.contact_id).where(
                one_of(session, SiteVisitor.visitor_id, list(visitors))
            )
        ).all()
    )
    waiting = list(
        session.scalars(
            select(AnonymousEvent)
            .where(one_of(session, AnonymousEvent.visitor_id, list(owners)))
            .order_by(AnonymousEvent.occurred_at, AnonymousEvent.id)
        )
    )
    if not waiting:
        return
    rows = [
        (
            owners[e.visitor_id],
            {
                "name": e.name,
                "properties": e.properties,
                "occurred_at": e.occurred_at.isoformat(),
                "idempotency_key": e.idempotency_key,
            },
        )
        for e in waiting
    ]
    _ingest_for_contacts(session, rows, report)
    report.relinked += len(waiting)
    session.execute(
        delete(AnonymousEvent).where(one_of(session, AnonymousEvent.id, [e.id for e in waiting]))
    )


def ingest_site_records(session: Session, records: Sequence[SiteRecord]) -> SiteReport:
    """One batch of queued site records (see the module docstring for the order)."""
    report = SiteReport(received=len(records))
    if not records:
        return report
    # 1. identifications: a verified identifier, or the verified email of an existing
    # contact (an identify call creates no contact: only a form, with its consent, does).
    # Lines queued before identify calls needed proof (via "identify") link nobody.
    links: dict[str, tuple[int, str]] = {}
    when = {r.visitor_id: r.at for r in records if r.name is None}
    for r in records:
        if r.name is None and r.contact_id is not None:
            links[r.visitor_id] = (r.contact_id, r.via)
    by_email = [r for r in records if r.name is None and r.email and r.via == "identity_hash"]
    if by_email:
        known_emails = dict(
            session.execute(
                select(Contact.email, Contact.id).where(
                    one_of(session, Contact.email, sorted({r.email for r in by_email if r.email}))
                )
            ).all()
        )
        for r in by_email:
            if r.email in known_emails:
                links[r.visitor_id] = (known_emails[r.email], r.via)
            else:
                report.unknown_emails += 1
    existing = set(_emails(session, {c for c, _ in links.values()}))
    links = {v: link for v, link in links.items() if link[0] in existing}
    changed = link_visitors(session, links)
    report.identified += len(changed)
    _ingest_for_contacts(
        session,
        [
            (
                links[v][0],
                {
                    "name": IDENTIFIED,
                    "properties": {"visitor_id": v, "via": links[v][1]},
                    "occurred_at": _at(when[v]).isoformat(),
                    "idempotency_key": f"site.identified:{v}:{links[v][0]}",
                },
            )
            for v in changed
        ],
        report,
    )
    relink_anonymous(session, changed, report)
    # 2. events: known visitors go to their contact, the rest wait
    events = [r for r in records if r.name is not None]
    if not events:
        return report
    owners = dict(
        session.execute(
            select(SiteVisitor.visitor_id, SiteVisitor.contact_id).where(
                one_of(session, SiteVisitor.visitor_id, sorted({r.visitor_id for r in events}))
            )
        ).all()
    )
    known: list[tuple[int, dict[str, Any]]] = []
    anonymous: list[dict[str, Any]] = []
    for r in events:
        properties = {**r.properties, "visitor_id": r.visitor_id}
        row = {
            "name": r.name,
            "properties": properties,
            "occurred_at": _at(r.at),
            "idempotency_key": f"site:{r.id}",
        }
        if r.visitor_id in owners:
            known.append((owners[r.visitor_id], {**row, "occurred_at": _at(r.at).isoformat()}))
        else:
            anonymous.append({**row, "visitor_id": r.visitor_id})
    _ingest_for_contacts(session, known, report)
    if anonymous:
        session.execute(
            dialect_insert(session, AnonymousEvent).on_conflict_do_nothing(
                index_elements=["idempotency_key"]
            ),
            anonymous,
        )
        report.anonymous += len(anonymous)
    return report


def expire_anonymous(session: Session, older_than_days: int = 90) -> int:
    """Anonymous events of visitors who never identified are kept ``older_than_days``."""
    cutoff = clock.now() - timedelta(days=older_than_days)
    result = session.execute(delete(AnonymousEvent).where(AnonymousEvent.occurred_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]


DRAIN_LEASE = "tracking.drain_site"


def drain_site_events(
    sessions: sessionmaker[Session],
    queue: HitQueue,
    *,
    batch_size: int = 2000,
    max_batches: int = 50,
) -> SiteReport:
    """Ingest queued site records (see automation/tracking/draining.py)."""
    total = SiteReport()

    def ingest(session: Session, lines: list[bytes]) -> None:
        records = [r for r in (SiteRecord.decode(line) for line in lines) if r is not None]
        total.add(ingest_site_records(session, records))

    drain_in_batches(
        sessions,
        queue,
        ingest,
        lease=DRAIN_LEASE,
        batch_size=batch_size,
        max_batches=max_batches,
    )
    return total
