"""Conditions in workflows: the segment language (ARCHITECTURE.md principle 4), plus two
leaves only a workflow can answer:

- ``{"email": "opened" | "clicked" | "sent", "node": "send-1"}``: the email this
  enrolment sent at node ``send-1`` was opened / clicked (by a human) / sent;
- ``{"webhook": "hook-1", "path": "body.plan", "operator": "equals", "value": "pro"}``:
  the stored result of webhook node ``hook-1`` (``ok``, ``status`` or ``body.<key>...``).

Groups are ``{"all": [...]}``, ``{"any": [...]}`` and ``{"not": {...}}``. A branch is
evaluated for a whole batch in one query: workflow leaves become id sets, segment
subtrees become the segment compiler's SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, not_, or_, select
from sqlalchemy.orm import Session

from automation.bulk import in_values
from automation.contacts.models import Contact
from automation.errors import FieldError, NotFound

GROUPS = ("all", "any", "not")
EMAIL_FACTS = ("sent", "opened", "clicked")
COMPARISONS = (
    "equals",
    "not_equals",
    "greater",
    "greater_or_equal",
    "less",
    "less_or_equal",
    "contains",
    "is_set",
    "is_not_set",
    "in",
)
MAX_DEPTH = 10


@dataclass(frozen=True)
class Member:
    """One enrolment a batch evaluates a condition for."""

    enrollment_id: int
    contact_id: int
    context: dict[str, Any]


class SegmentLanguageMissing(RuntimeError):
    pass


def _is_workflow_leaf(tree: dict[str, Any]) -> bool:
    return "email" in tree or "webhook" in tree


def workflow_leaves(tree: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, leaf) for every workflow-only leaf in ``tree``."""
    if not isinstance(tree, dict):
        return
    if _is_workflow_leaf(tree):
        yield path, tree
        return
    for group in ("all", "any"):
        if isinstance(tree.get(group), list):
            for i, child in enumerate(tree[group]):
                yield from workflow_leaves(child, f"{path}.{group}[{i}]")
    if "not" in tree:
        yield from workflow_leaves(tree["not"], f"{path}.not")


def _workflow_leaf_error(leaf: dict[str, Any], path: str) -> FieldError | None:
    if "email" in leaf:
        extra = set(leaf) - {"email", "node"}
        if extra:
            return FieldError(f"{path}.{sorted(extra)[0]}", "unknown key in an email condition")
        if leaf["email"] not in EMAIL_FACTS:
            return FieldError(f"{path}.email", f"expected one of {', '.join(EMAIL_FACTS)}")
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


def condition_errors(session: Session, tree: Any, path: str, depth: int = 0) -> list[FieldError]:
    """Errors in a contact condition (a branch, a goal), with JSON paths."""
    if not isinstance(tree, dict) or not tree:
        return [FieldError(path, "a condition is a non-empty JSON object")]
    if depth > MAX_DEPTH:
        return [FieldError(path, f"conditions nest at most {MAX_DEPTH} deep")]
    if _is_workflow_leaf(tree):
        error = _workflow_leaf_error(tree, path)
        return [error] if error else []
    group = _group_of(tree)
    if group is not None:
        if len(tree) != 1:
            return [FieldError(path, "a group has exactly one key: all, any or not")]
        children = tree[group]
        if group == "not":
            return condition_errors(session, children, f"{path}.not", depth + 1)
        if not isinstance(children, list) or not children:
            return [FieldError(f"{path}.{group}", "a group needs a non-empty list of conditions")]
        errors: list[FieldError] = []
        for i, child in enumerate(children):
            errors += condition_errors(session, child, f"{path}.{group}[{i}]", depth + 1)
        return errors
    return segment_condition_errors(session, tree, path)


def _group_of(tree: dict[str, Any]) -> str | None:
    return next((g for g in GROUPS if g in tree), None)


# --- the segment language (automation.segments) -------------------------------------------


def segment_condition_errors(session: Session, tree: dict[str, Any], path: str) -> list[FieldError]:
    return [FieldError(path, "contact conditions need the segments module, not installed yet")]


def property_condition_errors(tree: Any, path: str) -> list[FieldError]:
    """Errors in conditions on an event's properties."""
    return [FieldError(path, "property conditions need the segments module, not installed yet")]


def event_matches(tree: dict[str, Any] | None, properties: dict[str, Any]) -> bool:
    """Whether an event's properties meet ``tree`` (no tree: every event matches)."""
    if tree is None:
        return True
    raise SegmentLanguageMissing("property conditions need the segments module")


