"""Batch ingestion of tracking hits: events, message engagement, contact engagement.

A batch is a few statements whatever its size: one SELECT of its messages, one of their
template versions, then per 1,000 hits the store: on PostgreSQL one statement (events
INSERT … ON CONFLICT DO NOTHING RETURNING, message counters, contact engagement) run
while the next 1,000 are classified; on SQLite an executemany INSERT, then the UPDATEs.
A hit's random id is its event's idempotency key, so a replayed batch inserts nothing
and counts nothing. Only hits that are new *and* human move counters and scores; machine
hits are stored as events with ``machine: true`` so reports can show both.

**What "opened" means** is decided here, once, for every reader: a human click proves an
open. A human click on a message no human open was recorded for also records that open
(an ``email.opened`` event with ``"proof": "click"`` at the click's time, stamping
``first_open_at``), so branches, waits, triggers, goals, segments, reports, A/B tests and
counters, which all read ``email.opened`` events or ``first_open_at``, agree without each
learning the rule (docs/tracking.md, "What counts as opened").
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.orm import Session

from automation.contacts.models import Contact, Event
from automation.db import dialect_insert, is_postgres, one_of
from automation.email.models import Message, TemplateVersion
from automation.reactions import IngestedEvent, react_to_events
from automation.tracking.classify import burst_hits, classify
from automation.tracking.hits import MAX_REFERER, Hit

OPEN_WEIGHT = 1.0
CLICK_WEIGHT = 3.0
EVENT_NAMES = {"open": "email.opened", "click": "email.clicked"}


@dataclass
class IngestReport:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dropped: int = 0  # tokens whose message no longer matches (deleted, restored database)
    human: int = 0
    machine: int = 0
    implied_opens: int = 0  # opens a human click proved (stored beside the click's event)
    classes: Counter[str] = field(default_factory=Counter)

    def add(self, other: IngestReport) -> None:
        self.received += other.received
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.dropped += other.dropped
        self.human += other.human
        self.machine += other.machine
        self.implied_opens += other.implied_opens
        self.classes.update(other.classes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "human": self.human,
            "machine": self.machine,
            "implied_opens": self.implied_opens,
        }


# Where a message came from, copied onto its engagement events (for reports and branches).
_ORIGIN = ("campaign_id", "campaign_variant_id", "enrollment_id", "workflow_id", "workflow_node_id")


def decayed(score: float, since: datetime | None, now: datetime, half_life_days: float) -> float:
    """``score`` as it stands at ``now`` after halving every ``half_life_days``."""
    if since is None or score == 0:
        return score
    days = max((now - since).total_seconds(), 0) / 86400
    return score * math.pow(0.5, days / half_life_days)


class _Row(NamedTuple):
    """One event of a batch. Its first seven fields, in this order, are the PostgreSQL
    statement's document (a JSON array per event: ``e->>0`` …)."""

    contact_id: int
    name: str
    properties: dict[str, Any]
    occurred_at: str  # naive UTC, ISO 8601
    key: str
    message_id: int
    human: bool
    at: datetime
    implied: bool = False  # an open a human click proved, not a hit of its own


class _Version(NamedTuple):
    template_id: int
    links: list[dict[str, Any]]
    visible_links: int  # the honeypot is no link a person could click


class _Target(NamedTuple):
    """A message hits may name: what their tokens must match, what their events copy."""

    nonce: int
    template_version_id: int
    contact_id: int
    sent_at: float | None
    version: _Version
    properties: dict[str, Any]  # the message's part of each of its events' properties
    opened: bool  # a human open is already recorded (first_open_at)


def _targets(session: Session, message_ids: set[int]) -> dict[int, _Target]:
    """The batch's messages. Versions (links) are read once each, not with every message:
    a batch's messages share a few versions, and decoding their links row by row was a
    third of the drain."""
    rows = session.execute(
        select(
            Message.id,
            Message.token_nonce,
            Message.template_version_id,
            Message.contact_id,
            Message.sent_at,
            Message.first_open_at,
            *(getattr(Message, key) for key in _ORIGIN),
        ).where(one_of(session, Message.id, message_ids))
    ).all()
    versions = {
        v.id: _Version(v.template_id, v.links, sum(not link.get("honeypot") for link in v.links))
        for v in session.execute(
            select(TemplateVersion.id, TemplateVersion.template_id, TemplateVersion.links).where(
                TemplateVersion.id.in_(sorted({r[2] for r in rows}))
            )
        )
    }
    targets = {}
    for message_id, nonce, version_id, contact_id, sent_at, first_open_at, *origin in rows:
        version = versions[version_id]
        properties = {
            "message_id": message_id,
            "template_id": version.template_id,
            "template_version_id": version_id,
        }
        for key, value in zip(_ORIGIN, origin, strict=True):
            if value is not None:
                properties[key] = value
        targets[message_id] = _Target(
            nonce & 0xFFFFFFFF,
            version_id,
            contact_id,
            sent_at.timestamp() if sent_at else None,
            version,
            properties,
            first_open_at is not None,
        )
    return targets


