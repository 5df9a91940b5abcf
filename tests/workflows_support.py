"""Helpers for workflow tests: a stepping clock, a tiny workflow builder, and a harness
that runs the real engine (run_due) against the test database."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.contacts.events import ingest_events
from automation.contacts.models import Contact
from automation.workflows import service
from automation.workflows.engine import RunReport, run_due
from automation.workflows.models import OPEN_STATUSES, Enrollment, EnrollmentStep


class SteppingClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, value: datetime) -> None:
        self.now = value


def doc(
    nodes: list[dict[str, Any]], *, trigger: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A workflow document: trigger defaults to the ``signed_up`` event, start to the first node."""
    out: dict[str, Any] = {
        "name": extra.pop("name", "Test workflow"),
        "trigger": trigger or {"type": "event", "event": "signed_up"},
        "start": nodes[0]["id"] if nodes else None,
        "nodes": nodes,
    }
    out.update(extra)
    return copy.deepcopy(out)


@dataclass
class Harness:
    sessions: sessionmaker[Session]
    clock: SteppingClock

    def publish(self, document: dict[str, Any]) -> int:
        with self.sessions() as s:
            workflow = service.create_workflow(s, document)
            service.publish(s, workflow.id)
            s.commit()
            return workflow.id

    def events(self, *items: dict[str, Any]) -> list[Any]:
        with self.sessions() as s:
            result = ingest_events(s, list(items), source="api")
            s.commit()
        errors = [r.errors for r in result.results if r.status == "error"]
        assert not errors, errors
        return result.results

    def contact_id(self, email: str) -> int:
        with self.sessions() as s:
            found = s.scalar(select(Contact.id).where(Contact.email == email))
            assert found is not None, email
            return found

    def tick(self, **kwargs: Any) -> RunReport:
        return run_due(self.sessions, **kwargs)

    def enrollments(self, workflow_id: int | None = None) -> list[Enrollment]:
        with self.sessions() as s:
            query = select(Enrollment).order_by(Enrollment.id)
            if workflow_id is not None:
                query = query.where(Enrollment.workflow_id == workflow_id)
            return list(s.scalars(query))

    def path(self, enrollment_id: int) -> list[tuple[str, str | None]]:
        """(node, exit) of every visit, in order; the visit the contact waits in (not
        journaled until it ends) last, with no exit."""
        with self.sessions() as s:
            steps = s.scalars(
                select(EnrollmentStep)
                .where(EnrollmentStep.enrollment_id == enrollment_id)
                .order_by(EnrollmentStep.id)
            )
            path: list[tuple[str, str | None]] = [(step.node_id, step.exit) for step in steps]
            enrollment = s.get(Enrollment, enrollment_id)
            assert enrollment is not None
            if (
                enrollment.status in OPEN_STATUSES
                and enrollment.waiting_since is not None
                and enrollment.current_node is not None
            ):
                path.append((enrollment.current_node, None))
            return path


def start_clock(value: datetime | None = None) -> SteppingClock:
    stepping = SteppingClock(value or datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    clock.set_source(stepping)
    return stepping


def make_templates(sessions: sessionmaker[Session], *names: str) -> list[int]:
    """Real templates (through the email module's checks), one per name; their ids."""
    from emailkit import make_template

    ids = []
    with sessions() as s:
        for name in names:
            ids.append(
                make_template(
                    s, name=name, subject=f"{name} for {{{{ contact.email }}}}"
                ).template.id
            )
        s.commit()
    return ids
