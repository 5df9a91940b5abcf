"""Celery configuration shared by the worker app and by producers (web, CLI).

Each runtime has its own Celery instance bound to its broker, so the web process can
queue work without depending on the worker module's import-time settings.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from automation.config import Settings

QUEUES = ("engine", "send", "tracking")


def make_celery(settings: Settings) -> Celery:
    app = Celery("nurture", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        # Each queue its own direct exchange, so a task sent to `send` never lands in `engine`.
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        task_default_queue="engine",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        timezone="UTC",
    )
    if settings.embedded:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    return app


def enqueue(celery: Celery, task: Any, *args: Any) -> None:
    """Queue ``task`` by name on its declared queue. Call only after the transaction that
    wrote the rows the task reads has committed."""
    celery.send_task(task.name, args=args, queue=task.queue)