def ingest_hits(
    session: Session, hits: Sequence[Hit], *, half_life_days: float = 30.0
) -> IngestReport:
    report = IngestReport(received=len(hits))
    unique = list({h.id: h for h in hits}.values())
    report.duplicates += len(hits) - len(unique)
    if not unique:
        return report
    targets = _targets(session, {h.message_id for h in unique})
    bursts = burst_hits(unique, {m: t.version.visible_links for m, t in targets.items()})
    opened = _opened(unique, targets)
    parts = (
        _events(unique[start:end], targets, bursts, opened, report)
        for start, end in _statement_bounds(len(unique))
    )
    stored: list[tuple[_Row, int]] = []
    if is_postgres(session):
        # Each part is one statement (events, message counters, contact engagement),
        # run while the next part is classified.
        documents = (_Part(rows, _document(rows)) for rows in parts if rows)
        for new in _overlapped(lambda part: _pg_store(session, part, half_life_days), documents):
            stored += new
    else:
        for rows in parts:
            stored += _insert_events(session, rows)
        _write_back(session, [row for row, _ in stored], half_life_days)
    hits_stored = [row for row, _ in stored if not row.implied]
    report.stored = len(hits_stored)
    report.implied_opens = len(stored) - report.stored
    report.duplicates += report.classes.total() - report.stored
    report.human = sum(1 for row in hits_stored if row.human)
    report.machine = report.stored - report.human
    react_to_events(
        session,
        [IngestedEvent(id_, r.contact_id, r.name, r.properties, r.at) for r, id_ in stored],
    )
    return report


# Hits per statement: big enough that a statement's fixed costs (planning, the hash
# tables of its joins) stay small, small enough that classifying the next part hides
# behind this one's database time.
STATEMENT_ROWS = 1000
# The first statement of a batch is smaller: the database waits while Python classifies
# it, and nothing hides that wait.
FIRST_STATEMENT_ROWS = 200


