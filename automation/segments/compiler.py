"""Compiles a filter tree to SQL: a ``Select`` of matching contact ids, bound parameters only.

Three-valued logic is the trap here: ``NOT (x > 5)`` is NULL, not true, when x is NULL, while
the Python evaluator says "not (no value > 5)" is true. So negations are pushed down to the
leaves at compile time (each leaf knows its exact complement), and positive leaves stay
plain comparisons that indexes can serve. Behaviour, tag and list conditions are sets of
contact ids: ``contacts.id IN (subquery)`` when positive (a semi-join), ``NOT EXISTS`` when
negated (an anti-join; PostgreSQL plans ``NOT IN`` with a subquery far worse).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    String,
    Table,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Contact, ContactTag, Event, Tag
from automation.errors import FieldError, InvalidInput
from automation.segments import schema
from automation.segments.catalog import (
    Catalog,
)
from automation.segments.context import load_catalog, require_usable
from automation.segments.dialects import Sql
from automation.segments.fields import (
    NEGATIVE,
    FieldSpec,
    Operator,
    ValueType,
)
from automation.segments.localdates import anniversaries, zones_by_local_date
from automation.segments.models import SegmentMembership
from automation.segments.values import (
    parse_instant,
    property_value_kind,
)

contacts = cast(Table, Contact.__table__)
events = cast(Table, Event.__table__)
contact_tags = cast(Table, ContactTag.__table__)
tags = cast(Table, Tag.__table__)
memberships = cast(Table, SegmentMembership.__table__)

Op = Operator
RECEIVED_EVENTS = ("email.sent", "email.delivered")
EMAIL_EVENTS = {
    schema.EmailActivity.RECEIVED: RECEIVED_EVENTS,
    schema.EmailActivity.OPENED: ("email.opened",),
    schema.EmailActivity.CLICKED: ("email.clicked",),
}
EMAIL_FILTERS = ("template_id", "campaign_id", "workflow_id")
# The events a hit may flag ``machine: true`` (automation/tracking/ingest.py): conditions on
# them count people only unless they ask for machines too (include_machine).
MACHINE_FLAGGED = frozenset(("email.opened", "email.clicked"))
RELATIVE_DATES = (
    Operator.WITHIN_LAST_DAYS,
    Operator.MORE_THAN_DAYS_AGO,
    Operator.IN_NEXT_DAYS,
    Operator.ANNIVERSARY_TODAY,
)


# --- a small boolean algebra whose negation is pushed to the leaves --------------------


class Pred:
    def sql(self, negated: bool = False) -> ColumnElement[bool]:
        raise NotImplementedError


@dataclass(frozen=True)
class Atom(Pred):
    """A plain condition on the contacts row; NULL (unknown) counts as false."""

    expr: ColumnElement[bool]

    def sql(self, negated: bool = False) -> ColumnElement[bool]:
        return not_(func.coalesce(self.expr, false())) if negated else self.expr


@dataclass(frozen=True)
class InSet(Pred):
    """The contact is in a set given by a Select of contact ids."""

    ids: Select[Any]

    def sql(self, negated: bool = False) -> ColumnElement[bool]:
        if not negated:
            return contacts.c.id.in_(self.ids)
        sub = self.ids.subquery()
        return ~exists(select(literal(1)).select_from(sub).where(sub.c[0] == contacts.c.id))


@dataclass(frozen=True)
class Const(Pred):
    value: bool

    def sql(self, negated: bool = False) -> ColumnElement[bool]:
        return true() if self.value != negated else false()


@dataclass(frozen=True)
class Both(Pred):
    parts: tuple[Pred, ...]

    def sql(self, negated: bool = False) -> ColumnElement[bool]:
        clauses = [p.sql(negated) for p in self.parts]
        return or_(*clauses) if negated else and_(*clauses)


@dataclass(frozen=True)
class Either(Pred):
    parts: tuple[Pred, ...]

    def sql(self, negated: bool = False) -> ColumnElement[bool]:
        clauses = [p.sql(negated) for p in self.parts]
        return and_(*clauses) if negated else or_(*clauses)


@dataclass(frozen=True)
class Negation(Pred):
    part: Pred

    def sql(self, negated: bool = False) -> ColumnElement[bool]:
        return self.part.sql(not negated)


def both(*parts: Pred) -> Pred:
    kept = [p for p in parts if p != Const(True)]
    if any(p == Const(False) for p in kept):
        return Const(False)
    return kept[0] if len(kept) == 1 else Both(tuple(kept)) if kept else Const(True)


def either(*parts: Pred) -> Pred:
    kept = [p for p in parts if p != Const(False)]
    if any(p == Const(True) for p in kept):
        return Const(True)
    return kept[0] if len(kept) == 1 else Either(tuple(kept)) if kept else Const(False)


def negate(part: Pred) -> Pred:
    if isinstance(part, Const):
        return Const(not part.value)
    if isinstance(part, Negation):
        return part.part
    return Negation(part)


# --- the compiler -------------------------------------------------------------------


def json_kind(kind: ValueType) -> ValueType:
    """The JSON type a field type is stored as (choices and dates are JSON strings)."""
    if kind in (ValueType.CHOICE, ValueType.DATE, ValueType.DATETIME):
        return ValueType.TEXT
    return kind


class Compiler:
    def __init__(
        self,
        catalog: Catalog,
        dialect: str,
        now: datetime,
        among_ids: Sequence[int] | None = None,
    ) -> None:
        self.catalog = catalog
        self.sql = Sql(dialect)
        self.now = now
        self.among_ids = among_ids
        self._inlining: list[int] = []

    # groups

    def tree(self, tree: schema.Filter) -> Pred:
        return both(*(self.node(n) for n in tree.conditions))

    def node(self, node: schema.Node) -> Pred:
        match node:
            case schema.AllGroup():
                return both(*(self.node(n) for n in node.all))
            case schema.AnyGroup():
                return either(*(self.node(n) for n in node.any))
            case schema.NotGroup():
                return negate(self.node(node.not_))
            case schema.FieldCondition():
                return self.field(node)
            case schema.TagCondition():
                return self.tags(node)
            case schema.EventCondition():
                return self.event(node)
            case schema.LastPerformedCondition():
                return self.last_performed(node)
            case schema.EmailCondition():
                return self.email(node)
            case schema.SegmentCondition():
                return self.segment(node)
            case schema.TooDeep():
                raise TypeError("a node nested too deep never survives parsing")
            case _:
                assert_never(node)

    def _ids(self, query: Select[Any], column: Any) -> Select[Any]:
        """A contact-id subquery, narrowed to the batch being evaluated (if any) so that
        PostgreSQL probes indexes per contact instead of scanning a whole range."""
        if self.among_ids is not None:
            query = query.where(self.sql.ids_in(column, self.among_ids))
        return query

    # contact fields and attributes

    def field(self, node: schema.FieldCondition) -> Pred:
        spec = self.catalog.field_spec(node.field)
        if spec is None:
            raise InvalidInput(FieldError("field", f"unknown field {node.field!r}"))
        if node.operator in NEGATIVE:
            return negate(self._field(spec, NEGATIVE[node.operator], node.value))
        return self._field(spec, node.operator, node.value)

    def _field_expr(self, spec: FieldSpec) -> Any:
        if spec.column is not None:
            column = contacts.c[spec.column]
            if spec.type in (ValueType.TEXT, ValueType.CHOICE):
                return type_coerce(column, String)  # plain text, no enum processing
            return column
        assert spec.attribute is not None
        return self.sql.json_value(contacts.c.attributes, (spec.attribute,), json_kind(spec.type))

    def _field(self, spec: FieldSpec, op: Operator, value: Any) -> Pred:
        if (
            spec.attribute is not None
            and spec.indexed
            and self.sql.pg
            and spec.type is not ValueType.DATETIME
            and op not in RELATIVE_DATES
        ):
            # An indexed field: exactly its index's expression, which PostgreSQL can scan
            # (and combine with other indexes) instead of rechecking the GIN candidates.
            indexed = self.sql.indexed_attribute(contacts.c.attributes, spec.attribute, spec.type)
            return Atom(self._compare(indexed, spec.type, op, value, in_json=True, collated=True))
        expr = self._field_expr(spec)
        if (
            spec.attribute is not None
            and self.sql.pg
            and op in (Op.EQUALS, Op.IN)
            and spec.type is not ValueType.DATETIME
        ):
            values = value if op is Op.IN else [value]
            return Atom(
                self.sql.json_equals_any(
                    contacts.c.attributes, (spec.attribute,), json_kind(spec.type), values
                )
            )
        if spec.type is ValueType.DATE and op in RELATIVE_DATES:
            return Atom(self._local_date(expr, op, value))
        if spec.type is ValueType.DATETIME:
            return Atom(self._instant(expr, op, value))
        return Atom(self._compare(expr, spec.type, op, value, in_json=spec.attribute is not None))

    def _compare(
        self,
        expr: Any,
        kind: ValueType,
        op: Operator,
        value: Any,
        *,
        in_json: bool,
        collated: bool = False,
    ) -> Any:
        """A positive comparison of a typed value (text, choice, number, boolean, date);
        ``in_json`` when ``expr`` was read from a JSON document, ``collated`` when it
        already compares in byte order."""
        if op is Op.IS_SET:
            if kind in (ValueType.TEXT, ValueType.CHOICE, ValueType.DATE):
                return and_(expr.is_not(None), expr != "")
            return expr.is_not(None)
        if op in (Op.CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH):
            return self.sql.like(expr, value, op.value)

        def bind(v: Any) -> Any:
            if kind is ValueType.NUMBER:
                return self.sql.json_number(v) if in_json else self._column_number(expr, v)
            return self.sql.bind_value(kind, v)

        if op is Op.EQUALS:
            return expr == bind(value)
        if op is Op.IN:
            return expr.in_([bind(v) for v in value])
        ordered = expr if kind is ValueType.NUMBER or collated else self.sql.ordered_text(expr)
        if op is Op.BETWEEN:
            return and_(ordered >= bind(value[0]), ordered <= bind(value[1]))
        return _order(op, ordered, bind(value))

    def _column_number(self, column: Any, value: Any) -> Any:
        """A number for a numeric column, bound with an explicit type. Left to itself
        SQLAlchemy types an IN list from its values, and PostgreSQL then casts 2.5 to
        INTEGER (3). An integer column keeps its own type when the value fits, so its
        index can serve; other values compare as numeric."""
        if isinstance(column.type, Integer):
            if isinstance(value, int) and -(2**31) < value < 2**31:
                return literal(value, Integer)
            return self.sql.json_number(value)
        return literal(value, Float)

    def _instant(self, expr: Any, op: Operator, value: Any) -> Any:
        """A positive comparison of a date-time (a column or max(occurred_at))."""
        now = self.now
        if op is Op.IS_SET:
            return expr.is_not(None)
        if op is Op.WITHIN_LAST_DAYS:
            return and_(expr >= now - timedelta(days=value), expr <= now)
        if op is Op.MORE_THAN_DAYS_AGO:
            return expr < now - timedelta(days=value)
        if op is Op.IN_NEXT_DAYS:
            return and_(expr >= now, expr <= now + timedelta(days=value))
        if op is Op.BETWEEN:
            return and_(expr >= parse_instant(value[0]), expr <= parse_instant(value[1]))
        return _order(op, expr, parse_instant(value))

    def _local_date(self, expr: Any, op: Operator, days: Any) -> Any:
        """A relative-date test of a calendar date against "today" in the contact's zone."""
        text = self.sql.ordered_text(expr)

        def on(today: Any) -> Any:
            if op is Op.ANNIVERSARY_TODAY:
                return func.substr(expr, 5, 6).in_(anniversaries(today))
            if op is Op.WITHIN_LAST_DAYS:
                low, high = today - timedelta(days=days), today
            elif op is Op.IN_NEXT_DAYS:
                low, high = today, today + timedelta(days=days)
            else:
                return text < (today - timedelta(days=days)).isoformat()
            return and_(text >= low.isoformat(), text <= high.isoformat())

        groups = zones_by_local_date(self.now)
        default_day = groups[0][0]
        others = [(contacts.c.time_zone.in_(zones), on(day)) for day, zones in groups[1:]]
        return case(*others, else_=on(default_day)) if others else on(default_day)

    # tags

    def tags(self, node: schema.TagCondition) -> Pred:
        names = sorted(set(node.tags))
        wants_all = node.operator in (schema.TagOperator.HAS_ALL, schema.TagOperator.HAS_NOT_ALL)
        if all(n in self.catalog.tags_looked_up for n in names):
            # Ids, not a subquery on names: PostgreSQL then estimates how many contacts
            # carry the tag from contact_tags statistics, and plans a hash join.
            ids = sorted(self.catalog.tag_ids[n] for n in names if n in self.catalog.tag_ids)
            if not ids or (wants_all and len(ids) < len(names)):
                has: Pred = Const(False)
                negative = node.operator in (
                    schema.TagOperator.HAS_NONE,
                    schema.TagOperator.HAS_NOT_ALL,
                )
                return negate(has) if negative else has
            tag_ids: Any = ids
        else:
            tag_ids = select(tags.c.id).where(tags.c.name.in_(names))
        query = select(contact_tags.c.contact_id).where(contact_tags.c.tag_id.in_(tag_ids))
        if wants_all and len(names) > 1:
            query = query.group_by(contact_tags.c.contact_id).having(func.count() == len(names))
        has = InSet(self._ids(query, contact_tags.c.contact_id))
        if node.operator in (schema.TagOperator.HAS_NONE, schema.TagOperator.HAS_NOT_ALL):
            return negate(has)
        return has

    # behaviour

    def _window(self, window: schema.Window) -> list[Any]:
        if window.within_days is not None:
            start = self.now - timedelta(days=window.within_days)
            return [events.c.occurred_at >= start, events.c.occurred_at <= self.now]
        if window.since is not None:
            return [events.c.occurred_at >= window.since, events.c.occurred_at <= self.now]
        return []

    def _property(self, cond: schema.PropertyCondition) -> Pred:
        path = tuple(cond.property.split("."))
        doc = events.c.properties
        op = cond.operator
        positive = NEGATIVE.get(op, op)
        if positive is Op.IS_SET:
            pred: Pred = Atom(self.sql.json_is_set(doc, path))
        else:
            kind = property_value_kind(positive, cond.value)
            assert kind is not None
            if self.sql.pg and positive in (Op.EQUALS, Op.IN):
                values = cond.value if positive is Op.IN else [cond.value]
                pred = Atom(self.sql.json_equals_any(doc, path, kind, values))
            else:
                expr = self.sql.json_value(doc, path, kind)
                pred = Atom(self._compare(expr, kind, positive, cond.value, in_json=True))
        return negate(pred) if op in NEGATIVE else pred

    def _event_filters(
        self, names: Sequence[str], window: schema.Window, extra: Sequence[Pred]
    ) -> list[Any]:
        name = events.c.name == names[0] if len(names) == 1 else events.c.name.in_(names)
        return [name, *self._window(window), *(p.sql() for p in extra)]

    def _at_least(self, times: int, filters: list[Any]) -> Pred:
        if times <= 0:
            return Const(True)
        query = select(events.c.contact_id).where(*filters)
        if times > 1:
            query = query.group_by(events.c.contact_id).having(func.count() >= times)
        return InSet(self._ids(query, events.c.contact_id))

    def _counted(
        self, operator: schema.CountOperator, times: int | None, filters: list[Any]
    ) -> Pred:
        n = times or 0
        if operator is schema.CountOperator.PERFORMED:
            return self._at_least(1, filters)
        if operator is schema.CountOperator.NOT_PERFORMED:
            return negate(self._at_least(1, filters))
        if operator is schema.CountOperator.AT_LEAST:
            return self._at_least(n, filters)
        if operator is schema.CountOperator.AT_MOST:
            return negate(self._at_least(n + 1, filters))
        return both(self._at_least(n, filters), negate(self._at_least(n + 1, filters)))

    def _human(self) -> Pred:
        """Not flagged ``machine: true``."""
        machine = self.sql.json_value(events.c.properties, ("machine",), ValueType.BOOLEAN)
        return negate(Atom(machine == "true"))

    def event(self, node: schema.EventCondition) -> Pred:
        where = [self._property(c) for c in node.where]
        if node.event in MACHINE_FLAGGED and not node.include_machine:
            where.append(self._human())
        filters = self._event_filters([node.event], node, where)
        return self._counted(node.operator, node.times, filters)

    def last_performed(self, node: schema.LastPerformedCondition) -> Pred:
        where = [self._property(c) for c in node.where]
        if node.last_performed in MACHINE_FLAGGED and not node.include_machine:
            where.append(self._human())
        filters = self._event_filters([node.last_performed], schema.Window(), where)
        op = node.operator
        positive = NEGATIVE.get(op, op)
        query = select(events.c.contact_id).where(*filters)
        if positive is not Op.IS_SET:
            latest = func.max(events.c.occurred_at)
            query = query.group_by(events.c.contact_id).having(
                self._instant(latest, positive, node.value)
            )
        pred = InSet(self._ids(query, events.c.contact_id))
        return negate(pred) if op in NEGATIVE else pred

    def email_filters(
        self, node: schema.EmailCondition, activity: schema.EmailActivity
    ) -> list[Any]:
        extra: list[Pred] = []
        for key in EMAIL_FILTERS:
            wanted = getattr(node, key)
            if wanted is not None:
                extra.append(
                    self._property(
                        schema.PropertyCondition(property=key, operator=Op.EQUALS, value=wanted)
                    )
                )
        if activity is not schema.EmailActivity.RECEIVED and not node.include_machine:
            extra.append(self._human())
        return self._event_filters(EMAIL_EVENTS[activity], node, extra)

    def email(self, node: schema.EmailCondition) -> Pred:
        if node.email is schema.EmailActivity.RECEIVED_NOT_OPENED:
            # A human click is recorded as an open too (tracking/ingest.py): "opened" is
            # the email.opened events alone.
            received = self._at_least(1, self.email_filters(node, schema.EmailActivity.RECEIVED))
            opened = self._at_least(1, self.email_filters(node, schema.EmailActivity.OPENED))
            return both(received, negate(opened))
        return self._counted(node.operator, node.times, self.email_filters(node, node.email))

    # segments

    def segment(self, node: schema.SegmentCondition) -> Pred:
        ref = self.catalog.segments.get(node.segment)
        if ref is None:
            raise InvalidInput(FieldError("segment", f"no segment with id {node.segment}"))
        if not ref.dynamic:
            query = select(memberships.c.contact_id).where(memberships.c.segment_id == ref.id)
            return InSet(self._ids(query, memberships.c.contact_id))
        if ref.tree is None:
            raise InvalidInput(
                FieldError("segment", f"segment {ref.name!r} has no usable definition")
            )
        if ref.id in self._inlining:
            raise InvalidInput(FieldError("segment", f"segment {ref.name!r} refers to itself"))
        # A dynamic segment is inlined rather than read from its materialised members, so
        # the answer never depends on when that segment was last refreshed.
        self._inlining.append(ref.id)
        try:
            return self.tree(ref.tree)
        finally:
            self._inlining.pop()


