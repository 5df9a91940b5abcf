"""CSV import: upload → column mapping → queued job with a progress bar → per-row errors.
The request only stores the file and queues the job; a worker does the import."""

from __future__ import annotations

from typing import Any

from flask import Response, flash, g, jsonify, redirect, render_template, request, url_for

from automation.accounts.models import Role
from automation.contacts import jobs
from automation.contacts.attributes import PLAIN, field_types
from automation.contacts.importer import CsvPreview, mapping_targets, suggest_target
from automation.contacts.models import ImportJob, ImportStatus
from automation.csvfiles import csv_text
from automation.errors import FieldError, InvalidInput
from web.auth import login_required
from web.database import db, nurture
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, INVALID, errors_of

ENCODINGS = [
    ("utf-8", "UTF-8 (recommended)"),
    ("latin-1", "Latin-1 / ISO-8859-1"),
    ("cp1252", "Windows-1252"),
]


@bp.route("/contacts/import", methods=["GET"])
@login_required()
def import_upload() -> Any:
    return _upload_page({})


def _upload_page(errors: dict[str, str]) -> str:
    return render_template(
        "imports/upload.html",
        jobs=jobs.list_import_jobs(db()),
        encodings=ENCODINGS,
        max_mb=jobs.MAX_UPLOAD_BYTES // (1024 * 1024),
        errors=errors,
    )


@bp.route("/contacts/import", methods=["POST"])
@login_required(Role.MARKETER)
def import_create() -> Any:
    upload = request.files.get("file")
    encoding = request.form.get("encoding", "utf-8")
    try:
        if upload is None or not upload.filename:
            raise InvalidInput(FieldError("file", "choose a CSV file to upload"))
        if encoding not in dict(ENCODINGS):
            raise InvalidInput(FieldError("encoding", "choose one of the listed encodings"))
        job, _preview = jobs.draft_import_job(
            db(),
            upload.filename,
            upload.read(jobs.MAX_UPLOAD_BYTES + 1),
            encoding=encoding,
            created_by_id=g.user.id,
        )
    except FORM_ERRORS as exc:
        db().rollback()
        return _upload_page(errors_of(exc)), INVALID
    db().commit()
    return redirect(url_for("ui.import_mapping", job_id=job.id))


def _mapping_page(
    job: ImportJob,
    preview: CsvPreview,
    chosen: dict[str, str],
    options: dict[str, Any],
    errors: dict[str, str],
) -> str:
    """The mapping step, with the first rows as they will be stored under the chosen
    mapping and options (or the reason they cannot be shown yet)."""
    stored: list[Any] = []
    if not errors:
        try:
            permission, fmt = jobs.import_options(
                options.get("permission"),
                options.get("consent_text"),
                options.get("date_format"),
                bool(options.get("decimal_comma")),
                required=False,
            )
            stored = jobs.preview_job(db(), job, chosen, permission, fmt)
        except InvalidInput as exc:
            errors = errors_of(exc)
    return render_template(
        "imports/mapping.html",
        job=job,
        preview=preview,
        targets=mapping_targets(field_types(db())),
        chosen=chosen,
        options=options,
        bases=jobs.BASIS_LABELS,
        stored=stored,
        errors=errors,
    )


@bp.route("/contacts/import/<int:job_id>/mapping", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def import_mapping(job_id: int) -> Any:
    job = jobs.get_import_job(db(), job_id)
    if job.status is not ImportStatus.DRAFT:
        return redirect(url_for("ui.import_job", job_id=job.id))
    preview = jobs.job_preview(db(), job)
    if request.method != "POST":
        fields = field_types(db())
        suggested = {column: suggest_target(column, fields) or "" for column in preview.header}
        return _mapping_page(job, preview, suggested, {}, {})
    # Columns are posted by position: a header name can hold any character.
    chosen = {
        column: request.form.get(f"column-{index}", "").strip()
        for index, column in enumerate(preview.header)
    }
    options: dict[str, Any] = {
        "permission": request.form.get("permission", ""),
        "consent_text": request.form.get("consent_text", ""),
        "date_format": request.form.get("date_format", ""),
        "decimal_comma": request.form.get("decimal_comma") == "on",
    }
    if request.form.get("action") == "preview":  # show the rows again; nothing changes
        return _mapping_page(job, preview, chosen, options, {})
    try:
        _confirm(job, chosen, options)
    except FORM_ERRORS as exc:
        db().rollback()
        return _mapping_page(job, preview, chosen, options, errors_of(exc)), INVALID
    db().commit()
    nurture().enqueue("contacts.run_import_job", job.id)
    flash(f"Import of {job.filename} queued.", "success")
    return redirect(url_for("ui.import_job", job_id=job.id))


def _confirm(job: ImportJob, chosen: dict[str, str], options: dict[str, Any]) -> None:
    """Queue the draft; InvalidInput names every bad field of the page at once."""
    errors: list[FieldError] = []
    permission, fmt = None, PLAIN
    try:
        permission, fmt = jobs.import_options(
            options["permission"],
            options["consent_text"],
            options["date_format"],
            options["decimal_comma"],
            required=False,
        )
    except InvalidInput as exc:
        errors += exc.errors
    try:
        jobs.confirm_import_job(db(), job.id, chosen, permission, fmt)
    except InvalidInput as exc:
        seen = {e.path for e in errors}
        errors += [e for e in exc.errors if e.path not in seen]
    if errors:
        raise InvalidInput(errors)


@bp.route("/contacts/import/<int:job_id>")
@login_required()
def import_job(job_id: int) -> Any:
    job = jobs.get_import_job(db(), job_id)
    return render_template("imports/job.html", job=job, progress=_progress(job))


def _progress(job: ImportJob) -> dict[str, Any]:
    finished = job.status in (ImportStatus.DONE, ImportStatus.FAILED)
    total = max(job.rows_estimated, job.rows_done, 1)
    return {
        "status": job.status.value,
        "rows_done": job.rows_done,
        "rows_estimated": job.rows_estimated,
        "percent": 100 if finished else min(99, job.rows_done * 100 // total),
        "finished": finished,
    }


@bp.route("/contacts/import/<int:job_id>/progress")
@login_required()
def import_progress(job_id: int) -> Any:
    """What the progress bar polls: small, so polling every second costs nothing."""
    response = jsonify(_progress(jobs.get_import_job(db(), job_id)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/contacts/import/<int:job_id>/errors.csv")
@login_required()
def import_errors(job_id: int) -> Any:
    job = jobs.get_import_job(db(), job_id)
    return Response(
        csv_text(jobs.error_report_rows(job)),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=import-{job.id}-errors.csv"},
    )