def _statement_bounds(count: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the hits of each statement of a batch of ``count``."""
    start, end = 0, min(FIRST_STATEMENT_ROWS, count)
    while start < count:
        yield start, end
        start, end = end, min(end + STATEMENT_ROWS, count)


def _opened(hits: Sequence[Hit], targets: dict[int, _Target]) -> set[int]:
    """The batch's messages a person is known to have opened: before the batch, or by a
    human open hit in it (wherever it comes in the batch: a click read first must not
    record a second open). Only open hits of messages clicked here and not yet opened are
    classified ahead, so a batch of opens costs nothing more."""
    opened = {message_id for message_id, t in targets.items() if t.opened}
    clicked = {h.message_id for h in hits if h.kind == "click"} - opened
    for hit in hits:
        if hit.kind != "open" or hit.message_id not in clicked:
            continue
        m = targets.get(hit.message_id)
        if m is not None and m.nonce == hit.nonce and not classify(hit, m.sent_at).machine:
            opened.add(hit.message_id)
    return opened


def _events(
    hits: Sequence[Hit],
    targets: dict[int, _Target],
    bursts: set[str],
    opened: set[int],
    report: IngestReport,
) -> list[_Row]:
    """The events of hits whose token matches its message, classified; before the first
    human click of a message that no human open is known for (``opened``, kept up to date
    here), the open it proves."""
    rows: list[_Row] = []
    for hit in hits:
        m = targets.get(hit.message_id)
        if m is None or m.nonce != hit.nonce or m.template_version_id != hit.template_version_id:
            report.dropped += 1
            continue
        link: dict[str, Any] = _NO_LINK
        if hit.kind == "click":
            if hit.link_index is None or hit.link_index >= len(m.version.links):
                report.dropped += 1
                continue
            link = m.version.links[hit.link_index]
        verdict = classify(
            hit, m.sent_at, honeypot=bool(link.get("honeypot")), burst=hit.id in bursts
        )
        cls = verdict.cls.value
        properties = {
            **m.properties,
            "machine": verdict.machine,
            "classification": cls,
            "reasons": verdict.reasons,
            "user_agent": hit.user_agent,
            "ip": hit.ip,
        }
        if hit.referer:  # the page it came from (a webmail, a browser); bounded like on the way in
            properties["referer"] = hit.referer[:MAX_REFERER]
        if hit.kind == "click":
            properties["url"] = link.get("url")
            properties["link_index"] = hit.link_index
        report.classes[cls] += 1
        at = datetime.fromtimestamp(hit.at, UTC)
        if not verdict.machine and hit.message_id not in opened:
            if hit.kind == "click":
                rows.append(_implied_open(m, hit, properties, at))
            opened.add(hit.message_id)
        rows.append(
            _Row(
                m.contact_id,
                EVENT_NAMES[hit.kind],
                properties,
                at.isoformat(),
                f"hit:{hit.id}",
                hit.message_id,
                not verdict.machine,
                at,
            )
        )
    return rows


def _implied_open(m: _Target, hit: Hit, click: dict[str, Any], at: datetime) -> _Row:
    """The open a human click proves: the click's event without its link, marked with its
    proof, keyed from the hit (a replayed batch inserts it once)."""
    properties = {k: v for k, v in click.items() if k not in ("url", "link_index")}
    properties["proof"] = "click"
    return _Row(
        m.contact_id,
        EVENT_NAMES["open"],
        properties,
        at.isoformat(),
        f"hit:{hit.id}:open",
        hit.message_id,
        True,
        at,
        implied=True,
    )


class _Part(NamedTuple):
    rows: list[_Row]
    document: str  # `_PG_STORE`'s JSON document of the rows


def _document(rows: list[_Row]) -> str:
    return json.dumps([r[:7] for r in rows])


def _overlapped(
    store: Callable[[_Part], list[tuple[_Row, int]]], parts: Iterable[_Part]
) -> Iterator[list[tuple[_Row, int]]]:
    """``store(part)`` for each part, in order and one at a time, each in a second thread
    while this one computes (classifies, encodes) the next part: the database works on
    one statement while Python prepares the next (psycopg waits without holding the GIL).
    The session is used by one thread at a time."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest") as pool:
        pending: Future[list[tuple[_Row, int]]] | None = None
        for part in parts:
            if pending is not None:
                yield pending.result()
            pending = pool.submit(store, part)
        if pending is not None:
            yield pending.result()


_NO_LINK: dict[str, Any] = {}


