"""SQL fragments that differ between PostgreSQL and SQLite, with one meaning on both.

JSON access is typed: a value of the wrong JSON type reads as NULL, never as an error, so a
stored attribute whose field was re-declared with another type cannot break a query.
Text matching folds ASCII case only (A-Z), the one folding both databases and Python do
identically; ordering comparisons of text use byte order (``COLLATE "C"`` on PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Numeric,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    collate,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from automation.db import id_array
from automation.segments.fields import (
    ValueType,
)

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
ASCII_FOLD = str.maketrans(_UPPER, _LOWER)
LIKE_ESCAPE = "/"

JsonPath = tuple[str, ...]


def ascii_fold(text: str) -> str:
    return text.translate(ASCII_FOLD)


def like_pattern(needle: str, where: str) -> str:
    """A LIKE pattern matching ``needle`` literally: ``%`` and ``_`` in it are data."""
    escaped = (
        ascii_fold(needle)
        .replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    if where == "contains":
        return f"%{escaped}%"
    if where == "starts_with":
        return f"{escaped}%"
    return f"%{escaped}"


class Sql:
    """Builds the dialect's spelling of each fragment the compiler needs."""

    def __init__(self, dialect: str) -> None:
        if dialect not in ("postgresql", "sqlite"):
            raise NotImplementedError(f"segments do not support the {dialect} database")
        self.pg = dialect == "postgresql"

    # --- JSON documents (contacts.attributes, events.properties) ----------------------

    def _pg_node(self, doc: Any, path: JsonPath) -> ColumnElement[Any]:
        if len(path) == 1:
            return doc.op("->", return_type=JSONB)(literal(path[0], Text))
        return doc.op("#>", return_type=JSONB)(bindparam(None, list(path), ARRAY(Text)))

    def _pg_text(self, doc: Any, path: JsonPath) -> ColumnElement[Any]:
        if len(path) == 1:
            return doc.op("->>", return_type=Text)(literal(path[0], Text))
        return doc.op("#>>", return_type=Text)(bindparam(None, list(path), ARRAY(Text)))

    @staticmethod
    def _lite_path(path: JsonPath) -> str:
        return "$" + "".join(f'."{key}"' for key in path)

    def json_type_is(self, doc: Any, path: JsonPath, kind: ValueType) -> ColumnElement[bool]:
        if self.pg:
            name = {ValueType.NUMBER: "number", ValueType.BOOLEAN: "boolean"}.get(kind, "string")
            return func.jsonb_typeof(self._pg_node(doc, path)) == name
        kinds = {
            ValueType.NUMBER: ("integer", "real"),
            ValueType.BOOLEAN: ("true", "false"),
        }.get(kind, ("text",))
        return func.json_type(doc, self._lite_path(path)).in_(kinds)

    def json_value(self, doc: Any, path: JsonPath, kind: ValueType) -> ColumnElement[Any]:
        """The value at ``path`` if it has the JSON type ``kind`` stands for, else NULL.
        Booleans read as the text 'true' / 'false'."""
        guard = self.json_type_is(doc, path, kind)
        if self.pg:
            raw = self._pg_text(doc, path)
            value = cast(raw, Numeric) if kind is ValueType.NUMBER else raw
        elif kind is ValueType.BOOLEAN:
            value = func.json_type(doc, self._lite_path(path))
        else:
            value = func.json_extract(doc, self._lite_path(path))
        return case((guard, value), else_=None)

    def indexed_attribute(self, doc: Any, key: str, kind: ValueType) -> ColumnElement[Any]:
        """PostgreSQL: the value of the top-level attribute ``key``, typed as ``json_value``
        types it, spelled with constants only. It is both the expression of an indexed
        field's index (automation/segments/field_indexes.py) and what the compiler emits
        for that field, so the planner matches the two: it matches an index expression only
        against constants, never a bound parameter. The constants are rendered by
        SQLAlchemy's literal quoting, and ``key`` is a declared field name (``[a-z][a-z0-9_]*``).
        Dates compare in byte order (``COLLATE "C"``), as ``ordered_text`` does."""
        assert self.pg

        def const(value: str) -> Any:
            return literal(value, Text, literal_execute=True)

        name = {ValueType.NUMBER: "number", ValueType.BOOLEAN: "boolean"}.get(kind, "string")
        guard = func.jsonb_typeof(doc.op("->", return_type=JSONB)(const(key))) == const(name)
        raw = doc.op("->>", return_type=Text)(const(key))
        value: Any = cast(raw, Numeric) if kind is ValueType.NUMBER else raw
        typed = case((guard, value), else_=None)
        return collate(typed, "C") if kind is ValueType.DATE else typed

    def json_equals_any(
        self, doc: Any, path: JsonPath, kind: ValueType, values: Sequence[Any]
    ) -> ColumnElement[bool]:
        """The value at ``path`` equals one of ``values`` (same JSON type)."""
        if self.pg:
            # Containment can use the GIN (jsonb_path_ops) index on the whole document, and
            # PostgreSQL estimates it well. It also holds for an array that merely contains
            # the value, which the second containment rules out exactly: a scalar never
            # contains an array. (A jsonb_typeof() check would be exact too, but is
            # estimated at 0.5% and so misleads the join planning.)
            def contains(leaf: Any) -> ColumnElement[bool]:
                for key in reversed(path):
                    leaf = {key: leaf}
                return doc.op("@>", is_comparison=True)(literal(leaf, JSONB))

            return and_(
                or_(*(contains(v) for v in values)), not_(or_(*(contains([v]) for v in values)))
            )
        return self.json_value(doc, path, kind).in_([self.bind_value(kind, v) for v in values])

    def json_is_set(self, doc: Any, path: JsonPath) -> ColumnElement[bool]:
        """Untyped presence (event properties): not missing, not null, not empty text."""
        if self.pg:
            node = self._pg_node(doc, path)
            return and_(func.jsonb_typeof(node) != "null", self._pg_text(doc, path) != "")
        lite = self._lite_path(path)
        return and_(
            func.json_type(doc, lite) != "null",
            or_(func.json_type(doc, lite) != "text", func.json_extract(doc, lite) != ""),
        )

    def bind_value(self, kind: ValueType, value: Any) -> Any:
        """A comparison value in the form json_value yields."""
        if kind is ValueType.BOOLEAN:
            return "true" if value else "false"
        return value

    def json_number(self, value: Any) -> Any:
        """A number to compare with json_value(..., NUMBER). On PostgreSQL that is numeric,
        bound as text: binding a float8 would round it to 15 digits on the way."""
        return cast(literal(json.dumps(value), Text), Numeric) if self.pg else value

    # --- text --------------------------------------------------------------------------

    def like(self, expr: Any, needle: str, where: str) -> ColumnElement[bool]:
        """ASCII-case-insensitive contains / starts_with / ends_with, wildcards as data."""
        pattern = like_pattern(needle, where)
        if self.pg:
            folded = func.translate(expr, _UPPER, _LOWER)
            return folded.like(literal(pattern, Text), escape=LIKE_ESCAPE)
        # SQLite's LIKE already ignores case for A-Z only.
        return expr.like(literal(pattern, Text), escape=LIKE_ESCAPE)

    def ordered_text(self, expr: Any) -> Any:
        """Text compared in byte (code point) order, as Python compares str."""
        return collate(expr, "C") if self.pg else expr

    # --- id lists ----------------------------------------------------------------------

    def id_rows(self, ids: Sequence[int]) -> Any:
        """A FROM clause with one row per id, in column ``id``, from one bound parameter."""
        if self.pg:
            return func.unnest(id_array(ids)).table_valued("id").render_derived()
        rows = func.json_each(literal(json.dumps(list(ids)), Text)).table_valued("value")
        return select(rows.c.value.label("id")).subquery()

    def ids_in(self, column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
        """``column`` is one of ``ids``, with one bound parameter however many ids."""
        if self.pg:
            return column == any_(id_array(ids))
        listed = func.json_each(literal(json.dumps(list(ids)), Text)).table_valued("value")
        return column.in_(select(listed.c.value))
