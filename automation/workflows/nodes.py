"""What each node type does, for a whole group of enrolments at once.

An executor gets every item of the batch standing at one node and returns an outcome per
item (leave by an exit, park until a time, end). It reads and writes set-wise: one query
for a branch, one UPDATE for a contact update, message rows collected for one INSERT.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, assert_never
from zoneinfo import ZoneInfo

from sqlalchemy import Text, bindparam, func, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from automation.contacts import tags as tag_ops
from automation.contacts.models import Contact
from automation.db import is_postgres, one_of
from automation.segments.membership import add_members, remove_members
from automation.workflows import conditions, schema, sending, webhooks
from automation.workflows.batch import Batch, End, Item, Leave, Outcome, Park
from automation.workflows.graph import Graph
from automation.workflows.models import EnrollmentStatus, Workflow
from automation.workflows.timing import (
    after_duration,
    date_target,
    next_send_time,
    next_time_of_day,
)

GOAL_RECHECK = timedelta(hours=1)
Results = list[tuple[Item, Outcome]]


def members(items: list[Item]) -> list[conditions.Member]:
    return [conditions.Member(i.id, i.contact_id, i.context) for i in items]


def run_node(batch: Batch, graph: Graph, node: schema.WorkflowNode, items: list[Item]) -> Results:
    """Run ``node`` for every item standing at it: the one dispatch on node kind."""
    match node:
        case schema.WaitBase():
            return run_wait(batch, graph, node, items)
        case schema.SendEmailNode():
            return run_send(batch, graph, node, items)
        case schema.BranchNode():
            return run_branch(batch, graph, node, items)
        case schema.SplitNode():
            return run_split(batch, graph, node, items)
        case schema.UpdateContactNode():
            return run_update(batch, graph, node, items)
        case schema.WebhookNode():
            return run_webhook(batch, graph, node, items)
        case schema.GoalNode():
            return run_goal(batch, graph, node, items)
        case schema.ExitNode():
            return run_exit(batch, graph, node, items)
        case _:
            assert_never(node)


def wait_until(
    node: schema.WaitNode, start: datetime, zone: ZoneInfo, attributes: dict[str, Any]
) -> datetime | None:
    """When a contact who began waiting at ``start`` is let through; None when the wait
    does not apply (a date field that is missing)."""
    match node:
        case schema.WaitDurationNode():
            return after_duration(start, node.duration, zone)
        case schema.WaitTimeOfDayNode():
            return next_time_of_day(start, zone, node.time, node.weekdays)
        case schema.WaitDateFieldNode():
            value = attributes.get(node.field.removeprefix("attributes."))
            return date_target(value, node.offset_days, node.time, zone)
        case schema.WaitEventNode():
            return after_duration(start, node.timeout, zone)
        case _:
            assert_never(node)


def runs_sql(node: schema.WorkflowNode, items: list[Item]) -> bool:
    """Whether running ``node`` for ``items`` may send SQL, and so needs a savepoint (on
    PostgreSQL a failed statement aborts the whole transaction). Splits and exits decide
    in Python; contacts leaving a wait need nothing (those entering one need their time
    zone). Two round trips saved per group that needs none."""
    if isinstance(node, schema.SplitNode | schema.ExitNode):
        return False
    if isinstance(node, schema.WAIT_NODES):
        return any(i.waiting_since is None for i in items)
    return True


def run_wait(batch: Batch, graph: Graph, node: schema.WaitNode, items: list[Item]) -> Results:
    out: Results = []
    entering = [i for i in items if i.waiting_since is None]
    for item in items:
        if item.waiting_since is not None:  # claimed again: the wait is over
            if isinstance(node, schema.WaitEventNode):
                label = "happened" if item.resume_exit == "happened" else "timed_out"
                out.append((item, Leave(label)))
            else:
                out.append((item, Leave("next")))
    if not entering:
        return out
    zones = batch.zones(graph, entering)
    data = (
        batch.contacts(i.contact_id for i in entering)
        if isinstance(node, schema.WaitDateFieldNode)
        else {}
    )
    now = batch.now
    for item in entering:
        contact = data.get(item.contact_id)
        until = wait_until(node, now, zones[item.id], contact.attributes if contact else {})
        if isinstance(node, schema.WaitEventNode):
            assert until is not None
            out.append((item, Park(until, waiting_event=node.event)))
        elif until is None or until <= now:
            detail = {"reason": "no date"} if until is None else None
            out.append((item, Leave("next", detail)))
        else:
            out.append((item, Park(until)))
    return out


def run_send(batch: Batch, graph: Graph, node: schema.SendEmailNode, items: list[Item]) -> Results:
    """Queue the email as a ``messages`` row (unique key: enrolment + node), or hold the
    contact until the send window opens in their time zone."""
    settings = graph.settings
    zones = batch.zones(graph, items) if settings.quiet_hours or settings.send_window else {}
    version_id = sending.latest_versions(batch.session, [node.template_id]).get(node.template_id)
    missing_sender = node.sender_identity_id is not None and not sending.identity_exists(
        batch.session, node.sender_identity_id
    )
    out: Results = []
    for item in items:
        if item.id in zones:
            allowed = next_send_time(
                batch.now, zones[item.id], settings.quiet_hours, settings.send_window
            )
            if allowed > batch.now:
                out.append((item, Park(allowed)))
                continue
        if version_id is None:
            # Deleted after publishing: the contact goes on without this email.
            skipped = {"skipped": f"template {node.template_id} no longer exists"}
            out.append((item, Leave("next", skipped)))
            continue
        if missing_sender:
            # Sending from another address than the one chosen would be worse than not
            # sending; and a message naming a missing identity would fail the whole batch.
            skipped = {"skipped": f"sender identity {node.sender_identity_id} no longer exists"}
            out.append((item, Leave("next", skipped)))
            continue
        key = message_key(item.id, node.id)
        batch.messages.append(
            {
                "dedupe_key": key,
                "contact_id": item.contact_id,
                "template_version_id": version_id,
                "sender_identity_id": node.sender_identity_id,
                "enrollment_id": item.id,
                "workflow_node_id": node.id,
                "workflow_name": graph.definition.name,
                "workflow_id": graph.workflow_id,
                "priority": settings.priority,
            }
        )
        out.append((item, Leave("next", {"message": key})))
    return out


def message_key(enrollment_id: int, node_id: str) -> str:
    """The outbox dedupe key: one email per enrolment and node, however often it runs."""
    return f"workflow:{enrollment_id}:{node_id}"


def run_branch(batch: Batch, graph: Graph, node: schema.BranchNode, items: list[Item]) -> Results:
    matched = conditions.matching_contacts(batch.session, node.condition, members(items), batch.now)
    return [(i, Leave("yes" if i.id in matched else "no")) for i in items]


def split_path(contact_id: int, node_id: str, node: schema.SplitNode) -> str:
    """The path a contact takes: a stable hash of (contact, node) over the weights."""
    digest = hashlib.sha256(f"{contact_id}:{node_id}".encode()).digest()
    total = sum(p.weight for p in node.paths)
    point = int.from_bytes(digest[:8], "big") / 2**64 * total
    for path in node.paths:
        point -= path.weight
        if point < 0:
            return path.name
    return node.paths[-1].name


def run_split(batch: Batch, graph: Graph, node: schema.SplitNode, items: list[Item]) -> Results:
    return [(i, Leave(split_path(i.contact_id, node.id, node))) for i in items]


def apply_contact_update(
    session: Session, node: schema.UpdateContactNode, contact_ids: list[int], now: Any
) -> None:
    """One UPDATE for every contact of the batch (plus one statement per tag change)."""
    values: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for key, value in node.set.items():
        if key.startswith("attributes."):
            attributes[key.removeprefix("attributes.")] = value
        else:
            values[key] = value
    if node.lifecycle_stage is not None:
        values["lifecycle_stage"] = node.lifecycle_stage
    if node.score_change:
        values["score"] = Contact.score + node.score_change
    if attributes:
        values["attributes"] = _merged_attributes(session, attributes)
    if values or node.add_tags or node.remove_tags:
        values["updated_at"] = now
        session.execute(
            update(Contact)
            .where(one_of(session, Contact.id, contact_ids))
            .values(values)
            .execution_options(synchronize_session=False)
        )
    tag_ops.add_tags(session, contact_ids, node.add_tags)
    tag_ops.remove_tags(session, contact_ids, node.remove_tags)
    if node.add_to_lists or node.remove_from_lists:
        # Static lists are segments: membership changes record segment.entered / .left
        # events, so "entered list" triggers and list conditions see them.
        for list_id in node.add_to_lists:
            add_members(session, list_id, contact_ids)
        for list_id in node.remove_from_lists:
            remove_members(session, list_id, contact_ids)


def _merged_attributes(session: Session, attributes: dict[str, Any]) -> Any:
    """SQL for attributes with ``attributes`` merged in (a null value removes the key)."""
    kept = {k: v for k, v in attributes.items() if v is not None}
    removed = [k for k, v in attributes.items() if v is None]
    if is_postgres(session):
        expr: Any = Contact.attributes.op("||")(bindparam(None, kept, type_=postgresql.JSONB))
        if removed:
            expr = expr.op("-")(bindparam(None, removed, type_=postgresql.ARRAY(Text)))
        return expr
    # SQLite's json_patch is RFC 7396 merge-patch: null members are removed.
    return func.json_patch(Contact.attributes, json.dumps(attributes))


def run_update(
    batch: Batch, graph: Graph, node: schema.UpdateContactNode, items: list[Item]
) -> Results:
    contact_ids = sorted({i.contact_id for i in items})
    apply_contact_update(batch.session, node, contact_ids, batch.now)
    batch.changed_contacts.update(contact_ids)
    batch.forget_contacts(contact_ids)
    return [(i, Leave("next")) for i in items]


def webhook_payload(
    graph: Graph, node: schema.WebhookNode, item: Item, contact: Any
) -> dict[str, Any]:
    return {
        "event": "workflow.webhook",
        "workflow": {
            "id": graph.workflow_id,
            "name": graph.definition.name,
            "version": graph.number,
        },
        "node": node.id,
        "enrollment_id": item.id,
        "contact": {
            "id": contact.id,
            "email": contact.email,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "lifecycle_stage": contact.lifecycle_stage,
            "score": contact.score,
            "attributes": contact.attributes,
        },
        "trigger": item.context.get("trigger"),
        "data": node.payload,
    }


def run_webhook(batch: Batch, graph: Graph, node: schema.WebhookNode, items: list[Item]) -> Results:
    workflow = batch.session.get(Workflow, graph.workflow_id)
    secret = workflow.webhook_secret if workflow is not None else ""
    data = batch.contacts(i.contact_id for i in items)
    calls = [
        webhooks.build_call(
            enrollment_id=i.id,
            node_id=node.id,
            method=node.method,
            url=node.url,
            payload=webhook_payload(graph, node, i, data[i.contact_id]),
            secret=secret,
            timeout=node.timeout_seconds,
            now=batch.now,
        )
        for i in items
        if i.contact_id in data
    ]
    responses = webhooks.perform(calls, batch.http)
    out: Results = []
    for item in items:
        response = responses.get(item.id, webhooks.HttpResponse(None, b"", "contact gone"))
        attempt = item.attempts + 1
        ok = response.status is not None and 200 <= response.status < 300
        if not ok and webhooks.retryable(response) and attempt < node.max_attempts:
            until = batch.now + webhooks.backoff(attempt, node.retry_backoff_seconds)
            out.append((item, Park(until, attempts=attempt)))
            continue
        result = webhooks.result_of(response, attempt)
        item.context = {
            **item.context,
            "webhooks": {**item.context.get("webhooks", {}), node.id: result},
        }
        item.context_changed = True
        detail = {"status": response.status, "attempts": attempt, "ok": ok}
        out.append((item, Leave("next", detail)))
    return out


def run_goal(batch: Batch, graph: Graph, node: schema.GoalNode, items: list[Item]) -> Results:
    if node.condition is None:
        met = {i.id for i in items}
    else:
        met = conditions.matching_contacts(batch.session, node.condition, members(items), batch.now)
    out: Results = []
    for item in items:
        if item.id in met:
            item.converted_at = item.converted_at or batch.now
            out.append((item, Leave("converted")))
        elif node.otherwise == "continue":
            out.append((item, Leave("not_met")))
        elif node.otherwise == "end":
            out.append((item, End(EnrollmentStatus.COMPLETED, "not_met")))
        else:
            out.append((item, Park(batch.now + GOAL_RECHECK)))
    return out


def run_exit(batch: Batch, graph: Graph, node: schema.ExitNode, items: list[Item]) -> Results:
    return [
        (
            i,
            End(
                EnrollmentStatus.CONVERTED if i.converted_at else EnrollmentStatus.COMPLETED,
                "exit",
            ),
        )
        for i in items
    ]