# PostgreSQL: a part of a batch (STATEMENT_ROWS hits) in one round trip, as one JSON
# document of one array per event (``_Row``'s first seven fields): one parameter, the
# same statement text for any part, no per-row adaptation in Python (json.dumps is C).
# The CTEs of a WITH statement see the same snapshot, so `firsts` reads each message as
# it was before `message_counts` updated it: a contact's "messages opened" grows only for
# a message opened for the first time (a flood on one message counts once; a later
# statement sees what earlier ones wrote). Only new events (not conflicting: a replayed
# hit inserts nothing) of human hits move counters. The score decays from the contact's
# last engagement to the part's latest hit, by the half-life, then gains 1 per newly
# opened and 3 per newly clicked message: the same rule as `decayed` (SQLite's path,
# `_write_back`).
_PG_STORE = text(
    """
    WITH v AS (
        SELECT CAST(e->>0 AS bigint) AS c, e->>1 AS n, e->2 AS p,
               CAST(e->>3 AS timestamp) AS o, e->>4 AS k, CAST(e->>5 AS bigint) AS m,
               CAST(e->>6 AS boolean) AS h
        FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e
    ), ins AS (
        INSERT INTO events (contact_id, name, properties, occurred_at, received_at, source,
                            idempotency_key)
        SELECT c, n, p, o, o, 'tracking', k FROM v
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING idempotency_key, id
    ), human AS (
        SELECT v.m, v.c, v.n = 'email.opened' AS is_open, v.o
        FROM v JOIN ins ON ins.idempotency_key = v.k
        WHERE v.h
    ), per_message AS (
        SELECT m, min(c) AS c,
               count(*) FILTER (WHERE is_open) AS ao, count(*) FILTER (WHERE NOT is_open) AS ac,
               min(o) FILTER (WHERE is_open) AS fo, max(o) FILTER (WHERE is_open) AS lo,
               min(o) FILTER (WHERE NOT is_open) AS fc, max(o) FILTER (WHERE NOT is_open) AS lc
        FROM human GROUP BY m
    ), message_counts AS (
        UPDATE messages AS msg
        SET opens = msg.opens + pm.ao, clicks = msg.clicks + pm.ac,
            first_open_at = coalesce(msg.first_open_at, pm.fo),
            last_open_at = greatest(msg.last_open_at, pm.lo),
            first_click_at = coalesce(msg.first_click_at, pm.fc),
            last_click_at = greatest(msg.last_click_at, pm.lc)
        FROM per_message AS pm
        WHERE msg.id = pm.m
        RETURNING msg.id
    ), firsts AS (
        SELECT pm.c,
               count(*) FILTER (WHERE pm.ao > 0 AND msg.first_open_at IS NULL) AS ao,
               count(*) FILTER (WHERE pm.ac > 0 AND msg.first_click_at IS NULL) AS ac,
               max(pm.lo) AS lo, max(pm.lc) AS lc
        FROM per_message AS pm JOIN messages AS msg ON msg.id = pm.m
        GROUP BY pm.c
    ), contact_engagement AS (
        UPDATE contacts AS ct
        SET opens = ct.opens + f.ao, clicks = ct.clicks + f.ac,
            last_open_at = greatest(ct.last_open_at, f.lo),
            last_click_at = greatest(ct.last_click_at, f.lc),
            engagement_score = round(CAST(
                ct.engagement_score * CASE
                    WHEN greatest(ct.last_open_at, ct.last_click_at) IS NULL THEN 1.0
                    ELSE power(0.5, greatest(extract(epoch FROM greatest(f.lo, f.lc)
                        - greatest(ct.last_open_at, ct.last_click_at)), 0) / 86400.0 / :half)
                END + f.ao * :open_weight + f.ac * :click_weight AS numeric), 6),
            inactive_since = NULL
        FROM firsts AS f
        WHERE ct.id = f.c
        RETURNING ct.id
    )
    SELECT idempotency_key, id FROM ins
    """
)


def _pg_store(session: Session, part: _Part, half_life_days: float) -> list[tuple[_Row, int]]:
    """The new events (a replayed hit's is not) with their ids."""
    result = session.execute(
        _PG_STORE,
        {
            "rows": part.document,
            "half": half_life_days,
            "open_weight": OPEN_WEIGHT,
            "click_weight": CLICK_WEIGHT,
        },
    )
    inserted = {key: id_ for key, id_ in result}
    return [(r, inserted[r.key]) for r in part.rows if r.key in inserted]


def _insert_events(session: Session, rows: list[_Row]) -> list[tuple[_Row, int]]:
    """SQLite (the embedded default, small volumes): the portable executemany INSERT; the
    new events with their ids."""
    result = session.execute(
        dialect_insert(session, Event)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(Event.idempotency_key, Event.id),
        [
            {
                "contact_id": r.contact_id,
                "name": r.name,
                "properties": r.properties,
                "occurred_at": r.at,
                "received_at": r.at,
                "source": "tracking",
                "idempotency_key": r.key,
            }
            for r in rows
        ],
    )
    inserted = {key: id_ for key, id_ in result}
    return [(r, inserted[r.key]) for r in rows if r.key in inserted]


_messages = cast(Table, Message.__table__)
_contacts = cast(Table, Contact.__table__)


