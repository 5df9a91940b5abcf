"""Expression indexes for indexed custom fields (PostgreSQL).

An admin marks a custom field as indexed; ``sync_field_indexes`` then makes the database
match: it builds ``ix_contacts_attr_<field id>`` on exactly the expression the segment
compiler emits for that field (``Sql.indexed_attribute``), and drops the indexes of fields
no longer indexed or deleted. The attribute GIN index already serves equality on every
field; an expression index is a B-tree, so it also serves ranges (numbers, dates), returns
exact row sets without a recheck of each document, and combines with other indexes.

Builds run ``CREATE INDEX CONCURRENTLY`` (contacts stay writable), which cannot run inside a
transaction: this works on an autocommit connection of its own, from a Celery task, never
in a request. A build that fails leaves an invalid index behind, which is dropped at once;
the field's ``index_status`` is then ``failed`` with the database's message. The compiler
relies on a field's index only once its status is ``ready``; it is correct either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, select, text, update
from sqlalchemy.exc import DBAPIError

from automation.contacts.models import CustomField, FieldType, IndexStatus
from automation.segments.compiler import contacts
from automation.segments.dialects import Sql
from automation.segments.fields import (
    CUSTOM_TYPES,
)

PREFIX = "ix_contacts_attr_"
LOCK_KEY = 0x5E6_1DE7  # one sync at a time (pg_advisory_lock)
MAX_ERROR = 500

fields_table = cast(Table, CustomField.__table__)


@dataclass
class SyncReport:
    built: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"built": self.built, "dropped": self.dropped, "failed": self.failed}


def index_name(field_id: int) -> str:
    return f"{PREFIX}{field_id}"


def index_ddl(engine: Engine, field_id: int, name: str, kind: FieldType) -> str:
    """CREATE INDEX CONCURRENTLY for one field, its expression compiled by SQLAlchemy."""
    expression = Sql("postgresql").indexed_attribute(
        contacts.c.attributes, name, CUSTOM_TYPES[kind]
    )
    compiled = expression.compile(engine, compile_kwargs={"literal_binds": True})
    # The table's name qualifies the column in the compiled expression; an index
    # definition names its one table's columns bare.
    sql = str(compiled).replace("contacts.attributes", "attributes")
    return f'CREATE INDEX CONCURRENTLY "{index_name(field_id)}" ON contacts (({sql}))'


def _existing(conn: Connection) -> dict[str, bool]:
    """Our indexes on contacts, by name: valid (True) or left invalid by a failed build."""
    rows = conn.execute(
        text(
            "SELECT c.relname, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'contacts'::regclass AND starts_with(c.relname, :prefix)"
        ),
        {"prefix": PREFIX},
    )
    return {name: valid for name, valid in rows}


def _set_status(
    conn: Connection, field_id: int, status: IndexStatus, error: str | None = None
) -> None:
    conn.execute(
        update(fields_table)
        .where(fields_table.c.id == field_id)
        .values(index_status=status, index_error=error)
    )


def _drop(conn: Connection, name: str) -> None:
    conn.execute(text(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"'))


def sync_field_indexes(engine: Engine) -> SyncReport:
    """Build the missing indexes of indexed fields and drop the others; set each field's
    ``index_status``. Idempotent: the periodic reconciliation and every flag change run it."""
    report = SyncReport()
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            for indexed, status in ((True, IndexStatus.UNSUPPORTED), (False, IndexStatus.NONE)):
                conn.execute(
                    update(fields_table)
                    .where(fields_table.c.indexed.is_(indexed))
                    .values(index_status=status, index_error=None)
                )
        return report
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        try:
            _sync(engine, conn, report)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
    return report


def _sync(engine: Engine, conn: Connection, report: SyncReport) -> None:
    fields = conn.execute(
        select(
            fields_table.c.id,
            fields_table.c.name,
            fields_table.c.type,
            fields_table.c.indexed,
            fields_table.c.index_status,
        )
    ).all()
    wanted = {index_name(f.id): f for f in fields if f.indexed}
    existing = _existing(conn)
    for name, valid in existing.items():
        if name not in wanted or not valid:
            _drop(conn, name)
            report.dropped.append(name)
    for f in fields:
        name = index_name(f.id)
        if not f.indexed:
            if f.index_status is not IndexStatus.NONE:
                _set_status(conn, f.id, IndexStatus.NONE)
            continue
        if existing.get(name):
            if f.index_status is not IndexStatus.READY:
                _set_status(conn, f.id, IndexStatus.READY)
            continue
        if f.index_status is IndexStatus.FAILED:
            continue  # retried when an admin asks again (set_field_indexed), not periodically
        _set_status(conn, f.id, IndexStatus.BUILDING)
        try:
            conn.execute(text(index_ddl(engine, f.id, f.name, f.type)))
        except DBAPIError as exc:
            message = str(exc.orig or exc).strip().splitlines()[0][:MAX_ERROR]
            if name in _existing(conn):  # the invalid index a failed build leaves
                _drop(conn, name)
            _set_status(conn, f.id, IndexStatus.FAILED, message)
            report.failed[name] = message
            continue
        report.built.append(name)
        # Statistics of the new expression, before the compiler relies on it: without them
        # PostgreSQL guesses that 0.5% of contacts match any value, and plans per-row
        # probes of the other conditions where a hash join is right.
        conn.execute(text("ANALYZE contacts"))
        _set_status(conn, f.id, IndexStatus.READY)
