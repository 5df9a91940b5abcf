"""Rows in any table that point at a contact, found from the metadata.

Merge, GDPR export and erasure must reach every table that holds a contact's
data, including tables later modules add; reading the foreign keys keeps that
true without a list to maintain.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Column, Table, UniqueConstraint, and_, delete, select, tuple_, update
from sqlalchemy.orm import Session

from automation.db import Base


def contact_references() -> Iterator[tuple[Table, Column[Any]]]:
    """(table, column) for every column holding a foreign key to contacts.id. Every model is
    registered by then: ``automation.wiring``, which every process runs through
    ``build_runtime``, imports them all."""
    for table in Base.metadata.sorted_tables:
        if table.name == "contacts":
            continue
        for column in table.columns:
            if any(fk.column.table.name == "contacts" for fk in column.foreign_keys):
                yield table, column


def _unique_column_sets(table: Table, column: Column[Any]) -> list[list[Column[Any]]]:
    """Other columns that, together with ``column``, must be unique (PK or UNIQUE)."""
    sets = []
    candidates = [list(table.primary_key.columns)]
    candidates += [list(c.columns) for c in table.constraints if isinstance(c, UniqueConstraint)]
    candidates += [list(i.columns) for i in table.indexes if i.unique]
    for cols in candidates:
        if column in cols and len(cols) > 1:
            sets.append([c for c in cols if c is not column])
    return sets


def move_related_rows(session: Session, from_id: int, to_id: int) -> None:
    """Re-point every row of ``from_id`` to ``to_id``, dropping rows the survivor already has."""
    for table, column in contact_references():
        for others in _unique_column_sets(table, column):
            survivor_keys = select(*others).where(column == to_id)
            session.execute(
                delete(table).where(and_(column == from_id, tuple_(*others).in_(survivor_keys)))
            )
        session.execute(update(table).where(column == from_id).values({column.name: to_id}))


def delete_related_rows(session: Session, contact_ids: Sequence[int]) -> None:
    for table, column in reversed(list(contact_references())):
        session.execute(delete(table).where(column.in_(contact_ids)))


def export_related_rows(session: Session, contact_id: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for table, column in contact_references():
        rows = session.execute(select(table).where(column == contact_id)).mappings()
        out[table.name] = [dict(row) for row in rows]
    return out
