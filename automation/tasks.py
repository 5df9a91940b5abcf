"""The worker's Celery app and its thin tasks: take ids, open a session, call one domain
function. Queues: ``engine`` (workflow ticks, segment refresh, imports), ``send`` (the
outbox), ``tracking`` (hit ingestion)."""

from __future__ import annotations

from typing import Any

from automation.queueing import make_celery
from automation.runtime import runtime

celery_app = make_celery(runtime().settings)
celery_app.set_current()


@celery_app.task(name="contacts.run_import_job", queue="engine")
def run_import_job(job_id: int) -> dict[str, Any]:
    from automation.contacts.jobs import run_import_job as run

    return run(runtime().sessions, job_id)


@celery_app.task(name="workflows.tick", queue="engine")
def workflows_tick() -> dict[str, Any]:
    """Move due enrolments; when more are due than one run may take, queue another run
    so a second worker helps (beat also calls this every few seconds)."""
    from automation.workflows.engine import run_due

    report = run_due(runtime().sessions)
    if report.more:
        runtime().enqueue(workflows_tick)
    return report.as_dict()


@celery_app.task(name="workflows.scan_dates", queue="engine")
def workflows_scan_dates() -> int:
    from automation.db import transaction
    from automation.workflows.triggers import scan_date_triggers

    with transaction(runtime().sessions) as session:
        return scan_date_triggers(session)


def _seconds(name: str, default: float) -> float:
    import os

    return float(os.environ.get(name, default))


# A tick that waited longer than its period is dropped: the next one does the same work.
_TICK = _seconds("NURTURE_WORKFLOW_TICK_SECONDS", 2.0)
_DATES = _seconds("NURTURE_WORKFLOW_DATE_SCAN_SECONDS", 60.0)
celery_app.conf.beat_schedule = {
    **(celery_app.conf.beat_schedule or {}),
    "workflows-tick": {
        "task": "workflows.tick",
        "schedule": _TICK,
        "options": {"queue": "engine", "expires": max(_TICK * 5, 10)},
    },
    "workflows-scan-dates": {
        "task": "workflows.scan_dates",
        "schedule": _DATES,
        "options": {"queue": "engine", "expires": _DATES},
    },
}
