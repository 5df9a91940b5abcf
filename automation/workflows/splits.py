"""The A/B report of a workflow `split` node: per path, the contacts that took it, the
emails sent to them after the split, human unique opens and clicks (machine hits never
count, as in campaigns), the rates with Wilson intervals, and the same significance test
as a campaign's A/B test (automation.campaigns.stats) on open and on click rate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, exists, func, select, true
from sqlalchemy.orm import Session

from automation.campaigns.stats import Arm, decide
from automation.contacts.models import Event
from automation.email.models import Message, MessageStatus
from automation.errors import NotFound
from automation.workflows.graph import load_graphs
from automation.workflows.models import EnrollmentStep, WorkflowVersion
from automation.workflows.schema import SplitNode
from automation.workflows.service import get_workflow

OPENED, CLICKED = "email.opened", "email.clicked"


def _human(names: tuple[str, ...]) -> Any:
    """A human hit of the message (tracking records a human click as an open too)."""
    return exists().where(
        Event.contact_id == Message.contact_id,
        Event.name.in_(names),
        Event.properties["message_id"].as_integer() == Message.id,
        ~(Event.properties["machine"].as_boolean() == true()),
    )


def _flag(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def split_report(
    session: Session, workflow_id: int, node_id: str, *, confidence: float = 0.95
) -> dict[str, Any]:
    """Every version of the workflow that has ``node_id`` as a split node counts."""
    get_workflow(session, workflow_id)
    version_ids = list(
        session.scalars(
            select(WorkflowVersion.id).where(WorkflowVersion.workflow_id == workflow_id)
        )
    )
    paths: list[str] = []
    for graph in load_graphs(session, version_ids).values():
        node = graph.nodes.get(node_id)
        if isinstance(node, SplitNode):
            paths += [p.name for p in node.paths if p.name not in paths]
    if not paths:
        raise NotFound(f"workflow {workflow_id} has no split node {node_id!r}")
    step = EnrollmentStep
    scope = [step.workflow_version_id.in_(version_ids), step.node_id == node_id]
    entered = dict(
        session.execute(
            select(step.exit, func.count())
            .where(*scope, step.exit.is_not(None))
            .group_by(step.exit)
        ).all()
    )
    sent = Message.status == MessageStatus.SENT
    delivered = and_(sent, Message.bounced_at.is_(None))
    rows = session.execute(
        select(
            step.exit,
            _flag(sent),
            _flag(delivered),
            _flag(and_(delivered, _human((OPENED,)))),
            _flag(and_(delivered, _human((CLICKED,)))),
        )
        .select_from(step)
        .join(
            Message,
            and_(Message.enrollment_id == step.enrollment_id, Message.created_at >= step.left_at),
        )
        .where(*scope, step.exit.is_not(None))
        .group_by(step.exit)
    ).all()
    counts = {label: (int(s), int(d), int(o), int(c)) for label, s, d, o, c in rows}
    out_paths: list[dict[str, Any]] = []
    for label in paths:
        s, d, o, c = counts.get(label, (0, 0, 0, 0))
        out_paths.append(
            {
                "path": label,
                "contacts": int(entered.get(label, 0)),
                "sent": s,
                "delivered": d,
                "human_unique_opens": o,
                "human_unique_clicks": c,
                "open_rate": o / d if d else 0.0,
                "click_rate": c / d if d else 0.0,
            }
        )
    tests: dict[str, Any] = {}
    for metric, key in (("open_rate", "human_unique_opens"), ("click_rate", "human_unique_clicks")):
        arms = [Arm(n, p["path"], p[key], p["delivered"]) for n, p in enumerate(out_paths)]
        result = decide(arms, confidence=confidence, min_sample=1)
        result["leader"] = out_paths[result.pop("leader_id")]["path"]
        for row in result["variants"]:
            row["path"] = out_paths[row.pop("variant_id")]["path"]
            row.pop("name", None)
        tests[metric] = result
    return {"workflow_id": workflow_id, "node_id": node_id, "paths": out_paths, "tests": tests}


__all__ = ["split_report"]