def _order(op: Operator, expr: Any, bound: Any) -> Any:
    comparisons: dict[Operator, Callable[[Any, Any], Any]] = {
        Op.GREATER_THAN: lambda a, b: a > b,
        Op.GREATER_OR_EQUAL: lambda a, b: a >= b,
        Op.LESS_THAN: lambda a, b: a < b,
        Op.LESS_OR_EQUAL: lambda a, b: a <= b,
        Op.EQUALS: lambda a, b: a == b,
    }
    return comparisons[op](expr, bound)


# --- the public API -----------------------------------------------------------------


def _prepared(
    session: Session, tree: schema.Filter | dict[str, Any], catalog: Catalog | None
) -> tuple[schema.Filter, Catalog]:
    parsed = schema.parse_filter(tree)
    if catalog is None:
        catalog = load_catalog(session, parsed)
        require_usable(catalog, parsed)
    return parsed, catalog


def condition(
    session: Session,
    tree: schema.Filter | dict[str, Any],
    *,
    among_ids: Sequence[int] | None = None,
    catalog: Catalog | None = None,
    now: datetime | None = None,
    negated: bool = False,
    restrict_to_among: bool = True,
) -> ColumnElement[bool]:
    """The tree as a WHERE clause over the ``contacts`` table.

    ``among_ids`` narrows the subqueries (events, tags, memberships) to those contacts and,
    unless ``restrict_to_among`` is False, the clause itself too. A caller that already
    restricts ``contacts.id`` passes False: PostgreSQL walks the primary key once per pair
    of values of two ``id = ANY(...)`` conditions (48 ms instead of 3 ms for 1,000 ids).

    The clause may be NULL (not false) for a contact with missing values, which a WHERE
    treats as false; so do not wrap it in NOT to get the complement: ask for
    ``negated=True``, which pushes the negation down to the leaves and is exact.
    """
    parsed, catalog = _prepared(session, tree, catalog)
    dialect = session.get_bind().dialect.name
    compiler = Compiler(catalog, dialect, now or clock.now(), among_ids)
    clause = compiler.tree(parsed).sql(negated)
    if among_ids is not None and restrict_to_among:
        clause = and_(compiler.sql.ids_in(contacts.c.id, among_ids), clause)
    return clause


def matching_ids(
    session: Session,
    tree: schema.Filter | dict[str, Any],
    *,
    among_ids: Sequence[int] | None = None,
    catalog: Catalog | None = None,
    now: datetime | None = None,
) -> Select[int]:
    """A Select of the ids of contacts matching ``tree`` (only among ``among_ids`` if given).

    Nothing runs until the caller executes it or nests it (``Contact.id.in_(...)``).
    """
    where = condition(session, tree, among_ids=among_ids, catalog=catalog, now=now)
    return select(contacts.c.id).where(where)


def count_matching(
    session: Session, tree: schema.Filter | dict[str, Any], *, catalog: Catalog | None = None
) -> int:
    """How many contacts match, computed live (nothing is materialised)."""
    where = condition(session, tree, catalog=catalog)
    return session.scalar(select(func.count()).select_from(contacts).where(where)) or 0
