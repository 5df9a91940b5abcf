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
