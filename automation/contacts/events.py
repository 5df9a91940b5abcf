"""Behaviour event ingestion: validated per item, stored set-wise and idempotently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.bulk import insert_rows
from automation.contacts.models import Contact, Event, new_contact_row
from automation.contacts.schema import EventIn
from automation.contacts.suppressions import erased_addresses
from automation.db import dialect_insert, one_of
from automation.errors import FieldError, field_errors
from automation.reactions import IngestedEvent, react_to_events


@dataclass
class ItemResult:
    index: int
    status: str  # created | duplicate | error
    id: int | None = None
    contact_id: int | None = None
    errors: list[FieldError] = field(default_factory=list)


@dataclass
class BatchResult:
    results: list[ItemResult]

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)


def _contact_ids_by_email(session: Session, emails: set[str]) -> dict[str, int]:
    if not emails:
        return {}
    rows = session.execute(
        select(Contact.email, Contact.id).where(one_of(session, Contact.email, sorted(emails)))
    ).all()  # fetched at once: iterating the result fetches row by row
    return dict(rows)


def _resolve_contacts(
    session: Session, items: list[tuple[int, EventIn]], source: str
) -> tuple[dict[int, int], dict[int, FieldError]]:
    """Contact id per item index; contacts identified by email are created when unknown,
    except an erased contact's address: events never bring it back."""
    emails = {item.email for _, item in items if item.email}
    externals = {item.external_id for _, item in items if item.external_id and not item.email}
    by_email = _contact_ids_by_email(session, emails)
    erased = (
        erased_addresses(session, emails - set(by_email)) if len(by_email) < len(emails) else set()
    )
    unknown = sorted(emails - set(by_email) - erased)
    if unknown:
        # Usually every sender is known: create only the missing contacts. executemany
        # keeps one cached statement (a 1,000-row VALUES list would be compiled afresh
        # on every batch, which cost more than the whole insert).
        now = clock.now()
        session.execute(
            dialect_insert(session, Contact).on_conflict_do_nothing(index_elements=["email"]),
            [new_contact_row(e, source, now) for e in unknown],
        )
        by_email.update(_contact_ids_by_email(session, set(unknown)))
    by_external = (
        dict(
            session.execute(
                select(Contact.external_id, Contact.id).where(Contact.external_id.in_(externals))
            ).all()
        )
        if externals
        else {}
    )
    resolved: dict[int, int] = {}
    missing: dict[int, FieldError] = {}
    for index, item in items:
        if item.email in erased:
            missing[index] = FieldError(
                f"events[{index}].email",
                "this address belonged to an erased contact: events do not re-create it",
            )
        elif item.email:
            resolved[index] = by_email[item.email]
        elif item.external_id in by_external:
            resolved[index] = by_external[item.external_id]
        else:
            missing[index] = FieldError(
                f"events[{index}].external_id", "no contact has this external_id"
            )
    return resolved, missing


def ingest_events(session: Session, raw_items: Sequence[Any], *, source: str) -> BatchResult:
    """Store a batch of events; bad items are reported by index and field, good ones kept."""
    results: dict[int, ItemResult] = {}
    valid: list[tuple[int, EventIn]] = []
    for index, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            results[index] = ItemResult(
                index, "error", errors=[FieldError(f"events[{index}]", "must be a JSON object")]
            )
            continue
        try:
            item = EventIn.model_validate(raw)
        except ValidationError as exc:
            results[index] = ItemResult(index, "error", errors=field_errors(exc, ("events", index)))
            continue
        if not item.email and not item.external_id:
            results[index] = ItemResult(
                index,
                "error",
                errors=[FieldError(f"events[{index}].email", "give email or external_id")],
            )
            continue
        if item.occurred_at is not None and item.occurred_at.tzinfo is None:
            results[index] = ItemResult(
                index,
                "error",
                errors=[
                    FieldError(f"events[{index}].occurred_at", "needs a time zone offset, e.g. Z")
                ],
            )
            continue
        valid.append((index, item))

    contact_of, missing = _resolve_contacts(session, valid, source)
    for index, error in missing.items():
        results[index] = ItemResult(index, "error", errors=[error])

    now = clock.now()
    seen_keys: dict[str, int] = {}
    rows: list[tuple[int, dict[str, Any]]] = []
    for index, item in valid:
        if index in missing:
            continue
        key = item.idempotency_key
        if key is not None and key in seen_keys:
            results[index] = ItemResult(index, "duplicate", contact_id=contact_of[index])
            continue
        if key is not None:
            seen_keys[key] = index
        rows.append(
            (
                index,
                {
                    "contact_id": contact_of[index],
                    "name": item.name,
                    "properties": item.properties,
                    "occurred_at": item.occurred_at or now,
                    "received_at": now,
                    "source": source,
                    "idempotency_key": key,
                },
            )
        )

    new_events = _insert_events(session, rows, results)
    react_to_events(session, new_events)
    return BatchResult([results[i] for i in sorted(results)])


def _insert_events(
    session: Session, rows: list[tuple[int, dict[str, Any]]], results: dict[int, ItemResult]
) -> list[IngestedEvent]:
    if not rows:
        return []
    keyed = [(i, r) for i, r in rows if r["idempotency_key"] is not None]
    plain = [(i, r) for i, r in rows if r["idempotency_key"] is None]
    created: list[tuple[int, int, dict[str, Any]]] = []
    table = Event
    if keyed:
        inserted = {
            key: event_id
            for event_id, key in insert_rows(
                session,
                table,
                [r for _, r in keyed],
                returning=["id", "idempotency_key"],
                skip_conflicts=True,
            )
        }
        for index, row in keyed:
            if row["idempotency_key"] in inserted:
                created.append((index, inserted[row["idempotency_key"]], row))
        existing_keys = [
            r["idempotency_key"] for _, r in keyed if r["idempotency_key"] not in inserted
        ]
        if existing_keys:
            existing = dict(
                session.execute(
                    select(Event.idempotency_key, Event.id).where(
                        Event.idempotency_key.in_(existing_keys)
                    )
                ).all()
            )
            for index, row in keyed:
                if row["idempotency_key"] in existing:
                    results[index] = ItemResult(
                        index,
                        "duplicate",
                        id=existing[row["idempotency_key"]],
                        contact_id=row["contact_id"],
                    )
    if plain:
        ids = insert_rows(session, table, [r for _, r in plain], new_ids=True)
        created.extend(
            (index, event_id, row) for (index, row), event_id in zip(plain, ids, strict=True)
        )
    out = []
    for index, event_id, row in created:
        results[index] = ItemResult(index, "created", id=event_id, contact_id=row["contact_id"])
        out.append(
            IngestedEvent(
                event_id, row["contact_id"], row["name"], row["properties"], row["occurred_at"]
            )
        )
    return out
