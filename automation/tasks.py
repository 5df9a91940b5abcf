"""The worker's Celery app and its thin tasks: take ids, open a session, call one domain
function. Queues: ``engine`` (workflow ticks, segment refresh, imports), ``send`` (the
outbox), ``tracking`` (hit ingestion)."""

from __future__ import annotations

import os
from typing import Any

from automation.policy import effective_settings
from automation.queueing import make_celery
from automation.runtime import runtime

celery_app = make_celery(runtime().settings)
celery_app.set_current()


@celery_app.task(name="contacts.run_import_job", queue="engine")
def run_import_job(job_id: int) -> dict[str, Any]:
    from automation.contacts.jobs import run_import_job as run

    return run(runtime().sessions, job_id)


@celery_app.task(name="segments.refresh", queue="engine")
def refresh_segment(segment_id: int) -> dict[str, Any]:
    from automation.db import transaction
    from automation.errors import DomainError
    from automation.segments.membership import refresh_segment as refresh

    try:
        with transaction(runtime().sessions) as session:
            return refresh(session, segment_id).as_dict()
    except DomainError as exc:  # deleted, or its definition names a deleted field
        return {"segment_id": segment_id, "skipped": exc.message}


@celery_app.task(name="segments.sync_field_indexes", queue="engine")
def sync_field_indexes() -> dict[str, Any]:
    """Build / drop the expression indexes of indexed custom fields (after a flag change,
    a field's deletion, and with the periodic reconciliation)."""
    from automation.segments.field_indexes import sync_field_indexes as sync

    return sync(runtime().engine).as_dict()


@celery_app.task(name="segments.reconcile", queue="engine")
def reconcile_segments() -> int:
    """Periodic full refresh of every dynamic segment (catches time-relative conditions),
    and of the indexed fields' indexes (one dropped behind our back is rebuilt)."""
    from automation.segments.membership import due_segment_ids

    with runtime().sessions() as session:
        ids = due_segment_ids(session)
    runtime().enqueue(sync_field_indexes)
    for segment_id in ids:
        runtime().enqueue(refresh_segment, segment_id)
    return len(ids)


celery_app.conf.beat_schedule["segments.reconcile"] = {
    "task": "segments.reconcile",
    "schedule": 600.0,  # seconds; events and edits refresh the contacts they touch at once
}


@celery_app.task(name="email.send_due", queue="send")
def send_due() -> dict[str, Any]:
    from automation.email.outbox import send_due as run
    from automation.email.sender import process_sending

    report = run(runtime().sessions, process_sending(runtime().settings))
    return {"batches": report.batches, "claimed": report.claimed, **report.outcomes}


@celery_app.task(name="email.expire_leases", queue="send")
def expire_leases() -> int:
    from automation.db import transaction
    from automation.email.outbox import expire_leases as run

    with transaction(runtime().sessions) as session:
        return run(session)


celery_app.conf.update(
    beat_schedule={
        **(celery_app.conf.beat_schedule or {}),
        # Due messages are rows; these ticks only wake the senders. Stale ticks expire.
        "email.send_due": {"task": "email.send_due", "schedule": 5.0, "options": {"expires": 10}},
        "email.expire_leases": {
            "task": "email.expire_leases",
            "schedule": float(os.environ.get("NURTURE_LEASE_EXPIRY_SECONDS", "30")),
        },
    }
)


@celery_app.task(name="workflows.tick", queue="engine")
def workflows_tick() -> dict[str, Any]:
    """Move due enrolments; when more are due than one run may take, queue another run
    so a second worker helps (beat also calls this every few seconds)."""
    from automation.workflows.engine import run_due

    report = run_due(runtime().sessions)
    if report.more:
        runtime().enqueue(workflows_tick)
    if report.messages:
        runtime().enqueue(send_due)  # the emails just queued go out now, not at the next beat
    return report.as_dict()


@celery_app.task(name="workflows.scan_dates", queue="engine")
def workflows_scan_dates() -> int:
    from automation.db import transaction
    from automation.workflows.triggers import scan_date_triggers

    with transaction(runtime().sessions) as session:
        return scan_date_triggers(session)


def _seconds(name: str, default: float) -> float:
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


@celery_app.task(name="campaigns.tick", queue="engine")
def campaigns_tick() -> dict[str, int]:
    """Start due campaigns, decide due A/B tests, mark finished sends (rows, not countdowns)."""
    from automation.campaigns.service import run_due
    from automation.db import transaction

    with transaction(runtime().sessions) as session:
        report = run_due(session)
    if report["started"] or report["decided"]:
        runtime().enqueue(send_due)  # the emails just queued go out now, not at the next beat
    return report


celery_app.conf.beat_schedule["campaigns.tick"] = {
    "task": "campaigns.tick",
    "schedule": 10.0,
    "options": {"expires": 20},
}


@celery_app.task(name="tracking.drain_hits", queue="tracking")
def drain_hits() -> dict[str, Any]:
    from automation.tracking.hits import make_hit_queue
    from automation.tracking.service import drain_hits as run

    settings = runtime().settings
    with runtime().sessions() as session:
        half_life = effective_settings(session, settings).engagement_half_life_days
    report = run(runtime().sessions, make_hit_queue(settings), half_life_days=half_life)
    return report.as_dict()


celery_app.conf.beat_schedule["tracking.drain_hits"] = {
    "task": "tracking.drain_hits",
    "schedule": 2.0,  # hits wait in the queue until drained; a stale tick just expires
    "options": {"expires": 10},
}


@celery_app.task(name="tracking.sunset", queue="engine")
def apply_sunset() -> int:
    from automation.db import transaction
    from automation.tracking.sunset import apply_sunset as run

    with transaction(runtime().sessions) as session:
        policy = effective_settings(session, runtime().settings)
        return run(session, max_sends=policy.sunset_sends, max_days=policy.sunset_days)


celery_app.conf.beat_schedule["tracking.sunset"] = {
    "task": "tracking.sunset",
    "schedule": 3600.0,
}


@celery_app.task(name="tracking.drain_site", queue="tracking")
def drain_site() -> dict[str, Any]:
    """Site events and identifications from the collect endpoint into events."""
    from dataclasses import asdict

    from automation.tracking.hits import make_hit_queue
    from automation.tracking.site import drain_site_events

    report = drain_site_events(runtime().sessions, make_hit_queue(runtime().settings, "site"))
    return asdict(report)


celery_app.conf.beat_schedule["tracking.drain_site"] = {
    "task": "tracking.drain_site",
    "schedule": 2.0,
    "options": {"expires": 10},
}


@celery_app.task(name="tracking.expire_anonymous", queue="engine")
def expire_anonymous() -> int:
    """Anonymous site events of visitors who never identified, after 90 days."""
    from automation.tracking.site import expire_anonymous as run

    with runtime().sessions() as session:
        removed = run(session)
        session.commit()
    return removed


celery_app.conf.beat_schedule["tracking.expire_anonymous"] = {
    "task": "tracking.expire_anonymous",
    "schedule": 86400.0,
}
