"""Import jobs: an uploaded CSV imported by a worker, with progress visible to the UI."""

from __future__ import annotations

import io
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.contacts.importer import ImportReport, check_encoding, import_contacts
from automation.contacts.models import ImportJob, ImportStatus
from automation.errors import DomainError, FieldError, InvalidInput, NotFound

MAX_UPLOAD_BYTES = 50 * 1024 * 1024


def create_import_job(
    session: Session,
    filename: str,
    content: bytes,
    *,
    mapping: dict[str, str] | None = None,
    encoding: str = "utf-8",
    created_by_id: int | None = None,
) -> ImportJob:
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
    )
    session.add(job)
    session.flush()
    return job


def get_import_job(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise NotFound(f"import job {job_id} not found")
    return job


def run_import_job(sessions: sessionmaker[Session], job_id: int) -> dict[str, Any]:
    """Import a queued job, committing each batch so progress shows and a crash loses
    at most one batch (re-running is safe: the import is an idempotent upsert)."""
    with sessions() as session:
        job = get_import_job(session, job_id)
        if job.status is ImportStatus.DONE:
            return job.report
        job.status = ImportStatus.RUNNING
        content, mapping, encoding = job.content, dict(job.mapping), job.encoding
        session.commit()

        def progress(report: ImportReport) -> None:
            job.rows_done = report.rows
            job.report = report.as_dict()
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
            session.rollback()
            job.status = ImportStatus.FAILED
            job.error = str(exc)
            errors = exc.errors if isinstance(exc, InvalidInput) else []
            job.report = {"errors": [e.as_dict() for e in errors]}
            job.finished_at = clock.now()
            session.commit()
            return job.report
        job.status = ImportStatus.DONE
        job.rows_done = report.rows
        job.report = report.as_dict()
        job.finished_at = clock.now()
        session.commit()
        return job.report
