"""Per-node statistics, read from the journal (enrollment_steps) and the enrolments.

- entered: visits to the node;
- waiting: open enrolments standing at the node now;
- completed: visits that left by one of the node's own exits (an exit node counts);
- exited: enrolments that left the workflow here early (removed by hand or by archiving,
  or failed);
- converted: contacts who met the goal here (the workflow goal while here, or a goal node);
- exits: visits per exit label (yes/no, each split path, happened/timed_out, ...).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation.workflows.graph import load_graphs
from automation.workflows.models import (
    OPEN_STATUSES,
    Enrollment,
    EnrollmentStep,
    WorkflowVersion,
)
from automation.workflows.sending import email_statistics
from automation.workflows.service import get_version, get_workflow

EARLY_EXITS = ("removed", "failed")
TOTALS = ("enrolled", "active", "paused", "completed", "converted", "exited", "failed")


def workflow_statistics(
    session: Session, workflow_id: int, *, version: int | None = None
) -> dict[str, Any]:
    """Totals by enrolment status and figures per node, for one version or all of them."""
    workflow = get_workflow(session, workflow_id)
    if version is not None:
        version_ids = [get_version(session, workflow_id, version).id]
    else:
        version_ids = list(
            session.scalars(
                select(WorkflowVersion.id).where(WorkflowVersion.workflow_id == workflow.id)
            )
        )
    totals: dict[str, int] = defaultdict(int)
    waiting: dict[str, int] = defaultdict(int)
    entered: dict[str, int] = defaultdict(int)
    in_visit = Enrollment.waiting_since.is_not(None)
    for node_id, status, visiting, count in session.execute(
        select(Enrollment.current_node, Enrollment.status, in_visit, func.count())
        .where(Enrollment.workflow_version_id.in_(version_ids))
        .group_by(Enrollment.current_node, Enrollment.status, in_visit)
    ):
        totals[status.value] += count
        totals["enrolled"] += count
        if status in OPEN_STATUSES and node_id is not None:
            waiting[node_id] += count
            if visiting:  # a visit not yet journaled: it is written when it ends
                entered[node_id] += count
    exits: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for node_id, label, count in session.execute(
        select(EnrollmentStep.node_id, EnrollmentStep.exit, func.count())
        .where(EnrollmentStep.workflow_version_id.in_(version_ids))
        .group_by(EnrollmentStep.node_id, EnrollmentStep.exit)
    ):
        entered[node_id] += count
        if label is not None:
            exits[node_id][label] += count
    graphs = load_graphs(session, version_ids)
    titles: dict[str, tuple[str, str]] = {}
    own_exits: dict[str, set[str]] = defaultdict(set)
    for version_id in sorted(graphs):  # the newest version names a node last
        for node in graphs[version_id].definition.nodes:
            titles[node.id] = (node.title, node.type)
            own_exits[node.id] |= set(node.exits()) | ({"exit"} if node.type == "exit" else set())
    nodes = []
    for node_id in sorted(set(titles) | set(entered) | set(waiting), key=_order(titles)):
        by_label = exits.get(node_id, {})
        title, kind = titles.get(node_id, (node_id, "unknown"))
        nodes.append(
            {
                "node_id": node_id,
                "name": title,
                "type": kind,
                "entered": entered.get(node_id, 0),
                "waiting": waiting.get(node_id, 0),
                "completed": sum(n for label, n in by_label.items() if label in own_exits[node_id]),
                "exited": sum(by_label.get(label, 0) for label in EARLY_EXITS),
                "converted": by_label.get("converted", 0),
                "exits": dict(sorted(by_label.items())),
            }
        )
    email = email_statistics(session, workflow.id, version_ids)
    for figures in nodes:
        if figures["type"] == "send_email":
            figures["email"] = email.get(
                str(figures["node_id"]), {"sent": 0, "opened": 0, "clicked": 0}
            )
    return {
        "workflow_id": workflow.id,
        "version": version,
        "totals": {key: totals.get(key, 0) for key in TOTALS},
        "nodes": nodes,
    }


def totals_by_workflow(session: Session) -> dict[int, dict[str, int]]:
    """Enrolments of every workflow by status (the workflow list's live counts), in one
    grouped query; a workflow nobody entered is absent."""
    out: dict[int, dict[str, int]] = {}
    for workflow_id, status, count in session.execute(
        select(Enrollment.workflow_id, Enrollment.status, func.count()).group_by(
            Enrollment.workflow_id, Enrollment.status
        )
    ):
        figures = out.setdefault(workflow_id, dict.fromkeys(TOTALS, 0))
        figures[status.value] += count
        figures["enrolled"] += count
    return out


def open_by_version(session: Session, workflow_id: int) -> dict[int, int]:
    """Version number -> open (active or paused) enrolments on it: what a migration moves."""
    return {
        number: count
        for number, count in session.execute(
            select(WorkflowVersion.number, func.count())
            .join(Enrollment, Enrollment.workflow_version_id == WorkflowVersion.id)
            .where(
                WorkflowVersion.workflow_id == workflow_id,
                Enrollment.status.in_(OPEN_STATUSES),
            )
            .group_by(WorkflowVersion.number)
        )
    }


def _order(titles: dict[str, Any]) -> Any:
    order = {node_id: i for i, node_id in enumerate(titles)}
    return lambda node_id: (order.get(node_id, len(order)), node_id)
