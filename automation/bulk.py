"""Set-based writes and lookups of many rows, each with its own values, in one statement.

On PostgreSQL a batch of a thousand rows goes as a few typed arrays (``unnest``), so the
statement stays short, is parsed once and costs one round trip; a thousand-row VALUES
list or IN list is instead rebuilt and re-parsed for every batch, which costs more than
the write itself. SQLite runs in-process, where executemany costs about the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Table, bindparam, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from automation.db import UTCDateTime, is_postgres


def _pg_values(column: Any, values: list[Any]) -> tuple[str, list[Any]]:
    """The SQL array type for ``column`` and the values as the driver should send them."""
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "TIMESTAMP[]", [kind.process_bind_param(v, None) for v in values]  # type: ignore[arg-type]  # dialect unused
    if isinstance(kind, JSON):
        return "JSONB[]", [None if v is None else json.dumps(v) for v in values]
    sql_type = kind.compile(dialect=postgresql.dialect())
    return f"{sql_type}[]", [getattr(v, "value", v) for v in values]


def _table(target: Any) -> Table:
    """A Table from a mapped class or a Table."""
    table: Table = getattr(target, "__table__", target)
    return table


def update_rows(
    session: Session,
    target: Any,
    rows: Sequence[dict[str, Any]],
    *,
    key: str = "id",
    guard: dict[str, Any] | None = None,
) -> None:
    """``UPDATE table SET <row's columns> WHERE key = row[key] [AND guard columns match]``
    for every row; every row must carry the same columns. ``target``: a model or Table."""
    if not rows:
        return
    table = _table(target)
    columns = [c for c in rows[0] if c != key]
    guard = guard or {}
    if not is_postgres(session):
        stmt = (
            update(table)
            .where(table.c[key] == bindparam("b_key"))
            .values({c: bindparam(f"b_{c}", type_=table.c[c].type) for c in columns})
        )
        for name, value in guard.items():
            stmt = stmt.where(table.c[name] == value)
        session.execute(
            stmt,
            [{"b_key": row[key], **{f"b_{c}": row[c] for c in columns}} for row in rows],
        )
        return
    # Identifiers come from the table definition, values only as bound arrays.
    params: dict[str, Any] = {}
    arrays = []
    for i, name in enumerate([key, *columns]):
        array_type, values = _pg_values(table.c[name], [row[name] for row in rows])
        params[f"a{i}"] = values
        arrays.append(f"CAST(:a{i} AS {array_type})")
    assignments = ", ".join(f"{c} = v.{c}" for c in columns)
    conditions = [f"t.{key} = v.{key}"]
    for j, (name, value) in enumerate(guard.items()):
        params[f"g{j}"] = value
        conditions.append(f"t.{name} = :g{j}")
    sql = (
        f"UPDATE {table.name} AS t SET {assignments} "  # noqa: S608  # identifiers from metadata
        f"FROM unnest({', '.join(arrays)}) AS v({', '.join([key, *columns])}) "
        f"WHERE {' AND '.join(conditions)}"
    )
    session.execute(text(sql), params)


def insert_rows(
    session: Session,
    target: Any,
    rows: Sequence[dict[str, Any]],
    *,
    returning: Sequence[str] = (),
    skip_conflicts: bool = False,
) -> list[Any]:
    """INSERT every row (all with the same columns); ``skip_conflicts`` adds ON CONFLICT
    DO NOTHING. Returns the ``returning`` columns of the inserted rows (order not kept)."""
    if not rows:
        return []
    table = _table(target)
    columns = list(rows[0])
    if not is_postgres(session):
        from sqlalchemy.dialects import sqlite

        stmt: Any = sqlite.insert(table)
        if skip_conflicts:
            stmt = stmt.on_conflict_do_nothing()
        if returning:
            stmt = stmt.returning(*[table.c[c] for c in returning])
            return list(session.execute(stmt, list(rows)).all())
        session.execute(stmt, list(rows))
        return []
    params: dict[str, Any] = {}
    arrays = []
    for i, name in enumerate(columns):
        array_type, values = _pg_values(table.c[name], [row[name] for row in rows])
        params[f"a{i}"] = values
        arrays.append(f"CAST(:a{i} AS {array_type})")
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608  # identifiers from metadata
        f"SELECT * FROM unnest({', '.join(arrays)})"
    )
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
        return list(session.execute(text(sql), params).all())
    session.execute(text(sql), params)
    return []
