"""Contacts, custom fields, tags, hygiene, GDPR and CSV import over the API."""

from __future__ import annotations

from typing import Any, Literal

from flask import g, request
from pydantic import BaseModel, Field

from automation.accounts.models import Role
from automation.contacts import gdpr, hygiene
from automation.contacts import service as contacts
from automation.contacts import tags as tag_ops
from automation.contacts.consent import change_status, confirm_subscription
from automation.contacts.importer import preview_import
from automation.contacts.jobs import (
    MAX_UPLOAD_BYTES,
    create_import_job,
    get_import_job,
    import_options,
)
from automation.contacts.models import ImportJob
from automation.contacts.schema import (
    ContactIn,
    ContactOut,
    ContactPage,
    ContactPatch,
    ContactSearch,
    CustomFieldIn,
    CustomFieldOut,
    CustomFieldPatch,
    StatusChange,
)
from automation.db import BigRowId
from automation.errors import FieldError, InvalidInput
from web.api.routing import ApiBlueprint
from web.database import db, nurture

bp = ApiBlueprint("contacts", __name__)


def _out(contact: Any) -> ContactOut:
    return ContactOut.model_validate(contact)


@bp.operation(
    "/contacts", "GET", summary="Search contacts", query=ContactSearch, response=ContactPage
)
def list_contacts(query: ContactSearch) -> ContactPage:
    items, total = contacts.search_contacts(db(), query)
    return ContactPage(
        items=[_out(c) for c in items], total=total, page=query.page, per_page=query.per_page
    )


@bp.operation(
    "/contacts",
    "POST",
    summary="Create a contact",
    role=Role.MARKETER,
    body=ContactIn,
    response=ContactOut,
    status=201,
)
def create_contact(body: ContactIn) -> ContactOut:
    contact = contacts.create_contact(db(), body, source="api", ip=request.remote_addr)
    db().commit()
    return _out(contact)


@bp.operation("/contacts/<bigid:contact_id>", "GET", summary="Get a contact", response=ContactOut)
def get_contact(contact_id: int) -> ContactOut:
    return _out(contacts.get_contact(db(), contact_id))


@bp.operation(
    "/contacts/<bigid:contact_id>",
    "PATCH",
    summary="Update a contact",
    role=Role.MARKETER,
    body=ContactPatch,
    response=ContactOut,
)
def update_contact(contact_id: int, body: ContactPatch) -> ContactOut:
    contact = contacts.update_contact(db(), contact_id, body, source="api", ip=request.remote_addr)
    db().commit()
    return _out(contact)


@bp.operation(
    "/contacts/<bigid:contact_id>",
    "DELETE",
    summary="Delete a contact",
    role=Role.MARKETER,
    status=204,
)
def delete_contact(contact_id: int) -> None:
    contacts.delete_contact(db(), contact_id)
    db().commit()


@bp.operation(
    "/contacts/<bigid:contact_id>/status",
    "POST",
    role=Role.MARKETER,
    summary="Change subscription status (recorded with consent evidence)",
    body=StatusChange,
    response=ContactOut,
)
def set_status(contact_id: int, body: StatusChange) -> ContactOut:
    contact = contacts.get_contact(db(), contact_id)
    change_status(
        db(),
        contact,
        body.status,
        source="api",
        ip=request.remote_addr,
        consent_text=body.consent_text,
    )
    db().commit()
    return _out(contact)


@bp.operation(
    "/contacts/<bigid:contact_id>/confirm",
    "POST",
    role=Role.MARKETER,
    summary="Confirm a double opt-in",
    response=ContactOut,
)
def confirm(contact_id: int) -> ContactOut:
    contact = contacts.get_contact(db(), contact_id)
    confirm_subscription(db(), contact, source="api", ip=request.remote_addr)
    db().commit()
    return _out(contact)


@bp.operation("/contacts/<bigid:contact_id>/export", "GET", summary="GDPR export of one contact")
def export(contact_id: int) -> dict[str, Any]:
    return gdpr.export_contact(db(), contact_id)


