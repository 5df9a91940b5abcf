"""Set-based writes of many rows, each with its own values, in one statement.

On PostgreSQL a batch of a thousand rows goes as one parameter — typed arrays for
updates (``UPDATE ... FROM unnest``), a JSON document for inserts — so the statement
text stays short and identical (parsed once, cached) and costs one round trip; a
thousand-row VALUES list is instead rebuilt and re-parsed for every batch, and
executemany pays a round trip per row. SQLite runs in-process, where executemany costs
about the same as one statement.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from datetime import UTC
from operator import itemgetter
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
    new_ids: bool = False,
) -> list[Any]:
    """INSERT every row (all with the same columns); ``skip_conflicts`` adds ON CONFLICT
    DO NOTHING. Returns the ``returning`` columns of the inserted rows (order not kept),
    or with ``new_ids`` the ``id`` each row got, in the order of ``rows``."""
    if not rows:
        return []
    table = _table(target)
    columns = list(rows[0])
    if not is_postgres(session):
        from sqlalchemy.dialects import sqlite

        stmt: Any = sqlite.insert(table)
        if new_ids:
            stmt = stmt.returning(table.c.id, sort_by_parameter_order=True)
            return list(session.scalars(stmt, list(rows)))
        if skip_conflicts:
            stmt = stmt.on_conflict_do_nothing()
        if returning:
            stmt = stmt.returning(*[table.c[c] for c in returning])
            return list(session.execute(stmt, list(rows)).all())
        session.execute(stmt, list(rows))
        return []
    # Inserts travel as one JSON document of row arrays: json.dumps escapes text at C
    # speed, where psycopg would escape every element of a text array in Python. Only
    # timestamps need converting first; enum members are written as their values.
    reads = []
    converted: list[tuple[int, Any]] = []
    for i, name in enumerate(columns):
        column = table.c[name]
        if isinstance(column.type, JSON):
            reads.append(f"r->{i}")
            continue
        sql_type = (
            "TIMESTAMP"
            if isinstance(column.type, UTCDateTime)
            else column.type.compile(dialect=postgresql.dialect())
        )
        reads.append(f"CAST(r->>{i} AS {sql_type})")
        if isinstance(column.type, UTCDateTime):
            converted.append((i, _instants()))
    cells = itemgetter(*columns) if len(columns) > 1 else (lambda row: (row[columns[0]],))
    values = []
    for row in rows:
        cell = list(cells(row))
        for i, convert in converted:
            cell[i] = convert(cell[i])
        values.append(cell)
    document = json.dumps(values, separators=(",", ":"), default=_enum_value)
    if new_ids:
        # Ids drawn from the sequence in a CTE (evaluated once per row), then returned in
        # the document's order: RETURNING alone promises no order.
        sql = (
            f"WITH d AS (SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) AS id, "  # noqa: S608  # identifiers from metadata
            "r, n FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS x(r, n)), "
            f"i AS (INSERT INTO {table.name} (id, {', '.join(columns)}) "
            f"SELECT id, {', '.join(reads)} FROM d) SELECT id FROM d ORDER BY n"
        )
        return list(session.scalars(text(sql), {"rows": document}).all())
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608  # identifiers from metadata
        f"SELECT {', '.join(reads)} FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r"
    )
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
        return list(session.execute(text(sql), {"rows": document}).all())
    session.execute(text(sql), {"rows": document})
    return []


def _instants() -> Any:
    """Timestamps as naive UTC text; a batch repeats the same few instants."""
    seen: dict[Any, Any] = {}

    def instant(value: Any) -> Any:
        if value is None:
            return None
        if value not in seen:
            seen[value] = value.astimezone(UTC).replace(tzinfo=None).isoformat()
        return seen[value]

    return instant


def _enum_value(value: Any) -> Any:
    """json.dumps' fallback: an enum member is written as its value."""
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