def _write_back(session: Session, stored: list[_Row], half_life_days: float) -> None:
    """SQLite: human hits onto the message (total counts, first/last) and the contact
    (messages opened/clicked, last open/click, decayed score); PostgreSQL does this in
    ``_PG_STORE``."""
    per_message: dict[int, dict[str, Any]] = {}
    for r in stored:
        if not r.human:
            continue
        kind = "open" if r.name == "email.opened" else "click"
        agg = per_message.setdefault(
            r.message_id, {"open": [], "click": [], "contact_id": r.contact_id}
        )
        agg[kind].append(r.at)
    if not per_message:
        return
    firsts = {
        m.id: m
        for m in session.execute(
            select(Message.id, Message.first_open_at, Message.first_click_at).where(
                one_of(session, Message.id, per_message)
            )
        )
    }
    message_rows = []
    per_contact: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"opens": 0, "clicks": 0, "last_open": None, "last_click": None, "add": 0.0}
    )
    for message_id, agg in per_message.items():
        m = firsts[message_id]
        opens, clicks = sorted(agg["open"]), sorted(agg["click"])
        message_rows.append(
            {
                "m_id": message_id,
                "add_opens": len(opens),
                "add_clicks": len(clicks),
                "first_open": opens[0] if opens else None,
                "last_open": opens[-1] if opens else None,
                "first_click": clicks[0] if clicks else None,
                "last_click": clicks[-1] if clicks else None,
            }
        )
        c = per_contact[agg["contact_id"]]
        # Contacts count messages opened/clicked: a flood of hits on one message is one.
        if opens and m.first_open_at is None:
            c["opens"] += 1
            c["add"] += OPEN_WEIGHT
        if clicks and m.first_click_at is None:
            c["clicks"] += 1
            c["add"] += CLICK_WEIGHT
        for key, times in (("last_open", opens), ("last_click", clicks)):
            if times and (c[key] is None or times[-1] > c[key]):
                c[key] = times[-1]
    _update_messages(session, message_rows)
    _update_contacts(session, per_contact, half_life_days)


def _update_messages(session: Session, message_rows: list[dict[str, Any]]) -> None:
    mt = _messages.c
    session.execute(
        update(_messages)
        .where(mt.id == bindparam("m_id"))
        .values(
            opens=mt.opens + bindparam("add_opens"),
            clicks=mt.clicks + bindparam("add_clicks"),
            first_open_at=_coalesce(
                mt.first_open_at, bindparam("first_open", type_=mt.first_open_at.type)
            ),
            last_open_at=_greatest(
                mt.last_open_at, bindparam("last_open", type_=mt.last_open_at.type)
            ),
            first_click_at=_coalesce(
                mt.first_click_at, bindparam("first_click", type_=mt.first_click_at.type)
            ),
            last_click_at=_greatest(
                mt.last_click_at, bindparam("last_click", type_=mt.last_click_at.type)
            ),
        ),
        message_rows,
        execution_options={"synchronize_session": False},
    )


def _update_contacts(
    session: Session, per_contact: dict[int, dict[str, Any]], half_life_days: float
) -> None:
    current = session.execute(
        select(
            Contact.id, Contact.engagement_score, Contact.last_open_at, Contact.last_click_at
        ).where(one_of(session, Contact.id, list(per_contact)))
    ).all()
    contact_rows = []
    for row in current:
        c = per_contact[row.id]
        last_open = max(filter(None, (row.last_open_at, c["last_open"])), default=None)
        last_click = max(filter(None, (row.last_click_at, c["last_click"])), default=None)
        previous = max(filter(None, (row.last_open_at, row.last_click_at)), default=None)
        now = max(filter(None, (c["last_open"], c["last_click"])))
        score = decayed(row.engagement_score, previous, now, half_life_days) + c["add"]
        contact_rows.append(
            {
                "c_id": row.id,
                "add_opens": c["opens"],
                "add_clicks": c["clicks"],
                "new_last_open": last_open,
                "new_last_click": last_click,
                "new_score": round(score, 6),
            }
        )
    ct = _contacts.c
    session.execute(
        update(_contacts)
        .where(ct.id == bindparam("c_id"))
        .values(
            opens=ct.opens + bindparam("add_opens"),
            clicks=ct.clicks + bindparam("add_clicks"),
            last_open_at=bindparam("new_last_open", type_=ct.last_open_at.type),
            last_click_at=bindparam("new_last_click", type_=ct.last_click_at.type),
            engagement_score=bindparam("new_score"),
            inactive_since=None,  # engaging again ends a sunset
        ),
        contact_rows,
        execution_options={"synchronize_session": False},
    )


def _coalesce(column: Any, value: Any) -> Any:
    from sqlalchemy import func

    return func.coalesce(column, value)


def _greatest(column: Any, value: Any) -> Any:
    from sqlalchemy import case

    return case(
        (column.is_(None), value), (value.is_(None), column), (value > column, value), else_=column
    )
