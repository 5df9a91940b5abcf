"""Moving running enrolments from one version to another with a node-to-node map, after
an impact preview ("312 contacts waiting at 'Wait 2 days' will move to 'Wait 3 days').

Nodes that keep their id in the new version map to themselves unless the map says
otherwise. A contact waiting at a wait keeps the moment it started waiting: moved to a
"wait 3 days", it leaves three days after it arrived at the old "wait 2 days".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation.bulk import insert_rows, update_rows
from automation.contacts.models import Contact
from automation.errors import FieldError, InvalidInput
from automation.workflows.graph import Graph, load_graph
from automation.workflows.models import OPEN_STATUSES, Enrollment, EnrollmentStep
from automation.workflows.nodes import wait_until
from automation.workflows.schema import WAIT_NODES, WaitEventNode
from automation.workflows.service import get_version, get_workflow
from automation.workflows.timing import contact_zone


@dataclass(frozen=True)
class Move:
    from_node: str
    from_title: str
    to_node: str
    to_title: str
    waiting: int  # contacts waiting at the node
    pending: int  # contacts about to run the node

    @property
    def contacts(self) -> int:
        return self.waiting + self.pending

    @property
    def message(self) -> str:
        where = "waiting at" if self.waiting and not self.pending else "at"
        noun = "contact" if self.contacts == 1 else "contacts"
        return f"{self.contacts} {noun} {where} '{self.from_title}' will move to '{self.to_title}'"


@dataclass(frozen=True)
class MigrationPlan:
    source: Graph
    target: Graph
    moves: list[Move]

    @property
    def total(self) -> int:
        return sum(m.contacts for m in self.moves)


def plan_migration(
    session: Session,
    workflow_id: int,
    *,
    from_version: int,
    to_version: int | None = None,
    node_map: dict[str, str] | None = None,
) -> MigrationPlan:
    """What a migration would do; refuses a map that leaves contacts nowhere to go."""
    workflow = get_workflow(session, workflow_id)
    source_version = get_version(session, workflow_id, from_version)
    if to_version is None:
        if workflow.active_version_id is None:
            raise InvalidInput(FieldError("to_version", "the workflow has no published version"))
        target_id = workflow.active_version_id
    else:
        target_id = get_version(session, workflow_id, to_version).id
    if target_id == source_version.id:
        raise InvalidInput(FieldError("to_version", "choose another version than the source"))
    source = load_graph(session, source_version.id)
    target = load_graph(session, target_id)
    node_map = node_map or {}
    errors = []
    for old, new in node_map.items():
        if old not in source.nodes:
            errors.append(
                FieldError(f"node_map.{old}", f"version {source.number} has no node '{old}'")
            )
        if new not in target.nodes:
            errors.append(
                FieldError(f"node_map.{old}", f"version {target.number} has no node '{new}'")
            )
    if errors:
        raise InvalidInput(errors)
    counts = session.execute(
        select(
            Enrollment.current_node,
            Enrollment.waiting_since.is_not(None),
            func.count(),
        )
        .where(
            Enrollment.workflow_version_id == source.version_id,
            Enrollment.status.in_(OPEN_STATUSES),
        )
        .group_by(Enrollment.current_node, Enrollment.waiting_since.is_not(None))
    ).all()
    per_node: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for node_id, is_waiting, count in counts:
        per_node[node_id or ""][0 if is_waiting else 1] += count
    moves = []
    for node_id in sorted(
        per_node, key=lambda n: list(source.nodes).index(n) if n in source.nodes else 0
    ):
        destination = node_map.get(node_id, node_id if node_id in target.nodes else None)
        waiting, pending = per_node[node_id]
        if destination is None:
            noun = "contact is" if waiting + pending == 1 else "contacts are"
            errors.append(
                FieldError(
                    f"node_map.{node_id}",
                    f"{waiting + pending} {noun} at '{source.title(node_id)}', which version "
                    f"{target.number} does not have: map it to a node",
                )
            )
            continue
        moves.append(
            Move(
                node_id,
                source.title(node_id),
                destination,
                target.title(destination),
                waiting,
                pending,
            )
        )
    if errors:
        raise InvalidInput(errors)
    return MigrationPlan(source, target, moves)


def apply_migration(session: Session, plan: MigrationPlan, now: datetime) -> int:
    """Move every open enrolment of the plan's source version; returns how many moved.
    Rows are locked first (a worker moving one finishes before it is migrated)."""
    source, target = plan.source, plan.target
    destination = {m.from_node: m.to_node for m in plan.moves}
    rows = session.execute(
        select(
            Enrollment.id,
            Enrollment.contact_id,
            Enrollment.current_node,
            Enrollment.waiting_since,
            Enrollment.next_run_at,
            Enrollment.waiting_event,
            Enrollment.resume_exit,
        )
        .where(
            Enrollment.workflow_version_id == source.version_id,
            Enrollment.status.in_(OPEN_STATUSES),
        )
        .order_by(Enrollment.id)
        .with_for_update()
    ).all()
    waiting_contacts = [r.contact_id for r in rows if r.waiting_since is not None]
    contacts = (
        {
            c.id: c
            for c in session.execute(
                select(Contact.id, Contact.time_zone, Contact.attributes).where(
                    Contact.id.in_(waiting_contacts)
                )
            )
        }
        if waiting_contacts
        else {}
    )
    updates: list[dict[str, Any]] = []
    journal: list[dict[str, Any]] = []
    fallback = target.settings.fallback_time_zone
    for row in rows:
        to_node = destination.get(row.current_node or "")
        if to_node is None:
            continue
        node = target.node(to_node)
        update: dict[str, Any] = {
            "id": row.id,
            "workflow_version_id": target.version_id,
            "current_node": to_node,
            "waiting_since": row.waiting_since,
            "next_run_at": row.next_run_at,
            "waiting_event": row.waiting_event,
            "resume_exit": row.resume_exit,
            "attempts": 0,
        }
        if row.waiting_since is not None:
            # The visit at the old node ends here, journaled with where it went; the wait
            # goes on at the new node, from when it began, and is journaled when it ends.
            journal.append(
                {
                    "enrollment_id": row.id,
                    "workflow_version_id": source.version_id,
                    "node_id": row.current_node,
                    "entered_at": row.waiting_since,
                    "left_at": now,
                    "exit": "migrated",
                    "detail": {"migrated_to": {"version": target.number, "node": to_node}},
                }
            )
            if isinstance(node, WAIT_NODES):
                contact = contacts.get(row.contact_id)
                zone = contact_zone(contact.time_zone if contact else None, fallback)
                until = wait_until(
                    node, row.waiting_since, zone, contact.attributes if contact else {}
                )
                update["next_run_at"] = max(until or now, now) if row.resume_exit is None else now
                is_event = isinstance(node, WaitEventNode)
                keeps_event = is_event and row.resume_exit is None
                update["waiting_event"] = getattr(node, "event", None) if keeps_event else None
                update["resume_exit"] = row.resume_exit if is_event else None
            else:  # no longer a wait: run the new node at the next tick
                update.update(
                    waiting_since=None, next_run_at=now, waiting_event=None, resume_exit=None
                )
        updates.append(update)
    insert_rows(session, EnrollmentStep, journal)
    update_rows(session, Enrollment, updates)
    return len(updates)
