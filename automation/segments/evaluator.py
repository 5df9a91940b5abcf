"""Evaluates a filter tree in Python for one contact, over plain data loaded for that contact.

This is the reference the SQL compiler is tested against, so every rule mirrors one in
compiler.py: a missing or wrongly typed value makes a comparison false (and its negation
true), text matching folds A-Z only, dates are compared as ISO text, "today" for calendar
dates is the contact's local date. Each node also reports what it observed, which is what
the explainer shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, assert_never

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.errors import FieldError, InvalidInput, NotFound, join_path
from automation.segments import schema
from automation.segments.catalog import Catalog
from automation.segments.compiler import (
    EMAIL_EVENTS,
    EMAIL_FILTERS,
    MACHINE_FLAGGED,
    RECEIVED_EVENTS,
    contact_tags,
    contacts,
    events,
    memberships,
    tags,
)
from automation.segments.context import load_catalog, require_usable
from automation.segments.dialects import ascii_fold
from automation.segments.fields import (
    NEGATIVE,
    FieldSpec,
    Operator,
    ValueType,
)
from automation.segments.localdates import anniversaries, local_today
from automation.segments.values import (
    is_number,
    parse_instant,
    property_value_kind,
)

Op = Operator


@dataclass(frozen=True)
class EventFact:
    name: str
    properties: Mapping[str, Any]
    occurred_at: datetime


@dataclass(frozen=True)
class Facts:
    """Everything a tree can ask about one contact."""

    contact: Mapping[str, Any]  # the contacts row: column name -> value
    tags: frozenset[str] = frozenset()
    events: Sequence[EventFact] = ()
    lists: frozenset[int] = frozenset()  # static segments the contact belongs to


@dataclass
class Outcome:
    """One node's result, what it looked at, and its children's outcomes."""

    path: str
    kind: str
    result: bool
    observed: dict[str, Any] = field(default_factory=dict)
    children: list[Outcome] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind, "result": self.result}
        if self.observed:
            out["observed"] = self.observed
        if self.children:
            out["children"] = [c.as_dict() for c in self.children]
        return out


# --- typed reads, mirroring dialects.Sql.json_value ----------------------------------


def read_path(doc: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(doc, Mapping) or key not in doc:
            return None
        doc = doc[key]
    return doc


def typed(value: Any, kind: ValueType) -> Any:
    """``value`` if its JSON type is the one ``kind`` is stored as, else None."""
    if kind is ValueType.NUMBER:
        return value if is_number(value) else None
    if kind is ValueType.BOOLEAN:
        return value if isinstance(value, bool) else None
    if isinstance(value, Enum):
        value = value.value
    return value if isinstance(value, str) else None


def compare(value: Any, kind: ValueType, op: Operator, wanted: Any) -> bool:
    """The positive comparisons (no not_* operators) of compiler.Compiler._compare."""
    if op is Op.IS_SET:
        return value is not None and value != "" if isinstance(value, str) else value is not None
    if value is None:
        return False
    if op in (Op.CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH):
        text, needle = ascii_fold(value), ascii_fold(wanted)
        if op is Op.CONTAINS:
            return needle in text
        return text.startswith(needle) if op is Op.STARTS_WITH else text.endswith(needle)
    if op is Op.EQUALS:
        return bool(value == wanted)
    if op is Op.IN:
        return value in wanted
    if op is Op.BETWEEN:
        return bool(wanted[0] <= value <= wanted[1])
    return _order(op, value, wanted)


def _order(op: Operator, value: Any, wanted: Any) -> bool:
    if op is Op.GREATER_THAN:
        return bool(value > wanted)
    if op is Op.GREATER_OR_EQUAL:
        return bool(value >= wanted)
    if op is Op.LESS_THAN:
        return bool(value < wanted)
    if op is Op.LESS_OR_EQUAL:
        return bool(value <= wanted)
    raise ValueError(f"not an ordering operator: {op}")


def compare_instant(value: datetime | None, op: Operator, wanted: Any, now: datetime) -> bool:
    if op is Op.IS_SET:
        return value is not None
    if value is None:
        return False
    if op is Op.WITHIN_LAST_DAYS:
        return now - timedelta(days=wanted) <= value <= now
    if op is Op.MORE_THAN_DAYS_AGO:
        return value < now - timedelta(days=wanted)
    if op is Op.IN_NEXT_DAYS:
        return now <= value <= now + timedelta(days=wanted)
    if op is Op.BETWEEN:
        return parse_instant(wanted[0]) <= value <= parse_instant(wanted[1])
    return _order(op, value, parse_instant(wanted))


def compare_local_date(
    value: str | None, op: Operator, days: Any, zone: str, now: datetime
) -> bool:
    if value is None:
        return False
    today = local_today(zone, now)
    if op is Op.ANNIVERSARY_TODAY:
        return value[4:10] in anniversaries(today)
    if op is Op.WITHIN_LAST_DAYS:
        return (today - timedelta(days=days)).isoformat() <= value <= today.isoformat()
    if op is Op.IN_NEXT_DAYS:
        return today.isoformat() <= value <= (today + timedelta(days=days)).isoformat()
    return value < (today - timedelta(days=days)).isoformat()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


# --- the evaluator ----------------------------------------------------------------------


class Evaluator:
    def __init__(self, catalog: Catalog, facts: Facts, now: datetime) -> None:
        self.catalog = catalog
        self.facts = facts
        self.now = now
        self._inlining: list[int] = []

    def tree(self, tree: schema.Filter, prefix: schema.Path = ("conditions",)) -> Outcome:
        children = [self.node(n, (*prefix, i)) for i, n in enumerate(tree.conditions)]
        return Outcome(join_path(prefix), "all", all(c.result for c in children), {}, children)

    def node(self, node: schema.Node, path: schema.Path) -> Outcome:
        where = join_path(path)
        match node:
            case schema.AllGroup():
                children = [self.node(n, (*path, "all", i)) for i, n in enumerate(node.all)]
                return Outcome(where, "all", all(c.result for c in children), {}, children)
            case schema.AnyGroup():
                children = [self.node(n, (*path, "any", i)) for i, n in enumerate(node.any)]
                return Outcome(where, "any", any(c.result for c in children), {}, children)
            case schema.NotGroup():
                inner = self.node(node.not_, (*path, "not"))
                return Outcome(where, "not", not inner.result, {}, [inner])
            case schema.FieldCondition():
                result, observed = self.field(node)
                return Outcome(where, "field", result, observed)
            case schema.TagCondition():
                result, observed = self.tags(node)
                return Outcome(where, "tags", result, observed)
            case schema.EventCondition():
                result, observed = self.event(node)
                return Outcome(where, "event", result, observed)
            case schema.LastPerformedCondition():
                result, observed = self.last_performed(node)
                return Outcome(where, "last_performed", result, observed)
            case schema.EmailCondition():
                result, observed = self.email(node)
                return Outcome(where, "email", result, observed)
            case schema.SegmentCondition():
                return self.segment(node, where)
            case schema.TooDeep():
                raise TypeError("a node nested too deep never survives parsing")
            case _:
                assert_never(node)

    # fields

    def field_value(self, spec: FieldSpec) -> Any:
        if spec.column is not None:
            raw = self.facts.contact.get(spec.column)
            if spec.type is ValueType.DATETIME:
                return raw
            return typed(raw, spec.type if spec.type is not ValueType.CHOICE else ValueType.TEXT)
        attributes = self.facts.contact.get("attributes") or {}
        kind = spec.type if spec.type in (ValueType.NUMBER, ValueType.BOOLEAN) else ValueType.TEXT
        return typed(read_path(attributes, (spec.attribute or "",)), kind)

    def field(self, node: schema.FieldCondition) -> tuple[bool, dict[str, Any]]:
        spec = self.catalog.field_spec(node.field)
        if spec is None:
            raise InvalidInput(FieldError("field", f"unknown field {node.field!r}"))
        value = self.field_value(spec)
        op = NEGATIVE.get(node.operator, node.operator)
        zone = str(self.facts.contact.get("time_zone") or "")
        if spec.type is ValueType.DATETIME:
            result = compare_instant(value, op, node.value, self.now)
        elif spec.type is ValueType.DATE and op in (
            Op.WITHIN_LAST_DAYS,
            Op.MORE_THAN_DAYS_AGO,
            Op.IN_NEXT_DAYS,
            Op.ANNIVERSARY_TODAY,
        ):
            result = compare_local_date(value, op, node.value, zone, self.now)
        else:
            result = compare(value, spec.type, op, node.value)
        observed: dict[str, Any] = {"value": _jsonable(value)}
        if spec.type is ValueType.DATE and op in (
            Op.WITHIN_LAST_DAYS,
            Op.MORE_THAN_DAYS_AGO,
            Op.IN_NEXT_DAYS,
            Op.ANNIVERSARY_TODAY,
        ):
            observed["local_today"] = local_today(zone, self.now).isoformat()
            observed["time_zone"] = zone
        return (not result if node.operator in NEGATIVE else result), observed

    # tags

    def tags(self, node: schema.TagCondition) -> tuple[bool, dict[str, Any]]:
        wanted = set(node.tags)
        present = wanted & self.facts.tags
        has_all = present == wanted
        results = {
            schema.TagOperator.HAS_ANY: bool(present),
            schema.TagOperator.HAS_ALL: has_all,
            schema.TagOperator.HAS_NONE: not present,
            schema.TagOperator.HAS_NOT_ALL: not has_all,
        }
        return results[node.operator], {"has": sorted(present), "lacks": sorted(wanted - present)}

    # behaviour

    def _in_window(self, at: datetime, window: schema.Window) -> bool:
        if window.within_days is not None:
            return self.now - timedelta(days=window.within_days) <= at <= self.now
        if window.since is not None:
            return window.since <= at <= self.now
        return True

    def property_holds(self, cond: schema.PropertyCondition, properties: Mapping[str, Any]) -> bool:
        raw = read_path(properties, cond.property.split("."))
        op = NEGATIVE.get(cond.operator, cond.operator)
        if op is Op.IS_SET:
            result = raw is not None and raw != "" if isinstance(raw, str) else raw is not None
        else:
            kind = property_value_kind(op, cond.value)
            assert kind is not None
            result = compare(typed(raw, kind), kind, op, cond.value)
        return not result if cond.operator in NEGATIVE else result

    def matching_events(
        self,
        names: Sequence[str],
        window: schema.Window,
        where: Sequence[schema.PropertyCondition] = (),
        human_only: bool = False,
    ) -> list[EventFact]:
        return [
            e
            for e in self.facts.events
            if e.name in names
            and self._in_window(e.occurred_at, window)
            and all(self.property_holds(c, e.properties) for c in where)
            and not (human_only and read_path(e.properties, ("machine",)) is True)
        ]

    @staticmethod
    def counted(operator: schema.CountOperator, times: int | None, count: int) -> bool:
        n = times or 0
        return {
            schema.CountOperator.PERFORMED: count >= 1,
            schema.CountOperator.NOT_PERFORMED: count == 0,
            schema.CountOperator.AT_LEAST: count >= n,
            schema.CountOperator.AT_MOST: count <= n,
            schema.CountOperator.EXACTLY: count == n,
        }[operator]

    @staticmethod
    def _summary(found: list[EventFact]) -> dict[str, Any]:
        last = max((e.occurred_at for e in found), default=None)
        return {"count": len(found), "last_at": _jsonable(last)}

    def event(self, node: schema.EventCondition) -> tuple[bool, dict[str, Any]]:
        human_only = node.event in MACHINE_FLAGGED and not node.include_machine
        found = self.matching_events([node.event], node, node.where, human_only)
        return self.counted(node.operator, node.times, len(found)), self._summary(found)

    def last_performed(self, node: schema.LastPerformedCondition) -> tuple[bool, dict[str, Any]]:
        human_only = node.last_performed in MACHINE_FLAGGED and not node.include_machine
        found = self.matching_events([node.last_performed], schema.Window(), node.where, human_only)
        last = max((e.occurred_at for e in found), default=None)
        op = NEGATIVE.get(node.operator, node.operator)
        result = compare_instant(last, op, node.value, self.now)
        return (not result if node.operator in NEGATIVE else result), {"last_at": _jsonable(last)}

    def email_events(
        self, node: schema.EmailCondition, activity: schema.EmailActivity
    ) -> list[EventFact]:
        where = [
            schema.PropertyCondition(property=key, operator=Op.EQUALS, value=getattr(node, key))
            for key in EMAIL_FILTERS
            if getattr(node, key) is not None
        ]
        human_only = activity is not schema.EmailActivity.RECEIVED and not node.include_machine
        return self.matching_events(EMAIL_EVENTS[activity], node, where, human_only)

    def email(self, node: schema.EmailCondition) -> tuple[bool, dict[str, Any]]:
        if node.email is schema.EmailActivity.RECEIVED_NOT_OPENED:
            received = self.email_events(node, schema.EmailActivity.RECEIVED)
            opened = self.email_events(node, schema.EmailActivity.OPENED)
            observed = {"received": len(received), "opened": len(opened)}
            return bool(received) and not opened, observed
        found = self.email_events(node, node.email)
        return self.counted(node.operator, node.times, len(found)), self._summary(found)

    # segments

    def segment(self, node: schema.SegmentCondition, where: str) -> Outcome:
        ref = self.catalog.segments.get(node.segment)
        if ref is None:
            raise InvalidInput(FieldError("segment", f"no segment with id {node.segment}"))
        observed: dict[str, Any] = {"segment": ref.name, "dynamic": ref.dynamic}
        if not ref.dynamic:
            member = ref.id in self.facts.lists
            return Outcome(where, "segment", member, observed)
        if ref.tree is None or ref.id in self._inlining:
            raise InvalidInput(FieldError("segment", f"segment {ref.name!r} cannot be evaluated"))
        self._inlining.append(ref.id)
        try:
            inner = self.tree(ref.tree, (f"segment {ref.id}", "conditions"))
        finally:
            self._inlining.pop()
        return Outcome(where, "segment", inner.result, observed, inner.children)


def evaluate(tree: schema.Filter, facts: Facts, catalog: Catalog, now: datetime) -> bool:
    """Whether the contact described by ``facts`` matches ``tree`` at ``now``."""
    return Evaluator(catalog, facts, now).tree(tree).result


# --- loading one contact's facts ----------------------------------------------------------


def needed_events(tree: schema.Filter, catalog: Catalog) -> set[str]:
    """Event names the tree (and the segments it inlines) can look at."""
    names: set[str] = set()
    seen: set[int] = set()
    pending = [tree]
    while pending:
        current = pending.pop()
        for _, node in schema.walk(current.conditions):
            if isinstance(node, schema.EventCondition):
                names.add(node.event)
            elif isinstance(node, schema.LastPerformedCondition):
                names.add(node.last_performed)
            elif isinstance(node, schema.EmailCondition):
                names.update(RECEIVED_EVENTS)
                names.update(n for activity in EMAIL_EVENTS.values() for n in activity)
            elif isinstance(node, schema.SegmentCondition) and node.segment not in seen:
                seen.add(node.segment)
                ref = catalog.segments.get(node.segment)
                if ref is not None and ref.tree is not None:
                    pending.append(ref.tree)
    return names


def load_facts(session: Session, contact_id: int, tree: schema.Filter, catalog: Catalog) -> Facts:
    """One contact's row, tags, static lists and the events the tree can look at."""
    row = session.execute(select(contacts).where(contacts.c.id == contact_id)).mappings().first()
    if row is None:
        raise NotFound(f"contact {contact_id} not found")
    tag_names = session.scalars(
        select(tags.c.name)
        .join(contact_tags, contact_tags.c.tag_id == tags.c.id)
        .where(contact_tags.c.contact_id == contact_id)
    )
    static = [ref.id for ref in catalog.segments.values() if not ref.dynamic]
    lists: Iterable[int] = (
        session.scalars(
            select(memberships.c.segment_id).where(
                memberships.c.contact_id == contact_id, memberships.c.segment_id.in_(static)
            )
        )
        if static
        else []
    )
    names = sorted(needed_events(tree, catalog))
    facts = (
        session.execute(
            select(events.c.name, events.c.properties, events.c.occurred_at).where(
                events.c.contact_id == contact_id, events.c.name.in_(names)
            )
        ).all()
        if names
        else []
    )
    return Facts(
        contact=dict(row),
        tags=frozenset(tag_names),
        events=tuple(EventFact(n, p or {}, at) for n, p, at in facts),
        lists=frozenset(lists),
    )


def contact_matches(
    session: Session,
    tree: schema.Filter | dict[str, Any],
    contact_id: int,
    *,
    now: datetime | None = None,
) -> bool:
    """Whether one contact matches, evaluated in Python (workflow branches on one contact)."""
    parsed = schema.parse_filter(tree)
    catalog = load_catalog(session, parsed)
    require_usable(catalog, parsed)
    facts = load_facts(session, contact_id, parsed, catalog)
    return evaluate(parsed, facts, catalog, now or clock.now())