@bp.operation(
    "/contacts/<bigid:contact_id>/erase",
    "POST",
    role=Role.ADMIN,
    summary="GDPR erasure: delete everywhere, keep a hashed suppression",
    status=204,
)
def erase(contact_id: int) -> None:
    gdpr.erase_contact(db(), contact_id)
    db().commit()


class MergeIn(BaseModel):
    duplicate_id: BigRowId = Field(..., description="Contact folded into the survivor and deleted")


@bp.operation(
    "/contacts/<bigid:contact_id>/merge",
    "POST",
    role=Role.MARKETER,
    summary="Merge another contact into this one",
    body=MergeIn,
    response=ContactOut,
)
def merge(contact_id: int, body: MergeIn) -> ContactOut:
    contact = hygiene.merge_contacts(db(), contact_id, body.duplicate_id)
    db().commit()
    return _out(contact)


class DuplicateGroupOut(BaseModel):
    reason: str
    contact_ids: list[int]
    emails: list[str]


@bp.operation(
    "/contacts/duplicates",
    "GET",
    summary="Likely duplicate contacts",
    response=list[DuplicateGroupOut],
)
def duplicates() -> list[DuplicateGroupOut]:
    return [DuplicateGroupOut(**g.__dict__) for g in hygiene.find_duplicates(db())]


@bp.operation("/fields", "GET", summary="List custom fields", response=list[CustomFieldOut])
def list_fields() -> list[CustomFieldOut]:
    return [CustomFieldOut.model_validate(f) for f in contacts.list_fields(db())]


@bp.operation(
    "/fields",
    "POST",
    summary="Declare a custom field",
    role=Role.ADMIN,
    body=CustomFieldIn,
    response=CustomFieldOut,
    status=201,
)
def declare_field(body: CustomFieldIn) -> CustomFieldOut:
    field = contacts.declare_field(db(), body)
    db().commit()
    if field.indexed:
        nurture().enqueue("segments.sync_field_indexes")
    return CustomFieldOut.model_validate(field)


@bp.operation(
    "/fields/<name>",
    "PATCH",
    summary="Index a custom field for segments, or drop its index",
    role=Role.ADMIN,
    body=CustomFieldPatch,
    response=CustomFieldOut,
)
def patch_field(name: str, body: CustomFieldPatch) -> CustomFieldOut:
    field = contacts.set_field_indexed(db(), name, body.indexed)
    db().commit()
    nurture().enqueue("segments.sync_field_indexes")
    return CustomFieldOut.model_validate(field)


@bp.operation(
    "/fields/<name>", "DELETE", summary="Delete a custom field", role=Role.ADMIN, status=204
)
def delete_field(name: str) -> None:
    contacts.delete_field(db(), name)
    db().commit()
    nurture().enqueue("segments.sync_field_indexes")  # drops its index, if it had one


class TagOut(BaseModel):
    name: str
    contacts: int


@bp.operation("/tags", "GET", summary="Tags with their contact counts", response=list[TagOut])
def list_tags() -> list[TagOut]:
    return [TagOut(name=n, contacts=c) for n, c in tag_ops.list_tags(db())]


class DeletedTags(BaseModel):
    deleted: list[str]


@bp.operation(
    "/tags/unused",
    "DELETE",
    summary="Delete tags no contact carries",
    role=Role.MARKETER,
    response=DeletedTags,
)
def delete_unused() -> DeletedTags:
    names = tag_ops.delete_unused_tags(db())
    db().commit()
    return DeletedTags(deleted=names)


class ImportJobOut(BaseModel):
    id: int
    filename: str
    status: str
    rows_estimated: int
    rows_done: int
    report: dict[str, Any]
    error: str | None


def job_out(job: ImportJob) -> ImportJobOut:
    return ImportJobOut(
        id=job.id,
        filename=job.filename,
        status=job.status.value,
        rows_estimated=job.rows_estimated,
        rows_done=job.rows_done,
        report=job.report,
        error=job.error,
    )


