"""The catalog of what names in a tree refer to (fields, segments, tags; loaded by
context.py) and the checks that need it: unknown names, operators that do not fit a field's
type, ill-typed values, segment references that are missing or lead round in a circle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never

from automation.errors import FieldError, join_path
from automation.segments import schema
from automation.segments.fields import (
    ATTRIBUTE_PREFIX,
    CORE_FIELDS,
    OPERATORS,
    FieldSpec,
    ValueType,
)
from automation.segments.values import property_errors, value_errors

MAX_SEGMENT_CHAIN = 8  # segment conditions referring to segments referring to segments ...


@dataclass(frozen=True)
class SegmentRef:
    id: int
    name: str
    dynamic: bool
    tree: schema.Filter | None  # None for static lists (and for definitions that no longer parse)


@dataclass
class Catalog:
    """What names in a tree can refer to: fields and segments (loaded by context.py)."""

    fields: dict[str, FieldSpec]
    segments: dict[int, SegmentRef] = field(default_factory=dict)
    # Tag ids by name, for the names looked up; a name looked up but absent has no tag.
    # Ids let PostgreSQL estimate tag conditions from contact_tags statistics.
    tag_ids: dict[str, int] = field(default_factory=dict)
    tags_looked_up: set[str] = field(default_factory=set)

    def field_spec(self, name: str) -> FieldSpec | None:
        return self.fields.get(name)


def _count_errors(
    node: schema.EventCondition | schema.EmailCondition,
) -> list[tuple[schema.Path, str]]:
    errors: list[tuple[schema.Path, str]] = []
    counted = node.operator in (
        schema.CountOperator.AT_LEAST,
        schema.CountOperator.AT_MOST,
        schema.CountOperator.EXACTLY,
    )
    if counted and node.times is None:
        errors.append((("times",), f"{node.operator.value} needs times"))
    if not counted and node.times is not None:
        errors.append((("times",), "times goes with at_least, at_most or exactly"))
    if node.within_days is not None and node.since is not None:
        errors.append((("since",), "give within_days or since, not both"))
    return errors


def check_filter(
    tree: schema.Filter,
    catalog: Catalog,
    *,
    segment_id: int | None = None,
    prefix: schema.Path = ("conditions",),
) -> list[FieldError]:
    """Errors for unknown names, operators that do not fit the field's type, ill-typed
    values and segment references that are missing or lead back to ``segment_id``."""
    errors: list[FieldError] = []
    for path, node in schema.walk(tree.conditions, prefix):
        match node:
            case schema.FieldCondition():
                found = _field_errors(node, catalog)
            case schema.EventCondition():
                found = _count_errors(node) + _where_errors(node.where)
            case schema.EmailCondition():
                found = _count_errors(node)
                if node.email is schema.EmailActivity.RECEIVED_NOT_OPENED and node.operator not in (
                    schema.CountOperator.PERFORMED,
                ):
                    found.append((("operator",), "received_not_opened takes no count"))
            case schema.LastPerformedCondition():
                found = _where_errors(node.where) + _last_performed_errors(node)
            case schema.SegmentCondition():
                problem = _reference_error(node.segment, catalog, segment_id)
                found = [(("segment",), problem)] if problem else []
            case schema.TagCondition():
                found = []  # any tag name is fine: a tag nobody has matches no one
            case schema.AllGroup() | schema.AnyGroup() | schema.NotGroup() | schema.TooDeep():
                found = []  # a group: walk yields its members
            case _:
                assert_never(node)
        errors += [FieldError(join_path(path + sub), message) for sub, message in found]
    return errors


def _field_errors(node: schema.FieldCondition, catalog: Catalog) -> list[tuple[schema.Path, str]]:
    spec = catalog.field_spec(node.field)
    if spec is None:
        return [(("field",), _unknown_field(node.field, catalog))]
    allowed = OPERATORS[spec.type]
    if node.operator not in allowed:
        return [
            (
                ("operator",),
                f"{node.operator.value} is not valid for a {spec.type.value} field; "
                f"use one of {', '.join(o.value for o in allowed)}",
            )
        ]
    return value_errors(spec.type, spec.options, node.operator, node.value)


def _last_performed_errors(node: schema.LastPerformedCondition) -> list[tuple[schema.Path, str]]:
    allowed = OPERATORS[ValueType.DATETIME]
    if node.operator not in allowed:
        return [
            (
                ("operator",),
                f"{node.operator.value} is not valid for a date-time; use one of "
                + ", ".join(o.value for o in allowed),
            )
        ]
    return value_errors(ValueType.DATETIME, (), node.operator, node.value)


def _where_errors(where: tuple[schema.PropertyCondition, ...]) -> list[tuple[schema.Path, str]]:
    return [
        (("where", i, *sub), message)
        for i, cond in enumerate(where)
        for sub, message in property_errors(cond)
    ]


def _unknown_field(name: str, catalog: Catalog) -> str:
    if name.startswith(ATTRIBUTE_PREFIX):
        declared = sorted(s.attribute for s in catalog.fields.values() if s.attribute is not None)
        return "no custom field named {!r}; declared: {}".format(
            name.removeprefix(ATTRIBUTE_PREFIX), ", ".join(declared) or "none"
        )
    return f"unknown field {name!r}; use a contact field ({', '.join(CORE_FIELDS)}) or " + (
        "attributes.<custom field>"
    )


def _reference_error(target: int, catalog: Catalog, origin: int | None) -> str | None:
    """Why a reference to ``target`` is not allowed, or None."""
    ref = catalog.segments.get(target)
    if ref is None:
        return f"no segment with id {target}"
    if origin is not None and target == origin:
        return "a segment cannot refer to itself"
    # Depth-first search for a path back to the origin, or a cycle among the others.
    trail: list[int] = [target]

    def visit(segment: int) -> str | None:
        current = catalog.segments.get(segment)
        if current is None or current.tree is None:
            return None
        for nxt in schema.referenced_segments(current.tree):
            names = " → ".join(_name(catalog, s) for s in [*trail, nxt])
            if nxt == origin:
                return f"reference cycle: this segment → {names}"
            if nxt in trail:
                return f"reference cycle: {names}"
            if len(trail) >= MAX_SEGMENT_CHAIN:
                return f"segments refer to each other more than {MAX_SEGMENT_CHAIN} levels deep"
            trail.append(nxt)
            found = visit(nxt)
            if found:
                return found
            trail.pop()
        return None

    return visit(target)


def _name(catalog: Catalog, segment_id: int) -> str:
    ref = catalog.segments.get(segment_id)
    return f"{ref.name!r} ({segment_id})" if ref else str(segment_id)
