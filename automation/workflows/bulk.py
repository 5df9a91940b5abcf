"""Many rows, each with its own new values, in one statement.

The engine ends a batch with a thousand enrolments in a thousand different states (each
contact's wait ends at its own local time). On PostgreSQL that is one
``UPDATE ... FROM unnest(arrays)``; SQLite runs in-process, where executemany costs
about the same as one statement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Table, bindparam, text, update
from sqlalchemy.orm import Session

from automation.db import UTCDateTime, is_postgres


def _pg_values(column: Any, values: list[Any]) -> tuple[str, list[Any]]:
    """The SQL array type for ``column`` and the values as the driver should send them."""
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "TIMESTAMP[]", [kind.process_bind_param(v, None) for v in values]  # type: ignore[arg-type]  # dialect unused
    if isinstance(kind, JSON):
        return "JSONB[]", [None if v is None else json.dumps(v) for v in values]
    from sqlalchemy.dialects import postgresql

    sql_type = kind.compile(dialect=postgresql.dialect())
    return f"{sql_type}[]", [getattr(v, "value", v) for v in values]


def update_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: str = "id",
    guard: dict[str, Any] | None = None,
) -> None:
    """``UPDATE table SET <row's columns> WHERE key = row[key] [AND guard columns match]``
    for every row; every row must carry the same columns."""
    if not rows:
        return
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
