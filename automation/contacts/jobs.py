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
from automation.contacts.attributes import (
    PLAIN,
    TextFormat,
    check_date_format,
    field_types,
)
from automation.contacts.importer import (
    CsvPreview,
    ImportPermission,
    ImportReport,
    PreviewRow,
    check_encoding,
    check_permission,
    import_contacts,
    preview_csv,
    preview_import,
    resolve_mapping,
    text_encoding,
)
from automation.contacts.models import ImportBasis, ImportJob, ImportStatus
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


BASIS_LABELS = {
    ImportBasis.CONSENT: "They gave consent elsewhere (another signup form, on paper)",
    ImportBasis.CUSTOMERS: "They are existing customers (similar products and services)",
    ImportBasis.LEGITIMATE_INTEREST: "Legitimate interest (documented assessment)",
    ImportBasis.NONE: "No permission to email: keep them, do not mail them",
}


def import_options(
    basis: str | None,
    consent_text: str | None = None,
    date_format: str | None = None,
    decimal_comma: bool = False,
    *,
    required: bool = True,
) -> tuple[ImportPermission | None, TextFormat]:
    """The permission and the text format an upload declares, from the plain values of
    its form; InvalidInput naming each bad field. Without ``required`` (a draft that is
    mapped later) the basis may be left out."""
    errors: list[FieldError] = []
    permission = None
    if basis:
        try:
            permission = ImportPermission(
                ImportBasis(basis.strip().lower()), (consent_text or "").strip()[:2000] or None
            )
        except ValueError:
            errors.append(
                FieldError("permission", f"one of {', '.join(b.value for b in ImportBasis)}")
            )
    elif required:
        errors.append(
            FieldError(
                "permission",
                "declare what permission to email these contacts rests on: "
                + ", ".join(b.value for b in ImportBasis),
            )
        )
    fmt = TextFormat(decimal_comma=decimal_comma)
    if date_format and date_format.strip():
        try:
            fmt = TextFormat(check_date_format(date_format.strip()), decimal_comma)
        except ValueError as exc:
            errors.append(FieldError("date_format", str(exc)))
    if errors:
        raise InvalidInput(errors)
    return permission, fmt


def _declare(job: ImportJob, permission: ImportPermission | None, fmt: TextFormat) -> None:
    job.permission_basis = permission.basis if permission else None
    job.consent_text = permission.consent_text if permission else None
    job.date_format = fmt.date_format
    job.decimal_comma = fmt.decimal_comma


def job_permission(job: ImportJob) -> ImportPermission | None:
    if job.permission_basis is None:
        return None
    return ImportPermission(job.permission_basis, job.consent_text)


def job_format(job: ImportJob) -> TextFormat:
    return TextFormat(job.date_format, job.decimal_comma)


def create_import_job(
    session: Session,
    filename: str,
    content: bytes,
    *,
    permission: ImportPermission | None,
    fmt: TextFormat = PLAIN,
    mapping: dict[str, str] | None = None,
    encoding: str = "utf-8",
    created_by_id: int | None = None,
    draft: bool = False,
) -> ImportJob:
    """A queued job (queue its task after commit), or with ``draft`` one that waits for
    ``confirm_import_job`` to fix the column mapping and the permission."""
    encoding = text_encoding(encoding)
    if permission is None and not draft:
        import_options(None)  # raises, naming the permission field
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise InvalidInput(FieldError("file.filename", "the file name holds a control character"))
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
    _declare(job, permission, fmt)
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
        session,
        filename,
        content,
        permission=None,
        encoding=encoding,
        created_by_id=created_by_id,
        draft=True,
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


def draft_mapping(header: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """A draft's complete mapping: a column left out is ignored, not guessed (the user saw
    every column and chose); InvalidInput when two columns map to one field."""
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
    return {column: ({column: "" for column in header} | mapping)[column] for column in header}


def preview_job(
    session: Session,
    job: ImportJob,
    mapping: dict[str, str],
    permission: ImportPermission | None,
    fmt: TextFormat,
    rows: int = 5,
) -> list[PreviewRow]:
    """A draft's first rows as they will be stored with this mapping and these options."""
    header = job_preview(session, job).header
    _, preview = preview_import(
        session,
        job.content,
        permission=permission,
        mapping=draft_mapping(header, mapping),
        encoding=job.encoding,
        fmt=fmt,
        rows=rows,
    )
    return preview


def confirm_import_job(
    session: Session,
    job_id: int,
    mapping: dict[str, str],
    permission: ImportPermission | None,
    fmt: TextFormat = PLAIN,
) -> ImportJob:
    """Fix a draft's mapping (column → target, "" ignores it) and its permission, and queue
    it; the mapping is checked against the file's header now, so errors name the column
    before any row is read, all in one answer. Queue its task after commit."""
    job = get_import_job(session, job_id)
    if job.status is not S.DRAFT:
        raise InvalidInput(FieldError("status", f"this import is already {job.status}"))
    header = job_preview(session, job).header
    errors: list[FieldError] = []
    try:
        explicit = draft_mapping(header, mapping)
        resolved, _ = resolve_mapping(header, field_types(session), explicit)
        if permission is not None:
            check_permission(permission, resolved)
    except InvalidInput as exc:
        errors += exc.errors
    if permission is None:
        try:
            import_options(None)
        except InvalidInput as exc:
            errors += exc.errors
    if errors:
        raise InvalidInput(errors)
    assert permission is not None
    job.mapping = explicit
    _declare(job, permission, fmt)
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


class _Swept(Exception):
    """The sweep failed this job while its worker was still at it (stalled, not dead)."""


def _still_running(session: Session, job: ImportJob) -> None:
    """Raise _Swept if the job is no longer running in the database (read, not cached)."""
    status = session.scalar(select(ImportJob.status).where(ImportJob.id == job.id))
    if status is not S.RUNNING:
        raise _Swept


def run_import_job(sessions: sessionmaker[Session], job_id: int) -> dict[str, Any]:
    """Import a queued job, committing each batch so progress shows and a crash loses
    at most one batch (re-running is safe: the import is an idempotent upsert). Whatever
    goes wrong inside leaves the job ``failed`` with its reason, never ``running``."""
    with sessions() as session:
        job = get_import_job(session, job_id)
        if job.status in (S.DONE, S.FAILED, S.DRAFT):
            return job.report
        permission = job_permission(job)
        if permission is None:  # queued before imports declared their permission
            move_job(job, S.FAILED)
            job.error = "the import declares no permission basis: upload it again"
            job.finished_at = clock.now()
            session.commit()
            return job.report
        move_job(job, S.RUNNING)
        job.heartbeat_at = clock.now()
        content, mapping, encoding = job.content, dict(job.mapping), job.encoding
        fmt = job_format(job)
        session.commit()

        def progress(report: ImportReport) -> None:
            _still_running(session, job)
            job.rows_done = report.rows
            job.report = report.as_dict()
            job.heartbeat_at = clock.now()
            session.commit()

        try:
            report = import_contacts(
                session,
                io.BufferedReader(io.BytesIO(content)),
                permission=permission,
                mapping=mapping or None,
                encoding=encoding,
                fmt=fmt,
                source=f"import:{job_id}",
                on_batch=progress,
            )
        except _Swept:
            session.rollback()  # the batch in hand; the job stays failed, as the sweep said
            return get_import_job(session, job_id).report
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
