"""Conditions in workflows: the segment language (docs/architecture.md, principle 4; reference
docs/segments.md) plus two leaves only a workflow can answer:

- ``{"workflow_email": "sent" | "opened" | "clicked", "node": "send-1"}``: the email this
  enrolment got from send node ``send-1`` was sent / opened / clicked (human engagement);
- ``{"webhook": "hook-1", "path": "body.plan", "operator": "equals", "value": "pro"}``:
  the stored answer of webhook node ``hook-1`` (``ok``, ``status`` or ``body.<key>...``).

A contact condition (branch, goal node, workflow goal) is a segment filter tree,
``{"conditions": [...]}``, in which those two leaves may appear wherever a condition can.
Conditions on an event's properties (event triggers, waits for an event, event goals) are
the segment language's property conditions: ``[{"property": "total", "operator":
"greater_than", "value": 50}]``, all of which must hold.

A branch is evaluated for a whole batch in one query: workflow leaves become sets of
contact ids, every other subtree the segment compiler's WHERE clause.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, TypeVar, assert_never

from sqlalchemy import ColumnElement, Select, and_, false, not_, or_, select
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Contact
from automation.db import one_of
from automation.email.models import Template
from automation.errors import FieldError, InvalidInput, NotFound
from automation.segments.catalog import (
    Catalog,
    check_filter,
)
from automation.segments.compiler import condition
from automation.segments.context import load_catalog, validate_filter
from automation.segments.evaluator import Evaluator, EventFact, Facts, evaluate
from automation.segments.fields import (
    CORE_FIELDS,
)
from automation.segments.models import Segment, SegmentMembership
from automation.segments.schema import (
    EventCondition,
    parse_filter,
)
from automation.workflows.sending import email_fact_enrollments

T = TypeVar("T")
EMAIL_FACTS = ("sent", "opened", "clicked")
COMPARISONS = (
    "equals",
    "not_equals",
    "greater_than",
    "greater_or_equal",
    "less_than",
    "less_or_equal",
    "contains",
    "is_set",
    "is_not_set",
    "in",
)
# Stands in for a workflow leaf when the rest of a tree is checked by the segment
# validator: always valid, and the tree keeps its shape, so error paths stay right.
_PLACEHOLDER = {"field": "email", "operator": "is_set"}


@dataclass(frozen=True)
class Member:
    """One enrolment a batch evaluates a condition for."""

    enrollment_id: int
    contact_id: int
    context: dict[str, Any]


def is_workflow_leaf(node: Any) -> bool:
    return isinstance(node, dict) and ("workflow_email" in node or "webhook" in node)


def _children(node: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    for group in ("conditions", "all", "any"):
        if isinstance(node.get(group), list):
            for i, child in enumerate(node[group]):
                yield f"{path}.{group}[{i}]", child
    if "not" in node:
        yield f"{path}.not", node["not"]


def workflow_leaves(tree: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, leaf) for every workflow-only leaf in ``tree``."""
    if not isinstance(tree, dict):
        return
    if is_workflow_leaf(tree):
        yield path, tree
        return
    for child_path, child in _children(tree, path):
        yield from workflow_leaves(child, child_path)


GroupKind = Literal["all", "any", "not"]


def _group(node: dict[str, Any]) -> tuple[GroupKind, list[Any]]:
    """A (checked) group's kind and members; a tree's ``conditions`` are an ``all``."""
    if "conditions" in node or "all" in node:
        return "all", node.get("conditions") or node.get("all") or []
    if "any" in node:
        return "any", node["any"]
    return "not", [node["not"]]


def _fold(
    node: dict[str, Any],
    leaf: Callable[[dict[str, Any]], T],
    combine: Callable[[GroupKind, Iterator[T]], T],
) -> T:
    """The one walk that evaluates a contact condition: a workflow leaf, or a subtree with
    none in it (which the segment language answers whole), goes to ``leaf``; a group
    ``combine``s its members' results, computed lazily so ``all`` and ``any`` stop early."""
    if is_workflow_leaf(node) or not any(True for _ in workflow_leaves(node, "")):
        return leaf(node)
    kind, members = _group(node)
    return combine(kind, (_fold(m, leaf, combine) for m in members))


def _without_workflow_leaves(node: Any) -> Any:
    if is_workflow_leaf(node):
        return dict(_PLACEHOLDER)
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for group in ("conditions", "all", "any"):
        if isinstance(node.get(group), list):
            out[group] = [_without_workflow_leaves(c) for c in node[group]]
    if "not" in node:
        out["not"] = _without_workflow_leaves(node["not"])
    return out


