"""The Celery app's factory, the task-name → queue table and the beat schedule.

Producers (web, CLI, tasks) queue work by task name through their runtime, so none of them
imports the worker module (``automation.tasks``), which registers the task functions on the
app this factory builds. Queues: ``engine`` (workflow ticks, segment refresh, imports),
``send`` (the outbox), ``tracking`` (hit ingestion).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from automation.config import Settings

QUEUES = ("engine", "send", "tracking")

# Every task by name, and the queue its work goes to (the worker registers these names).
TASK_QUEUES: dict[str, str] = {
    "contacts.run_import_job": "engine",
    "contacts.sweep_import_jobs": "engine",
    "segments.refresh": "engine",
    "segments.sync_field_indexes": "engine",
    "segments.reconcile": "engine",
    "email.send_due": "send",
    "email.expire_leases": "send",
    "workflows.tick": "engine",
    "workflows.scan_dates": "engine",
    "campaigns.tick": "engine",
    "tracking.drain_hits": "tracking",
    "tracking.sunset": "engine",
    "tracking.drain_site": "tracking",
    "tracking.expire_anonymous": "engine",
}


def make_celery(settings: Settings) -> Celery:
    """A Celery app bound to the settings' broker, with the queues, routes and beat schedule."""
    app = Celery("nurture", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        # Each queue its own direct exchange, so a task sent to `send` never lands in `engine`.
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        task_default_queue="engine",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
    )
    return app


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every periodic task. Due rows (messages, enrolments, hits) wait in tables and queues;
    these ticks only wake the workers, so a tick that waited longer than it is worth expires
    and the next one does the same work."""
    tick = settings.workflow_tick_seconds
    return {
        # Events and edits refresh the contacts they touch at once; this catches the rest.
        "segments.reconcile": _every(settings.segment_reconcile_seconds, "segments.reconcile"),
        "email.send_due": _every(settings.send_tick_seconds, "email.send_due", expires=10),
        "email.expire_leases": _every(settings.lease_expiry_seconds, "email.expire_leases"),
        "workflows-tick": _every(tick, "workflows.tick", expires=max(tick * 5, 10)),
        "workflows-scan-dates": _every(
            settings.workflow_date_scan_seconds,
            "workflows.scan_dates",
            expires=settings.workflow_date_scan_seconds,
        ),
        "campaigns.tick": _every(settings.campaign_tick_seconds, "campaigns.tick", expires=20),
        "tracking.drain_hits": _every(settings.hit_drain_seconds, "tracking.drain_hits", 10),
        "tracking.drain_site": _every(settings.hit_drain_seconds, "tracking.drain_site", 10),
        "tracking.sunset": _every(settings.sunset_scan_seconds, "tracking.sunset"),
        "tracking.expire_anonymous": _every(
            settings.anonymous_expiry_seconds, "tracking.expire_anonymous"
        ),
        "contacts.sweep_import_jobs": _every(
            settings.import_sweep_seconds, "contacts.sweep_import_jobs"
        ),
    }


def _every(seconds: float, task: str, expires: float | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {"queue": TASK_QUEUES[task]}
    if expires is not None:
        options["expires"] = expires
    return {"task": task, "schedule": float(seconds), "options": options}


def enqueue(celery: Celery, task: str, *args: Any) -> None:
    """Queue the task named ``task`` on its declared queue. Call only after the transaction
    that wrote the rows the task reads has committed."""
    celery.send_task(task, args=args, queue=TASK_QUEUES[task])
