"""The worker process's entry point (``celery -A automation.tasks worker|beat``): the Celery
app of this process's runtime, and the thin tasks registered on it (take ids, open a
session, call one domain function, commit). Queues and the beat schedule are declared in
``automation.queueing``; producers queue these tasks by name (``runtime.enqueue``) and
never import this module."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from automation.policy import effective_settings
from automation.runtime import runtime

celery_app = runtime().celery
celery_app.set_current()


@celery_app.task(name="contacts.run_import_job")
def run_import_job(job_id: int) -> dict[str, Any]:
    from automation.contacts.jobs import run_import_job as run

    return run(runtime().sessions, job_id)


@celery_app.task(name="contacts.sweep_import_jobs")
def sweep_import_jobs() -> int:
    """Fail the running imports whose worker stopped showing progress (killed, lost)."""
    from datetime import timedelta

    from automation.contacts.jobs import fail_stale_jobs
    from automation.db import transaction

    stale = timedelta(seconds=runtime().settings.import_stale_seconds)
    with transaction(runtime().sessions) as session:
        return fail_stale_jobs(session, stale)


@celery_app.task(name="segments.refresh")
def refresh_segment(segment_id: int) -> dict[str, Any]:
    from automation.db import transaction
    from automation.errors import DomainError
    from automation.segments.membership import refresh_segment as refresh

    try:
        with transaction(runtime().sessions) as session:
            return refresh(session, segment_id).as_dict()
    except DomainError as exc:  # deleted, or its definition names a deleted field
        return {"segment_id": segment_id, "skipped": exc.message}


@celery_app.task(name="segments.sync_field_indexes")
def sync_field_indexes() -> dict[str, Any]:
    """Build / drop the expression indexes of indexed custom fields (after a flag change,
    a field's deletion, and with the periodic reconciliation)."""
    from automation.segments.field_indexes import sync_field_indexes as sync

    return sync(runtime().engine).as_dict()


@celery_app.task(name="segments.reconcile")
def reconcile_segments() -> int:
    """Periodic full refresh of every dynamic segment (catches time-relative conditions),
    and of the indexed fields' indexes (one dropped behind our back is rebuilt)."""
    from automation.segments.membership import due_segment_ids

    with runtime().sessions() as session:
        ids = due_segment_ids(session)
    runtime().enqueue("segments.sync_field_indexes")
    for segment_id in ids:
        runtime().enqueue("segments.refresh", segment_id)
    return len(ids)


@celery_app.task(name="email.send_due")
def send_due() -> dict[str, Any]:
    from automation.email.outbox import send_due as run
    from automation.email.sender import process_sending

    report = run(runtime().sessions, process_sending(runtime().settings))
    return {"batches": report.batches, "claimed": report.claimed, **report.outcomes}


@celery_app.task(name="email.expire_leases")
def expire_leases() -> int:
    from automation.db import transaction
    from automation.email.outbox import expire_leases as run

    with transaction(runtime().sessions) as session:
        return run(session)


@celery_app.task(name="workflows.tick")
def workflows_tick() -> dict[str, Any]:
    """Move due enrolments; when more are due than one run may take, queue another run
    so a second worker helps (beat also calls this every few seconds)."""
    from automation.workflows.engine import run_due

    hold_limit = timedelta(seconds=runtime().settings.workflow_hold_seconds)
    report = run_due(runtime().sessions, hold_limit=hold_limit)
    if report.more:
        runtime().enqueue("workflows.tick")
    if report.messages:
        runtime().enqueue(
            "email.send_due"
        )  # the emails just queued go out now, not at the next beat
    return report.as_dict()


@celery_app.task(name="workflows.scan_dates")
def workflows_scan_dates() -> int:
    from automation.db import transaction
    from automation.workflows.triggers import scan_date_triggers

    with transaction(runtime().sessions) as session:
        return scan_date_triggers(session)


@celery_app.task(name="campaigns.tick")
def campaigns_tick() -> dict[str, int]:
    """Start due campaigns, decide due A/B tests, mark finished sends (rows, not countdowns)."""
    from automation.campaigns.service import run_due
    from automation.db import transaction

    with transaction(runtime().sessions) as session:
        report = run_due(session)
    if report["started"] or report["decided"]:
        runtime().enqueue(
            "email.send_due"
        )  # the emails just queued go out now, not at the next beat
    return report


@celery_app.task(name="tracking.drain_hits")
def drain_hits() -> dict[str, Any]:
    from automation.tracking.hits import make_hit_queue
    from automation.tracking.service import drain_hits as run

    settings = runtime().settings
    with runtime().sessions() as session:
        half_life = effective_settings(session, settings).engagement_half_life_days
    report = run(runtime().sessions, make_hit_queue(settings), half_life_days=half_life)
    return report.as_dict()


@celery_app.task(name="tracking.sunset")
def apply_sunset() -> int:
    from automation.db import transaction
    from automation.tracking.sunset import apply_sunset as run

    with transaction(runtime().sessions) as session:
        policy = effective_settings(session, runtime().settings)
        return run(session, max_sends=policy.sunset_sends, max_days=policy.sunset_days)


@celery_app.task(name="tracking.drain_site")
def drain_site() -> dict[str, Any]:
    """Site events and identifications from the collect endpoint into events."""
    from dataclasses import asdict

    from automation.tracking.hits import make_hit_queue
    from automation.tracking.site import drain_site_events

    report = drain_site_events(runtime().sessions, make_hit_queue(runtime().settings, "site"))
    return asdict(report)


@celery_app.task(name="tracking.expire_anonymous")
def expire_anonymous() -> int:
    """Anonymous site events of visitors who never identified, after 90 days."""
    from automation.tracking.site import expire_anonymous as run

    with runtime().sessions() as session:
        removed = run(session)
        session.commit()
    return removed