def _segment_clause(tree: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    raise SegmentLanguageMissing("contact conditions need the segments module")


def missing_segments(
    session: Session, refs: Sequence[tuple[int, str]], *, static: bool = False
) -> list[FieldError]:
    """Errors for segment ids (or static list ids) that do not exist."""
    return []


def segment_members(session: Session, segment_id: int) -> Select[tuple[int]]:
    """The contact ids of a segment's members (bulk enrolment)."""
    raise NotFound(f"segment {segment_id} not found (the segments module is not installed yet)")


def missing_templates(session: Session, refs: Sequence[tuple[int, str]]) -> list[tuple[str, str]]:
    """(path, message) for template ids that do not exist."""
    return []


# --- evaluation ---------------------------------------------------------------------------


def matching_contacts(
    session: Session, tree: dict[str, Any], members: Sequence[Member], now: datetime
) -> set[int]:
    """Enrolment ids of ``members`` whose contact meets ``tree``: one query for the batch."""
    if not members:
        return set()
    by_contact: dict[int, list[int]] = {}
    for m in members:
        by_contact.setdefault(m.contact_id, []).append(m.enrollment_id)
    clause = _clause(session, tree, members, now)
    matched = set(
        session.scalars(
            select(Contact.id).where(in_values(session, Contact.id, list(by_contact)), clause)
        )
    )
    # Workflow leaves answer per enrolment; a contact is in a batch once per workflow,
    # so mapping back through the contact id is exact.
    return {e for c in matched for e in by_contact[c]}


def _clause(
    session: Session, tree: dict[str, Any], members: Sequence[Member], now: datetime
) -> ColumnElement[bool]:
    if _is_workflow_leaf(tree):
        ids = _workflow_leaf_contacts(session, tree, members)
        return in_values(session, Contact.id, sorted(ids)) if ids else false()
    group = _group_of(tree)
    if group == "all":
        return and_(*[_clause(session, c, members, now) for c in tree["all"]])
    if group == "any":
        return or_(*[_clause(session, c, members, now) for c in tree["any"]])
    if group == "not":
        return not_(_clause(session, tree["not"], members, now))
    return _segment_clause(tree, now)


def _workflow_leaf_contacts(
    session: Session, leaf: dict[str, Any], members: Sequence[Member]
) -> set[int]:
    if "webhook" in leaf:
        return {
            m.contact_id
            for m in members
            if webhook_leaf_holds(leaf, m.context.get("webhooks", {}).get(leaf["webhook"]))
        }
    return email_fact_contacts(session, leaf["email"], leaf["node"], members)


def email_fact_contacts(
    session: Session, fact: str, node_id: str, members: Sequence[Member]
) -> set[int]:
    """Contacts whose email sent by this enrolment at ``node_id`` was sent/opened/clicked."""
    return set()


def webhook_leaf_holds(leaf: dict[str, Any], result: dict[str, Any] | None) -> bool:
    if result is None:
        return leaf.get("operator") == "is_not_set"
    path = leaf.get("path", "ok")
    value: Any = result
    for key in path.split("."):
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
        if operator == "greater":
            return bool(actual > expected)
        if operator == "greater_or_equal":
            return bool(actual >= expected)
        if operator == "less":
            return bool(actual < expected)
        if operator == "less_or_equal":
            return bool(actual <= expected)
    except TypeError:
        return False
    return False


# --- one simulated contact (dry run) -------------------------------------------------------


@dataclass
class SimulatedFacts:
    """What a dry run knows beyond the contact: the send nodes it passed, the hypothetical
    events (``at``, ``name``, ``properties``) and the webhook answers so far."""

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
    """``tree`` for one simulated contact (a dict of its fields, attributes and tags)."""
    if "webhook" in tree:
        return webhook_leaf_holds(tree, facts.webhooks.get(tree["webhook"]))
    if "email" in tree:
        if tree["email"] == "sent":
            return tree["node"] in facts.sent_nodes
        name = f"email.{tree['email']}"
        return tree["node"] in facts.sent_nodes and any(
            e.name == name and e.properties.get("node") == tree["node"] and e.at <= at
            for e in facts.events
        )
    group = _group_of(tree)
    if group == "all":
        return all(contact_meets(session, c, contact, facts, at) for c in tree["all"])
    if group == "any":
        return any(contact_meets(session, c, contact, facts, at) for c in tree["any"])
    if group == "not":
        return not contact_meets(session, tree["not"], contact, facts, at)
    return _segment_holds(session, tree, contact, facts, at)


def _segment_holds(
    session: Session,
    tree: dict[str, Any],
    contact: dict[str, Any],
    facts: SimulatedFacts,
    at: datetime,
) -> bool:
    raise SegmentLanguageMissing("contact conditions need the segments module")