def _workflow_leaf_error(leaf: dict[str, Any], path: str) -> FieldError | None:
    if "workflow_email" in leaf:
        extra = set(leaf) - {"workflow_email", "node"}
        if extra:
            return FieldError(f"{path}.{sorted(extra)[0]}", "unknown key in an email condition")
        if leaf["workflow_email"] not in EMAIL_FACTS:
            return FieldError(f"{path}.workflow_email", f"expected one of {', '.join(EMAIL_FACTS)}")
        if not isinstance(leaf.get("node"), str):
            return FieldError(f"{path}.node", "name the send_email node")
        return None
    extra = set(leaf) - {"webhook", "path", "operator", "value"}
    if extra:
        return FieldError(f"{path}.{sorted(extra)[0]}", "unknown key in a webhook condition")
    if not isinstance(leaf.get("webhook"), str):
        return FieldError(f"{path}.webhook", "name the webhook node")
    result_path = leaf.get("path", "ok")
    if not isinstance(result_path, str) or not (
        result_path in ("ok", "status") or result_path.startswith("body.")
    ):
        return FieldError(f"{path}.path", "expected ok, status or body.<key>")
    if leaf.get("operator", "equals") not in COMPARISONS:
        return FieldError(f"{path}.operator", f"expected one of {', '.join(COMPARISONS)}")
    return None


def condition_errors(session: Session, tree: Any, path: str) -> list[FieldError]:
    """Errors in a contact condition (a branch, a goal), with JSON paths under ``path``."""
    if not isinstance(tree, dict) or not isinstance(tree.get("conditions"), list):
        return [FieldError(path, 'a condition is {"conditions": [...]} (docs/segments.md)')]
    errors = [
        error
        for leaf_path, leaf in workflow_leaves(tree, path)
        if (error := _workflow_leaf_error(leaf, leaf_path)) is not None
    ]

    try:
        validate_filter(session, _without_workflow_leaves(tree))
    except InvalidInput as exc:
        errors += [FieldError(_under(path, e.path), e.message) for e in exc.errors]
    return errors


def _under(prefix: str, path: str) -> str:
    if not path or path == "body":
        return prefix
    return f"{prefix}.{path}" if not path.startswith("[") else prefix + path


def property_condition_errors(where: Any, path: str) -> list[FieldError]:
    """Errors in conditions on an event's properties (a list, all must hold), checked as
    the ``where`` of a segment-language event condition."""
    if not isinstance(where, list):
        return [FieldError(path, "expected a list of property conditions")]
    try:
        parsed = parse_filter({"conditions": [{"event": "e", "where": where}]})
        errors = check_filter(parsed, Catalog(dict(CORE_FIELDS)))
    except InvalidInput as exc:
        errors = exc.errors
    return [
        FieldError(_under(path, e.path.removeprefix("conditions[0].where")), e.message)
        for e in errors
    ]


@lru_cache(maxsize=1024)
def _property_conditions(canonical: str) -> tuple[Any, ...]:
    """Parsed property conditions, cached by content (triggers test every event)."""
    tree = parse_filter({"conditions": [{"event": "e", "where": json.loads(canonical)}]})
    event = tree.conditions[0]
    assert isinstance(event, EventCondition)
    return tuple(event.where)


_MATCHER = Evaluator(Catalog(dict(CORE_FIELDS)), Facts(contact={}), clock.now())


def event_matcher(where: list[dict[str, Any]] | None) -> Any:
    """A test of an event's properties against ``where`` (none: every event matches), by
    the segment language's own property rule. Parse once, test many events."""
    if not where:
        return lambda properties: True
    conditions = _property_conditions(json.dumps(where, sort_keys=True))
    holds = _MATCHER.property_holds
    return lambda properties: all(holds(c, properties) for c in conditions)


def event_matches(where: list[dict[str, Any]] | None, properties: dict[str, Any]) -> bool:
    return bool(event_matcher(where)(properties))


def segment_members(session: Session, segment_id: int) -> Select[Any]:
    """The contact ids of a segment's members (bulk enrolment)."""
    if session.get(Segment, segment_id) is None:
        raise NotFound(f"segment {segment_id} not found")
    return select(SegmentMembership.contact_id).where(SegmentMembership.segment_id == segment_id)


def missing_templates(session: Session, refs: Sequence[tuple[int, str]]) -> list[tuple[str, str]]:
    """(path, message) for template ids that do not exist (or were deleted)."""
    if not refs:
        return []
    live = set(
        session.scalars(
            select(Template.id).where(
                Template.id.in_({i for i, _ in refs}),
                Template.deleted_at.is_(None),
                Template.latest_version > 0,
            )
        )
    )
    return [(path, f"no template {tid}") for tid, path in refs if tid not in live]


# --- evaluation for a batch ---------------------------------------------------------------


def matching_contacts(
    session: Session, tree: dict[str, Any], members: Sequence[Member], now: datetime
) -> set[int]:
    """Enrolment ids of ``members`` whose contact meets ``tree``: one query for the batch."""
    if not members:
        return set()
    by_contact: dict[int, list[int]] = {}
    for m in members:
        by_contact.setdefault(m.contact_id, []).append(m.enrollment_id)
    ids = list(by_contact)
    clause = _clause(session, tree, members, ids, now)
    matched = set(
        session.scalars(select(Contact.id).where(one_of(session, Contact.id, ids), clause))
    )
    # Workflow leaves answer per enrolment; a contact is in a batch once per workflow,
    # so mapping back through the contact id is exact.
    return {e for c in matched for e in by_contact[c]}