class ImportUploadFields(BaseModel):
    """The multipart fields of an upload and of its preview, as the document shows them."""

    file: bytes = Field(..., description="The CSV file")
    mapping: str = Field("{}", description="JSON object of column → field")
    encoding: str = Field("utf-8", max_length=40, description="The file's text encoding")
    permission: Literal["consent", "customers", "legitimate_interest", "none"] = Field(
        ..., description="Why these contacts may be emailed (none: imported, never mailed)"
    )
    consent_text: str = Field("", description="The consent wording the contacts agreed to")
    date_format: str = Field("", description="strftime format of date columns, e.g. %m/%d/%Y")
    decimal_comma: bool = Field(False, description="Numbers use a decimal comma")


class ImportUpload:
    """The multipart fields of an upload and of its preview, parsed: the same for both."""

    def __init__(self) -> None:
        import json

        upload = request.files.get("file")
        if upload is None:
            raise InvalidInput(FieldError("file", "attach the CSV as multipart field 'file'"))
        try:
            mapping = json.loads(request.form.get("mapping") or "{}")
        except ValueError:
            raise InvalidInput(FieldError("mapping", "not valid JSON")) from None
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise InvalidInput(FieldError("mapping", "must be an object of column → field"))
        form = request.form
        self.permission, self.fmt = import_options(
            form.get("permission"),
            form.get("consent_text"),
            form.get("date_format"),
            form.get("decimal_comma", "").strip().lower() in ("1", "true", "yes", "on"),
        )
        self.filename = upload.filename or "upload.csv"
        self.content = upload.read(MAX_UPLOAD_BYTES + 1)
        self.mapping: dict[str, str] = mapping
        self.encoding = form.get("encoding", "utf-8")


IMPORT_FIELDS = (
    "multipart fields: 'file'; 'permission' (consent, customers, legitimate_interest or "
    "none); optional 'consent_text', 'mapping' (JSON), 'encoding', 'date_format' "
    "(e.g. %m/%d/%Y), 'decimal_comma'"
)


@bp.operation(
    "/imports",
    "POST",
    role=Role.MARKETER,
    status=202,
    response=ImportJobOut,
    summary="Upload a CSV to import (" + IMPORT_FIELDS + ")",
    upload=ImportUploadFields,
)
def upload_import() -> ImportJobOut:
    upload = ImportUpload()
    job = create_import_job(
        db(),
        upload.filename,
        upload.content,
        permission=upload.permission,
        fmt=upload.fmt,
        mapping=upload.mapping,
        encoding=upload.encoding,
        created_by_id=g.principal.user_id,
    )
    db().commit()
    nurture().enqueue("contacts.run_import_job", job.id)
    return job_out(job)


class PreviewRowOut(BaseModel):
    row: int
    action: str = Field(description="create, update (the status stays) or skip (errors)")
    contact: dict[str, Any] = Field(description="The fields the row sets, as stored")
    status: str | None
    basis: str | None
    errors: list[dict[str, Any]]


class ImportPreviewOut(BaseModel):
    mapping: dict[str, str]
    rows: list[PreviewRowOut]


@bp.operation(
    "/imports/preview",
    "POST",
    role=Role.MARKETER,
    response=ImportPreviewOut,
    read_only=True,
    upload=ImportUploadFields,
    summary="The first rows of a CSV as the import would store them; nothing is written ("
    + IMPORT_FIELDS
    + ")",
)
def preview_upload() -> ImportPreviewOut:
    upload = ImportUpload()
    mapping, rows = preview_import(
        db(),
        upload.content,
        permission=upload.permission,
        mapping=upload.mapping or None,
        encoding=upload.encoding,
        fmt=upload.fmt,
    )
    return ImportPreviewOut(mapping=mapping, rows=[PreviewRowOut(**row.as_dict()) for row in rows])


@bp.operation(
    "/imports/<int:job_id>",
    "GET",
    summary="Import progress and error report",
    response=ImportJobOut,
)
def get_import(job_id: int) -> ImportJobOut:
    return job_out(get_import_job(db(), job_id))
