"""Dry run: the path one contact would take through a workflow, given a hypothetical
timeline of events, and the emails it would be sent, when (in its time zone), without
writing or sending anything.

The simulation walks the graph with a simulated clock. Waits jump the clock; a wait for
an event takes the first matching timeline event before its timeout; branches evaluate
their condition in Python on a copy of the contact that update nodes change. Webhooks are
not called: a ``webhook.result`` timeline event (properties ``node``, ``status``, ``body``)
says what one answered, else it is taken to have answered 200. An ``email.opened`` or
``email.clicked`` timeline event with property ``node`` is an engagement with the email
of that send node.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, assert_never

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Event
from automation.contacts.service import get_contact
from automation.reactions import is_machine
from automation.segments.models import SegmentMembership
from automation.workflows import conditions, schema
from automation.workflows.graph import Graph, graph_from
from automation.workflows.models import WorkflowVersion
from automation.workflows.nodes import split_path, wait_until
from automation.workflows.service import get_version, get_workflow
from automation.workflows.timing import contact_zone, next_send_time

MAX_STEPS = 500
STORED_EVENTS = 5000  # the contact's most recent stored events the simulation sees


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    name: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class DryRun:
    steps: list[schema.DryRunStep]
    emails: list[schema.DryRunEmail]
    outcome: str  # completed | converted | waiting (past the horizon) | failed


def _draft_graph(workflow: Any) -> Graph:
    definition = schema.WorkflowDefinition.model_validate(workflow.draft)
    return Graph(0, workflow.id, 0, clock.now(), definition, {n.id: n for n in definition.nodes})


def dry_run(
    session: Session,
    workflow_id: int,
    contact_id: int,
    *,
    timeline: list[TimelineEvent],
    start_at: datetime | None = None,
    version: int | None = None,
    horizon_days: int = 120,
) -> DryRun:
    """Simulate ``contact_id`` entering the draft (or ``version``) at ``start_at``."""
    workflow = get_workflow(session, workflow_id)
    if version is None:
        graph = _draft_graph(workflow)
    else:
        row: WorkflowVersion = get_version(session, workflow_id, version)
        graph = graph_from(row)
    contact_row = get_contact(session, contact_id)
    contact = {
        "id": contact_row.id,
        "email": contact_row.email,
        "first_name": contact_row.first_name,
        "last_name": contact_row.last_name,
        "status": contact_row.status.value,
        "time_zone": contact_row.time_zone,
        "lifecycle_stage": contact_row.lifecycle_stage.value,
        "score": contact_row.score,
        "attributes": copy.deepcopy(contact_row.attributes),
        "tags": sorted(t.name for t in contact_row.tags),
        "lists": list(
            session.scalars(
                select(SegmentMembership.segment_id).where(
                    SegmentMembership.contact_id == contact_id
                )
            )
        ),
    }
    # Conditions see the contact's stored behaviour as well as the hypothetical timeline.
    stored = [
        TimelineEvent(e.occurred_at, e.name, dict(e.properties or {}))
        for e in session.execute(
            select(Event.occurred_at, Event.name, Event.properties)
            .where(Event.contact_id == contact_id)
            .order_by(Event.occurred_at.desc())
            .limit(STORED_EVENTS)
        )
    ]
    return simulate(
        session, graph, contact, [*stored, *timeline], start_at or clock.now(), horizon_days
    )


def simulate(
    session: Session,
    graph: Graph,
    contact: dict[str, Any],
    timeline: list[TimelineEvent],
    start: datetime,
    horizon_days: int,
) -> DryRun:
    events = sorted(timeline, key=lambda e: e.at)
    settings = graph.settings
    horizon = start + timedelta(days=horizon_days)
    now = start
    steps: list[schema.DryRunStep] = []
    emails: list[schema.DryRunEmail] = []
    facts = conditions.SimulatedFacts(sent_nodes=set(), events=events, webhooks={})
    # Machine hits never wake a wait or meet an event goal (automation/reactions.py);
    # conditions see every event, since a segment condition may ask for machine hits too.
    human = [e for e in events if not is_machine(e.properties)]
    node_id = graph.start

    def zone() -> Any:
        return contact_zone(contact["time_zone"], settings.fallback_time_zone)

    def local(at: datetime) -> str:
        return at.astimezone(zone()).strftime("%Y-%m-%d %H:%M %Z (%a)")

    def record(at: datetime, node: Any, exit_label: str | None, note: str = "") -> None:
        steps.append(
            schema.DryRunStep(at, local(at), node.id, node.title, node.type, exit_label, note)
        )

    def goal_reached(until: datetime) -> datetime | None:
        """When, up to ``until``, the workflow goal is met (checked at timeline events)."""
        goal = settings.goal
        if goal is None:
            return None
        for event in events:
            if not now <= event.at <= until:
                continue
            if (
                goal.event is not None
                and not is_machine(event.properties)
                and event.name == goal.event
                and conditions.event_matches(goal.event_where, event.properties)
            ):
                return event.at
            if goal.condition is not None and conditions.contact_meets(
                session, goal.condition, contact, facts, event.at
            ):
                return event.at
        return None

    converted = False
    for _ in range(MAX_STEPS):
        if node_id is None:
            return DryRun(steps, emails, "converted" if converted else "completed")
        node = graph.node(node_id)
        label: str
        match node:
            case schema.WaitBase():
                until = wait_until(node, now, zone(), contact["attributes"])
                if isinstance(node, schema.WaitEventNode):
                    assert until is not None
                    hit = next(
                        (
                            e
                            for e in human
                            if e.name == node.event
                            and now <= e.at <= until
                            and conditions.event_matches(node.where, e.properties)
                        ),
                        None,
                    )
                    label, until = ("happened", hit.at) if hit else ("timed_out", until)
                else:
                    label = "next"
                    until = max(until or now, now)
                met = goal_reached(until)
                if met is not None:
                    record(met, node, "converted", "met the workflow goal while waiting")
                    return DryRun(steps, emails, "converted")
                if until > horizon:
                    record(now, node, None, f"still waiting until {local(until)}")
                    return DryRun(steps, emails, "waiting")
                now = until
                record(now, node, label)
            case schema.SendEmailNode():
                allowed = next_send_time(now, zone(), settings.quiet_hours, settings.send_window)
                note = "held for the send window / quiet hours" if allowed > now else ""
                now = allowed
                facts.sent_nodes.add(node.id)
                emails.append(schema.DryRunEmail(now, local(now), node.id, node.template_id))
                label = "next"
                sent = f"template {node.template_id}"
                record(now, node, label, (note + "; " if note else "") + sent)
            case schema.BranchNode():
                holds = conditions.contact_meets(session, node.condition, contact, facts, now)
                label = "yes" if holds else "no"
                record(now, node, label)
            case schema.SplitNode():
                label = split_path(contact["id"], node.id, node)
                record(now, node, label)
            case schema.UpdateContactNode():
                _apply_update(contact, node)
                label = "next"
                record(now, node, label)
            case schema.WebhookNode():
                answer = _webhook_answer(events, node.id, now)
                facts.webhooks[node.id] = answer
                label = "next"
                call = f"would call {node.method} {node.url} (answer {answer['status']})"
                record(now, node, label, call)
            case schema.GoalNode():
                holds = node.condition is None or conditions.contact_meets(
                    session, node.condition, contact, facts, now
                )
                if holds:
                    converted, label = True, "converted"
                elif node.otherwise == "end":
                    record(now, node, "not_met")
                    return DryRun(steps, emails, "completed")
                else:
                    label = "not_met"
                record(now, node, label)
            case schema.ExitNode():
                record(now, node, "exit")
                return DryRun(steps, emails, "converted" if converted else "completed")
            case _:
                assert_never(node)
        met = goal_reached(now)
        if met is not None and settings.goal is not None:
            return DryRun(steps, emails, "converted")
        node_id = graph.follow(node.id, label)
    return DryRun(steps, emails, "failed")


def _apply_update(contact: dict[str, Any], node: schema.UpdateContactNode) -> None:
    for key, value in node.set.items():
        if key.startswith("attributes."):
            name = key.removeprefix("attributes.")
            if value is None:
                contact["attributes"].pop(name, None)
            else:
                contact["attributes"][name] = value
        else:
            contact[key] = value
    if node.lifecycle_stage is not None:
        contact["lifecycle_stage"] = node.lifecycle_stage.value
    contact["score"] += node.score_change
    tags = set(contact["tags"]) | set(node.add_tags)
    contact["tags"] = sorted(tags - set(node.remove_tags))


def _webhook_answer(events: list[TimelineEvent], node_id: str, now: datetime) -> dict[str, Any]:
    for event in reversed(events):
        props = event.properties
        if event.name == "webhook.result" and props.get("node") == node_id and event.at <= now:
            status = props.get("status", 200)
            ok = isinstance(status, int) and 200 <= status < 300
            return {"ok": ok, "status": status, "body": props.get("body")}
    return {"ok": True, "status": 200, "body": None}