def _clause(
    session: Session,
    node: dict[str, Any],
    members: Sequence[Member],
    among: list[int],
    now: datetime,
) -> ColumnElement[bool]:
    def leaf(part: dict[str, Any]) -> ColumnElement[bool]:
        if is_workflow_leaf(part):
            ids = _workflow_leaf_contacts(session, part, members)
            return one_of(session, Contact.id, sorted(ids)) if ids else false()
        tree = part if "conditions" in part else {"conditions": [part]}
        # matching_contacts restricts contacts.id to the batch once, for the whole tree.
        return condition(session, tree, among_ids=among, now=now, restrict_to_among=False)

    def combine(kind: GroupKind, parts: Iterator[ColumnElement[bool]]) -> ColumnElement[bool]:
        match kind:
            case "all":
                return and_(*parts)
            case "any":
                return or_(*parts)
            case "not":
                return not_(next(parts))
            case _:
                assert_never(kind)

    return _fold(node, leaf, combine)


def _workflow_leaf_contacts(
    session: Session, leaf: dict[str, Any], members: Sequence[Member]
) -> set[int]:
    if "webhook" in leaf:
        return {
            m.contact_id
            for m in members
            if webhook_leaf_holds(leaf, m.context.get("webhooks", {}).get(leaf["webhook"]))
        }
    hits = email_fact_enrollments(
        session, leaf["workflow_email"], leaf["node"], [m.enrollment_id for m in members]
    )
    return {m.contact_id for m in members if m.enrollment_id in hits}


def webhook_leaf_holds(leaf: dict[str, Any], result: dict[str, Any] | None) -> bool:
    if result is None:
        return leaf.get("operator") == "is_not_set"
    value: Any = result
    for key in leaf.get("path", "ok").split("."):
        if not isinstance(value, dict) or key not in value:
            value = None
            break
        value = value[key]
    return compare(leaf.get("operator", "equals"), value, leaf.get("value", True))


def compare(operator: str, actual: Any, expected: Any) -> bool:
    """The comparison a webhook leaf asks for; a type mismatch is simply false."""
    if operator == "is_set":
        return actual is not None
    if operator == "is_not_set":
        return actual is None
    if operator == "equals":
        return bool(actual == expected)
    if operator == "not_equals":
        return bool(actual != expected)
    if operator == "in":
        return isinstance(expected, list) and actual in expected
    if operator == "contains":
        return isinstance(actual, str | list) and expected in actual
    try:
        if operator == "greater_than":
            return bool(actual > expected)
        if operator == "greater_or_equal":
            return bool(actual >= expected)
        if operator == "less_than":
            return bool(actual < expected)
        if operator == "less_or_equal":
            return bool(actual <= expected)
    except TypeError:
        return False
    return False


# --- one simulated contact (dry run) -------------------------------------------------------


@dataclass
class SimulatedFacts:
    """What a dry run knows beyond the contact: the send nodes it passed, the events (its
    stored ones and the hypothetical timeline: ``at``, ``name``, ``properties``) and the
    webhook answers so far."""

    sent_nodes: set[str]
    events: Sequence[Any]
    webhooks: dict[str, dict[str, Any]]


def contact_meets(
    session: Session,
    tree: dict[str, Any],
    contact: dict[str, Any],
    facts: SimulatedFacts,
    at: datetime,
) -> bool:
    """``tree`` for one simulated contact (its row as a dict, with ``tags``), at ``at``."""

    def leaf(part: dict[str, Any]) -> bool:
        if "webhook" in part:
            return webhook_leaf_holds(part, facts.webhooks.get(part["webhook"]))
        if "workflow_email" in part:
            if part["node"] not in facts.sent_nodes:
                return False
            if part["workflow_email"] == "sent":
                return True
            name = f"email.{part['workflow_email']}"
            return any(
                e.name == name and e.properties.get("node") == part["node"] and e.at <= at
                for e in facts.events
            )
        return _segment_holds(session, part, contact, facts, at)

    def combine(kind: GroupKind, parts: Iterator[bool]) -> bool:
        match kind:
            case "all":
                return all(parts)
            case "any":
                return any(parts)
            case "not":
                return not next(parts)
            case _:
                assert_never(kind)

    return _fold(tree, leaf, combine)


def _segment_holds(
    session: Session,
    node: dict[str, Any],
    contact: dict[str, Any],
    facts: SimulatedFacts,
    at: datetime,
) -> bool:

    tree = parse_filter(node if "conditions" in node else {"conditions": [node]})
    catalog = load_catalog(session, tree)
    row = {k: v for k, v in contact.items() if k not in ("tags", "lists")}
    seen = tuple(EventFact(e.name, e.properties, e.at) for e in facts.events if e.at <= at)
    simulated = Facts(
        contact=row,
        tags=frozenset(contact.get("tags", ())),
        events=seen,
        lists=frozenset(contact.get("lists", ())),
    )
    return bool(evaluate(tree, simulated, catalog, at))
