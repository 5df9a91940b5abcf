"""Import jobs: an uploaded CSV imported by a worker, with progress visible to the UI."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.contacts.attributes import field_types
from automation.contacts.importer import (
    CsvPreview,
    ImportReport,
    check_encoding,
    import_contacts,
    preview_csv,
    resolve_mapping,
    text_encoding,
)
from automation.contacts.models import ImportJob, ImportStatus
from automation.errors import DomainError, FieldError, InvalidInput, NotFound

log = logging.getLogger(__name__)
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
DRAFTS_KEPT_FOR = timedelta(days=1)

S = ImportStatus
ALLOWED: dict[ImportStatus, set[ImportStatus]] = {
    S.DRAFT: {S.QUEUED},
    S.QUEUED: {S.RUNNING, S.FAILED},
    # A worker that died mid-job leaves it running; the redelivered task runs it again.
    S.RUNNING: {S.RUNNING, S.DONE, S.FAILED},
    S.DONE: set(),
    S.FAILED: set(),
}


def move_job(job: ImportJob, status: ImportStatus) -> None:
    """The one way an import job changes status; illegal moves are refused."""
    if status not in ALLOWED[job.status]:
        raise InvalidInput(
            FieldError("status", f"an import job cannot go from {job.status} to {status}")
        )
    job.status = status


def create_import_job(
    session: Session,
    filename: str,
    content: bytes,
    *,
    mapping: dict[str, str] | None = None,
    encoding: str = "utf-8",
    created_by_id: int | None = None,
    draft: bool = False,
) -> ImportJob:
    """A queued job (queue its task after commit), or with ``draft`` one that waits for
    ``confirm_import_job`` to fix the column mapping."""
    encoding = text_encoding(encoding)
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise InvalidInput(FieldError("file", "the file name holds a control character"))
    if not content.strip():
        raise InvalidInput(FieldError("file", "the file is empty"))
    if len(content) > MAX_UPLOAD_BYTES:
        raise InvalidInput(FieldError("file", "the file is larger than 50 MB; use the CLI"))
    check_encoding(content[:65536], encoding)
    job = ImportJob(
        filename=filename[:255],
        content=content,
        mapping=mapping or {},
        encoding=encoding,
        rows_estimated=max(content.count(b"\n") - 1, 1),
        created_by_id=created_by_id,
        created_at=clock.now(),
        status=S.DRAFT if draft else S.QUEUED,
    )
    session.add(job)
    session.flush()
    return job


def draft_import_job(
    session: Session,
    filename: str,
    content: bytes,
    *,
    encoding: str = "utf-8",
    created_by_id: int | None = None,
) -> tuple[ImportJob, CsvPreview]:
    """Keep an upload as a draft job and return the header and first rows for the mapping
    step. A file that is not a readable CSV is refused here, before any mapping is asked."""
    job = create_import_job(
        session, filename, content, encoding=encoding, created_by_id=created_by_id, draft=True
    )
    preview = preview_csv(content, encoding)
    # Drafts nobody confirmed would keep their files forever: drop yesterday's.
    session.execute(
        delete(ImportJob).where(
            ImportJob.status == S.DRAFT, ImportJob.created_at < clock.now() - DRAFTS_KEPT_FOR
        )
    )
    return job, preview


def job_preview(session: Session, job: ImportJob) -> CsvPreview:
    return preview_csv(job.content, job.encoding)


def confirm_import_job(session: Session, job_id: int, mapping: dict[str, str]) -> ImportJob:
    """Fix a draft's mapping (column → target, "" ignores it) and queue it; the mapping is
    checked against the file's header now, so errors name the column before any row is read.
    Queue its task after commit."""
    job = get_import_job(session, job_id)
    if job.status is not S.DRAFT:
        raise InvalidInput(FieldError("status", f"this import is already {job.status}"))
    header = job_preview(session, job).header
    errors: list[FieldError] = []
    used: dict[str, str] = {}
    for column in header:
        target = mapping.get(column, "")
        if target and target in used:
            errors.append(
                FieldError(f"mapping.{column}", f"column {used[target]!r} is already mapped here")
            )
        used.setdefault(target, column)
    if errors:
        raise InvalidInput(errors)
    # A column left out is ignored, not guessed: the user saw every column and chose.
    explicit = {column: "" for column in header} | mapping
    resolve_mapping(header, field_types(session), explicit)
    job.mapping = {column: explicit[column] for column in header}
    move_job(job, S.QUEUED)
    session.flush()
    return job


def list_import_jobs(session: Session, limit: int = 20) -> list[ImportJob]:
    """The latest jobs, drafts excluded."""
    return list(
        session.scalars(
            select(ImportJob)
            .where(ImportJob.status != S.DRAFT)
            .order_by(ImportJob.id.desc())
            .limit(limit)
        )
    )


def error_report_rows(job: ImportJob) -> Iterator[list[Any]]:
    """A job's per-row errors as CSV rows (row, column, reason), for ``automation.csvfiles``
    (the column names come from the file: its writer escapes formula cells)."""
    yield ["row", "column", "reason"]
    for error in job.report.get("errors", []):
        # A job that failed as a whole holds field errors (path, message) instead of rows.
        column = error.get("column", error.get("path", ""))
        yield [str(error.get("row", "")), column, error.get("reason", error.get("message", ""))]


def get_import_job(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise NotFound(f"import job {job_id} not found")
    return job


def fail_stale_jobs(session: Session, stale_after: timedelta) -> int:
    """Mark failed every running job that showed no progress for ``stale_after``: its worker
    was killed or lost (a crash inside the task fails the job itself). How many failed."""
    now = clock.now()
    result = session.execute(
        update(ImportJob)
        .where(ImportJob.status == S.RUNNING, ImportJob.heartbeat_at < now - stale_after)
        .values(
            status=S.FAILED,
            error=(
                f"the worker running this import stopped: no progress for "
                f"{int(stale_after.total_seconds() // 60)} minutes. Rows already imported "
                "stay; upload the file again to import the rest (re-importing is safe)"
            ),
            finished_at=now,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult has rowcount


def _fail(
    session: Session, job_id: int, error: str, report: dict[str, Any] | None
) -> dict[str, Any]:
    """Roll back the batch in progress and mark the job failed; ``report`` replaces the
    progress report when given (None keeps what the committed batches reported)."""
    session.rollback()
    job = get_import_job(session, job_id)
    if job.status is not S.RUNNING:
        return job.report  # the sweep got there first
    move_job(job, S.FAILED)
    job.error = error
    if report is not None:
        job.report = report
    job.finished_at = clock.now()
    session.commit()
    return job.report


def run_import_job(sessions: sessionmaker[Session], job_id: int) -> dict[str, Any]:
    """Import a queued job, committing each batch so progress shows and a crash loses
    at most one batch (re-running is safe: the import is an idempotent upsert). Whatever
    goes wrong inside leaves the job ``failed`` with its reason, never ``running``."""
    with sessions() as session:
        job = get_import_job(session, job_id)
        if job.status in (S.DONE, S.FAILED, S.DRAFT):
            return job.report
        move_job(job, S.RUNNING)
        job.heartbeat_at = clock.now()
        content, mapping, encoding = job.content, dict(job.mapping), job.encoding
        session.commit()

        def progress(report: ImportReport) -> None:
            job.rows_done = report.rows
            job.report = report.as_dict()
            job.heartbeat_at = clock.now()
            session.commit()

        try:
            report = import_contacts(
                session,
                io.BufferedReader(io.BytesIO(content)),
                mapping=mapping or None,
                encoding=encoding,
                source="import",
                on_batch=progress,
            )
        except DomainError as exc:
            errors = exc.errors if isinstance(exc, InvalidInput) else []
            return _fail(session, job_id, str(exc), {"errors": [e.as_dict() for e in errors]})
        except Exception as exc:  # any crash: the job says so instead of staying running
            log.exception("import job %s crashed", job_id)
            reason = f"the import stopped on an internal error ({type(exc).__name__}); " + (
                "rows already imported stay, and the operator log has the details"
            )
            return _fail(session, job_id, reason, None)
        move_job(job, S.DONE)
        job.rows_done = report.rows
        job.report = report.as_dict()
        job.finished_at = clock.now()
        session.commit()
        return job.report
