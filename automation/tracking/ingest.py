"""Batch ingestion of tracking hits: events, message engagement, contact engagement.

One batch is a handful of statements whatever its size: one SELECT of the messages, one
INSERT … ON CONFLICT DO NOTHING RETURNING of the events (a hit's random id is its
idempotency key, so a replayed batch inserts nothing and counts nothing), one executemany
UPDATE of the messages and one of the contacts. Only hits that are new *and* human move
counters and scores; machine hits are stored as events with ``machine: true`` so reports
can show both.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.orm import Session

from automation.contacts.models import Contact, Event
from automation.db import dialect_insert, is_postgres, one_of
from automation.email.models import Message, TemplateVersion
from automation.reactions import IngestedEvent, react_to_events
from automation.tracking.classify import burst_hits, classify
from automation.tracking.hits import Hit

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
    classes: Counter[str] = field(default_factory=Counter)

    def add(self, other: IngestReport) -> None:
        self.received += other.received
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.dropped += other.dropped
        self.human += other.human
        self.machine += other.machine
        self.classes.update(other.classes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "human": self.human,
            "machine": self.machine,
        }


# Where a message came from, copied onto its engagement events (for reports and branches).
_ORIGIN = ("campaign_id", "campaign_variant_id", "enrollment_id", "workflow_id", "workflow_node_id")


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def decayed(score: float, since: datetime | None, now: datetime, half_life_days: float) -> float:
    """``score`` as it stands at ``now`` after halving every ``half_life_days``."""
    if since is None or score == 0:
        return score
    days = max((now - since).total_seconds(), 0) / 86400
    return score * math.pow(0.5, days / half_life_days)


def ingest_hits(
    session: Session, hits: Sequence[Hit], *, half_life_days: float = 30.0
) -> IngestReport:
    report = IngestReport(received=len(hits))
    unique = list({h.id: h for h in hits}.values())
    report.duplicates += len(hits) - len(unique)
    if not unique:
        return report
    rows = session.execute(
        select(
            Message.id,
            Message.token_nonce,
            Message.template_version_id,
            Message.contact_id,
            Message.sent_at,
            Message.campaign_id,
            Message.campaign_variant_id,
            Message.enrollment_id,
            Message.workflow_id,
            Message.workflow_node_id,
            Message.first_open_at,
            Message.first_click_at,
            TemplateVersion.template_id,
            TemplateVersion.links,
        )
        .join(TemplateVersion, TemplateVersion.id == Message.template_version_id)
        .where(one_of(session, Message.id, {h.message_id for h in unique}))
    ).all()
    messages = {r.id: r for r in rows}
    # The honeypot is no link a person could click: "all links" means the visible ones.
    bursts = burst_hits(
        unique, {r.id: sum(1 for link in r.links if not link.get("honeypot")) for r in rows}
    )
    events: list[dict[str, Any]] = []
    verdicts: dict[str, bool] = {}
    for hit in unique:
        m = messages.get(hit.message_id)
        if (
            m is None
            or (m.token_nonce & 0xFFFFFFFF) != hit.nonce
            or m.template_version_id != hit.template_version_id
        ):
            report.dropped += 1
            continue
        link: dict[str, Any] = {}
        if hit.kind == "click":
            if hit.link_index is None or hit.link_index >= len(m.links):
                report.dropped += 1
                continue
            link = m.links[hit.link_index]
        sent = m.sent_at.timestamp() if m.sent_at else None
        verdict = classify(hit, sent, honeypot=bool(link.get("honeypot")), burst=hit.id in bursts)
        properties: dict[str, Any] = {
            "message_id": m.id,
            "template_id": m.template_id,
            "template_version_id": m.template_version_id,
            "machine": verdict.machine,
            "classification": verdict.cls.value,
            "reasons": verdict.reasons,
            "user_agent": hit.user_agent,
            "ip": hit.ip,
        }
        for key in _ORIGIN:
            if getattr(m, key) is not None:
                properties[key] = getattr(m, key)
        if hit.kind == "click":
            properties["url"] = link.get("url")
            properties["link_index"] = hit.link_index
        verdicts[hit.id] = verdict.machine
        report.classes[verdict.cls.value] += 1
        events.append(
            {
                "contact_id": m.contact_id,
                "name": EVENT_NAMES[hit.kind],
                "properties": properties,
                "occurred_at": _at(hit.at),
                "received_at": _at(hit.at),
                "source": "tracking",
                "idempotency_key": f"hit:{hit.id}",
            }
        )
    if not events:
        return report
    if is_postgres(session):
        # One statement: events, message counters and contact engagement (below).
        inserted = _pg_store(session, events, half_life_days)
    else:
        inserted = _insert_events(session, events)
    new_ids = {key: event_id for event_id, key in inserted}
    report.duplicates += len(events) - len(new_ids)
    stored = [e for e in events if e["idempotency_key"] in new_ids]
    report.stored = len(stored)
    if is_postgres(session):
        report.machine = sum(1 for e in stored if e["properties"]["machine"])
        report.human = len(stored) - report.machine
    else:
        _write_back(session, stored, messages, half_life_days, report)
    react_to_events(
        session,
        [
            IngestedEvent(
                new_ids[e["idempotency_key"]],
                e["contact_id"],
                e["name"],
                e["properties"],
                e["occurred_at"],
            )
            for e in stored
        ],
    )
    return report


def _naive(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None


# PostgreSQL: each batch statement takes the whole batch as one JSON document
# (jsonb_to_recordset): one parameter, a statement text that is the same for any batch
# size, and no per-row or per-element adaptation in Python (json.dumps is C). SQLite (the
# embedded default, small volumes) uses the portable executemany forms below.
_PG_INSERT_EVENTS = text(
    """
    INSERT INTO events (contact_id, name, properties, occurred_at, received_at, source,
                        idempotency_key)
    SELECT v.c, v.n, v.p, v.o, v.o, 'tracking', v.k
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(c bigint, n text, p jsonb, o timestamp, k text)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, idempotency_key
    """
)
_PG_UPDATE_MESSAGES = text(
    """
    UPDATE messages AS m
    SET opens = m.opens + v.ao, clicks = m.clicks + v.ac,
        first_open_at = coalesce(m.first_open_at, v.fo),
        last_open_at = greatest(m.last_open_at, v.lo),
        first_click_at = coalesce(m.first_click_at, v.fc),
        last_click_at = greatest(m.last_click_at, v.lc)
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(id bigint, ao int, ac int, fo timestamp, lo timestamp, fc timestamp,
              lc timestamp)
    WHERE m.id = v.id
    """
)
_PG_UPDATE_CONTACTS = text(
    """
    UPDATE contacts AS c
    SET opens = c.opens + v.ao, clicks = c.clicks + v.ac, last_open_at = v.lo,
        last_click_at = v.lc, engagement_score = v.s, inactive_since = NULL
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(id bigint, ao int, ac int, lo timestamp, lc timestamp, s float8)
    WHERE c.id = v.id
    """
)


# The whole batch in one round trip (PostgreSQL). All parts of a WITH statement see the
# same snapshot, so `firsts` reads each message as it was before `message_counts` updated
# it: a contact's "messages opened" grows only for a message opened for the first time
# (a flood on one message counts once). Only new events (not conflicting: a replayed hit
# inserts nothing) of human hits move counters. The score decays from the contact's last
# engagement to the batch's latest, by the half-life, then gains 1 per newly opened and 3
# per newly clicked message: the same rule as `decayed` below (SQLite's path).
_PG_STORE = text(
    """
    WITH v AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
            AS v(c bigint, n text, p jsonb, o timestamp, k text, m bigint, h boolean)
    ), ins AS (
        INSERT INTO events (contact_id, name, properties, occurred_at, received_at, source,
                            idempotency_key)
        SELECT c, n, p, o, o, 'tracking', k FROM v
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, idempotency_key
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
    SELECT id, idempotency_key FROM ins
    """
)


def _pg_store(session: Session, events: list[dict[str, Any]], half_life_days: float) -> list[Any]:
    rows = [
        {
            "c": e["contact_id"],
            "n": e["name"],
            "p": e["properties"],
            "o": _naive(e["occurred_at"]).isoformat(),  # type: ignore[union-attr]
            "k": e["idempotency_key"],
            "m": e["properties"]["message_id"],
            "h": not e["properties"]["machine"],
        }
        for e in events
    ]
    return list(
        session.execute(
            _PG_STORE,
            {
                "rows": json.dumps(rows),
                "half": half_life_days,
                "open_weight": OPEN_WEIGHT,
                "click_weight": CLICK_WEIGHT,
            },
        ).all()
    )


def _insert_events(session: Session, events: list[dict[str, Any]]) -> list[Any]:
    if is_postgres(session):
        return list(
            session.execute(
                _PG_INSERT_EVENTS,
                _rows(
                    events,
                    {
                        "c": "contact_id",
                        "n": "name",
                        "p": "properties",
                        "o": "occurred_at",
                        "k": "idempotency_key",
                    },
                ),
            ).all()
        )
    return list(
        session.execute(
            dialect_insert(session, Event)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(Event.id, Event.idempotency_key),
            events,
        ).all()
    )


def _rows(rows: list[dict[str, Any]], names: dict[str, str]) -> dict[str, str]:
    """``{"rows": <JSON array>}`` with the columns renamed; times as naive UTC ISO text."""

    def value(v: Any) -> Any:
        return _naive(v).isoformat() if isinstance(v, datetime) else v  # type: ignore[union-attr]

    return {"rows": json.dumps([{s: value(r[k]) for s, k in names.items()} for r in rows])}


_messages = cast(Table, Message.__table__)
_contacts = cast(Table, Contact.__table__)


def _write_back(
    session: Session,
    stored: list[dict[str, Any]],
    messages: dict[int, Any],
    half_life_days: float,
    report: IngestReport,
) -> None:
    """Human hits onto the message (total counts, first/last) and the contact (messages
    opened/clicked, last open/click, decayed score)."""
    per_message: dict[int, dict[str, Any]] = {}
    for e in stored:
        p = e["properties"]
        if p["machine"]:
            report.machine += 1
            continue
        report.human += 1
        kind = "open" if e["name"] == "email.opened" else "click"
        agg = per_message.setdefault(
            p["message_id"], {"open": [], "click": [], "contact_id": e["contact_id"]}
        )
        agg[kind].append(e["occurred_at"])
    if not per_message:
        return
    message_rows = []
    per_contact: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"opens": 0, "clicks": 0, "last_open": None, "last_click": None, "add": 0.0}
    )
    for message_id, agg in per_message.items():
        m = messages[message_id]
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
    if is_postgres(session):
        session.execute(
            _PG_UPDATE_MESSAGES,
            _rows(
                message_rows,
                {
                    "id": "m_id",
                    "ao": "add_opens",
                    "ac": "add_clicks",
                    "fo": "first_open",
                    "lo": "last_open",
                    "fc": "first_click",
                    "lc": "last_click",
                },
            ),
        )
    else:
        _update_messages(session, message_rows)
    _update_contacts(session, per_contact, messages, half_life_days)


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
    session: Session,
    per_contact: dict[int, dict[str, Any]],
    messages: dict[int, Any],
    half_life_days: float,
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
    if is_postgres(session):
        session.execute(
            _PG_UPDATE_CONTACTS,
            _rows(
                contact_rows,
                {
                    "id": "c_id",
                    "ao": "add_opens",
                    "ac": "add_clicks",
                    "lo": "new_last_open",
                    "lc": "new_last_click",
                    "s": "new_score",
                },
            ),
        )
        return
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
