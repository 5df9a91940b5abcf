"""Streamed CSV import: upsert by email in batches, a per-row error report.

The file is read row by row and written in batches of ``batch_size``, so memory
stays flat whatever the file's size. Re-importing the same file changes nothing:
a row whose values equal the stored ones is counted as unchanged and not written.

Every import declares the permission it rests on (``ImportPermission``); a new contact
gets a consent record with that basis, and one without permission (basis ``none``, or a
consent column saying no) is imported ``pending``: kept, never sent marketing. An import
never re-subscribes anyone. See docs/contacts.md, "Imports".
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from automation import clock
from automation.addresses import normalize_email, validate_time_zone
from automation.contacts import tags as tag_ops
from automation.contacts.attributes import PLAIN, TextFormat, coerce_text, field_types
from automation.contacts.consent import ALLOWED
from automation.contacts.models import (
    ConsentRecord,
    Contact,
    ContactStatus,
    ContactTag,
    CustomField,
    FieldType,
    ImportBasis,
    LifecycleStage,
    Tag,
    new_contact_row,
)
from automation.contacts.suppressions import erased_addresses
from automation.db import dialect_insert
from automation.errors import FieldError, InvalidInput
from automation.reactions import react_to_contact_changes

MAX_ERRORS_KEPT = 1000
STANDARD_FIELDS = {
    "email": "email",
    "e-mail": "email",
    "email address": "email",
    "first name": "first_name",
    "firstname": "first_name",
    "first_name": "first_name",
    "last name": "last_name",
    "lastname": "last_name",
    "last_name": "last_name",
    "external id": "external_id",
    "external_id": "external_id",
    "time zone": "time_zone",
    "timezone": "time_zone",
    "time_zone": "time_zone",
    "lifecycle stage": "lifecycle_stage",
    "lifecycle_stage": "lifecycle_stage",
    "score": "score",
    "status": "status",
    "tags": "tags",
    "consent": "consent",
    "opt-in": "consent",
    "opt in": "consent",
    "marketing consent": "consent",
}
# A consent column's values, read as a person would.
CONSENT_YES = {"yes", "y", "true", "1", "x", "on", "opted in", "opt-in", "subscribed", "granted"}
CONSENT_NO = {"no", "n", "false", "0", "off", "opted out", "opt-out", "unsubscribed", "denied"}
# What an import may do to an existing contact's status: record an opt-out or a bounce
# learnt elsewhere, never an opt-in (that needs the person, not a file).
IMPORT_MAY_SET = {
    ContactStatus.UNSUBSCRIBED.value,
    ContactStatus.BOUNCED.value,
    ContactStatus.COMPLAINED.value,
}


@dataclass(frozen=True)
class ImportPermission:
    """The permission an import declares: the basis, and how it was obtained."""

    basis: ImportBasis
    consent_text: str | None = None

    def row_status(self, values: dict[str, Any]) -> tuple[str, str]:
        """(status, basis) of a new contact from this row: subscribed under the declared
        basis when the row has permission (no consent column, or one saying yes), else
        pending with basis none. A status column may only say something stricter."""
        permitted = self.basis is not ImportBasis.NONE and values.get("consent", True)
        stated = values.get("status")
        if stated is not None and stated != ContactStatus.SUBSCRIBED.value:
            status = stated
        else:
            status = (ContactStatus.SUBSCRIBED if permitted else ContactStatus.PENDING).value
        return status, (self.basis if permitted else ImportBasis.NONE).value


@dataclass(frozen=True)
class RowError:
    row: int  # 1-based line of data, the header being row 1
    column: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)

    def add_error(self, error: RowError) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(error)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "errors": [e.as_dict() for e in self.errors],
            "ignored_columns": self.ignored_columns,
            "mapping": self.mapping,
        }


# The text encodings a CSV may be declared in, by their canonical codecs name. Python's
# codec registry also holds bytes-to-bytes codecs (bz2, zlib, base64, hex), rot13 and
# "undefined": decompressors and traps, never a spreadsheet's encoding.
TEXT_ENCODINGS = frozenset(
    {"utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "ascii"}
    | {f"iso8859-{n}" for n in (*range(1, 12), 13, 14, 15, 16)}
    | {f"cp{n}" for n in range(1250, 1259)}
    | {"cp437", "cp850", "cp866", "cp874", "cp932", "cp936", "cp949", "cp950"}
    | {"koi8-r", "koi8-u", "mac-roman", "mac-cyrillic"}
    | {"euc_kr", "euc_jp", "shift_jis", "iso2022_jp", "gb2312", "gbk", "gb18030", "big5"}
)


def text_encoding(name: str) -> str:
    """The canonical name of the text encoding ``name`` (``latin-1`` → ``iso8859-1``), or
    InvalidInput naming ``encoding`` for an unknown name or a codec that is not a text
    encoding."""
    try:
        canonical = codecs.lookup(name).name if len(name) <= 32 else ""
    except (LookupError, ValueError, TypeError):
        canonical = ""
    if canonical not in TEXT_ENCODINGS:
        raise InvalidInput(
            FieldError(
                "encoding",
                f"{name[:40]!r} is not a text encoding we read; use utf-8 (or e.g. utf-16, "
                "latin-1, cp1252, euc-kr, shift_jis)",
            )
        )
    return canonical


def check_encoding(head: bytes, encoding: str = "utf-8") -> None:
    """Refuse a file whose first bytes are not in ``encoding`` before anything is written."""
    try:
        codecs.getincrementaldecoder(encoding)("strict").decode(head, final=False)
    except (UnicodeDecodeError, LookupError):
        raise InvalidInput(
            FieldError(
                "file",
                f"the file is not valid {encoding}; save it as UTF-8 CSV or pass its encoding",
            )
        ) from None


def suggest_target(column: str, fields: dict[str, CustomField]) -> str | None:
    """The field a column maps to by its name: a standard field or ``attributes.<name>``."""
    key = column.strip().lower()
    target = STANDARD_FIELDS.get(key)
    if target is None and key.replace(" ", "_") in fields:
        target = f"attributes.{key.replace(' ', '_')}"
    return target


def mapping_targets(fields: dict[str, CustomField]) -> list[tuple[str, str]]:
    """Every field a column can map to, as (target, label), standard fields first."""
    standard = dict.fromkeys(STANDARD_FIELDS.values())
    targets = [(name, name.replace("_", " ").capitalize()) for name in standard]
    targets += [(f"attributes.{name}", f.label) for name, f in sorted(fields.items())]
    return targets


@dataclass(frozen=True)
class CsvPreview:
    header: list[str]
    rows: list[list[str]]  # the first few data rows, for the mapping step


def preview_csv(content: bytes, encoding: str = "utf-8", rows: int = 3) -> CsvPreview:
    """The header and first rows of an uploaded file, or InvalidInput naming ``file``."""
    check_encoding(content[:65536], encoding)
    header, reader = _rows(io.BufferedReader(io.BytesIO(content)), encoding)
    sample: list[list[str]] = []
    try:
        for row in reader:
            sample.append([row.get(column) or "" for column in header])
            if len(sample) >= rows:
                break
    except (UnicodeDecodeError, csv.Error):
        pass  # the import reports the bad row itself, with its line number
    return CsvPreview(header, sample)


@dataclass(frozen=True)
class PreviewRow:
    """One row of the file as the import will store it (or the errors that stop it)."""

    row: int  # the line, the header being 1
    action: str  # create | update | skip
    contact: dict[str, Any]  # the fields the row sets, as they will be stored
    status: str | None  # a new contact's status; an existing one's stays unless an opt-out
    basis: str | None  # the basis its consent record names (new contacts)
    errors: list[RowError]

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "action": self.action,
            "contact": self.contact,
            "status": self.status,
            "basis": self.basis,
            "errors": [e.as_dict() for e in self.errors],
        }


def preview_import(
    session: Session,
    content: bytes,
    *,
    permission: ImportPermission | None,
    mapping: dict[str, str] | None = None,
    encoding: str = "utf-8",
    fmt: TextFormat = PLAIN,
    rows: int = 5,
) -> tuple[dict[str, str], list[PreviewRow]]:
    """The resolved mapping and the first ``rows`` rows as the import would store them,
    parsed by the same code, writing nothing. Without a declared permission (a draft not
    mapped yet) new contacts' status is left open. InvalidInput for what stops the whole
    import (encoding, mapping, permission), as the import itself would say."""
    encoding = text_encoding(encoding)
    check_encoding(content[:65536], encoding)
    fields = field_types(session)
    header, reader = _rows(io.BufferedReader(io.BytesIO(content)), encoding)
    resolved, _ignored = resolve_mapping(header, fields, mapping)
    if permission is not None:
        check_permission(permission, resolved)
    email_column = next(c for c, t in resolved.items() if t == "email")
    parsed: list[tuple[int, dict[str, Any], list[RowError]]] = []
    line = 1
    try:
        for raw in reader:
            line += 1
            if None in raw:
                parsed.append((line, {}, [RowError(line, "", "more values than header columns")]))
            else:
                values, problems = _parse_row(raw, resolved, fields, fmt)
                parsed.append((line, values, [RowError(line, c, r) for c, r in problems]))
            if len(parsed) >= rows:
                break
    except (UnicodeDecodeError, csv.Error) as exc:
        parsed.append((line + 1, {}, [RowError(line + 1, "", f"unreadable: {exc}")]))
    emails = [v["email"] for _, v, e in parsed if not e]
    existing = {
        email: status
        for email, status in session.execute(
            select(Contact.email, Contact.status).where(Contact.email.in_(emails))
        )
    }
    erased = erased_addresses(session, [e for e in emails if e not in existing])
    out = []
    for row_line, values, errors in parsed:
        if not errors and values["email"] in erased:
            errors = [
                RowError(row_line, email_column, "this address belonged to an erased contact")
            ]
        if errors:
            out.append(PreviewRow(row_line, "skip", {}, None, None, errors))
            continue
        shown = {k: v for k, v in values.items() if k not in ("status", "consent")}
        if values["email"] in existing:
            status = _plain(existing[values["email"]])
            if values.get("status") in IMPORT_MAY_SET:
                status = values["status"]
            out.append(PreviewRow(row_line, "update", shown, status, None, []))
        elif permission is None:
            out.append(PreviewRow(row_line, "create", shown, None, None, []))
        else:
            status, basis = permission.row_status(values)
            out.append(PreviewRow(row_line, "create", shown, status, basis, []))
    return resolved, out


def resolve_mapping(
    header: list[str], fields: dict[str, CustomField], explicit: dict[str, str] | None
) -> tuple[dict[str, str], list[str]]:
    """Column → target field; targets are standard fields or ``attributes.<name>``.

    An explicit mapping wins; a target of "" ignores the column. Columns that
    match nothing are returned as ignored (reported, not an error).
    """
    mapping: dict[str, str] = {}
    ignored: list[str] = []
    errors: list[FieldError] = []
    explicit = explicit or {}
    for column in header:
        target = explicit.get(column)
        if target is None:
            target = suggest_target(column, fields)
        if not target:
            ignored.append(column)
            continue
        valid = target in STANDARD_FIELDS.values() or (
            target.startswith("attributes.") and target.removeprefix("attributes.") in fields
        )
        if not valid:
            errors.append(FieldError(f"mapping.{column}", f"unknown target field {target!r}"))
        mapping[column] = target
    for column in explicit:
        if column not in header:
            errors.append(FieldError(f"mapping.{column}", "no such column in the file"))
    if "email" not in mapping.values():
        errors.append(FieldError("columns", "the file has no email column (map one to 'email')"))
    if errors:
        raise InvalidInput(errors)
    return mapping, ignored


def _parse_row(
    row: dict[str, str],
    mapping: dict[str, str],
    fields: dict[str, CustomField],
    fmt: TextFormat = PLAIN,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    values: dict[str, Any] = {"attributes": {}}
    errors: list[tuple[str, str]] = []
    for column, target in mapping.items():
        raw = (row.get(column) or "").strip()
        try:
            if target == "email":
                values["email"] = normalize_email(raw)
            elif target.startswith("attributes."):
                name = target.removeprefix("attributes.")
                value = coerce_text(fields[name], raw, fmt)
                if value is not None:
                    values["attributes"][name] = value
            elif target == "consent":
                values["consent"] = _consent(raw)
            elif raw == "":
                continue
            elif target == "time_zone":
                values["time_zone"] = validate_time_zone(raw)
            elif target == "lifecycle_stage":
                values["lifecycle_stage"] = LifecycleStage(raw.lower()).value
            elif target == "status":
                values["status"] = ContactStatus(raw.lower()).value
            elif target == "score":
                number = coerce_text(_SCORE, raw, fmt)
                if not isinstance(number, int) or abs(number) > 2**31 - 1:
                    raise ValueError("expected a whole number")
                values["score"] = number
            elif target == "tags":
                values["tags"] = sorted(
                    {t.strip() for t in raw.replace(";", ",").split(",") if t.strip()}
                )
            else:
                limit = 128 if target == "external_id" else 100
                if len(raw) > limit:
                    raise ValueError(f"longer than {limit} characters")
                values[target] = raw
        except ValueError as exc:
            errors.append((column, str(exc) or "invalid value"))
    return values, errors


_SCORE = CustomField(name="score", label="Score", type=FieldType.NUMBER, options=[])


def _consent(raw: str) -> bool:
    lowered = " ".join(raw.lower().replace("_", " ").split())
    if lowered in CONSENT_YES:
        return True
    if lowered in CONSENT_NO or lowered == "":
        return False
    raise ValueError("expected yes or no (an empty cell means no)")


def _rows(stream: IO[bytes], encoding: str) -> tuple[list[str], Iterator[dict[str, str]]]:
    text = io.TextIOWrapper(
        stream,
        encoding="utf-8-sig" if encoding == "utf-8" else encoding,
        errors="strict",
        newline="",
    )
    reader = csv.DictReader(text)
    try:
        header = reader.fieldnames
    except UnicodeDecodeError:
        raise InvalidInput(FieldError("file", f"the file is not valid {encoding}")) from None
    except csv.Error as exc:
        raise InvalidInput(FieldError("file", f"not a CSV file: {exc}")) from None
    if not header:
        raise InvalidInput(FieldError("file", "the file is empty"))
    # Rows are keyed by the stripped names too, so "Email, First Name" maps both columns.
    reader.fieldnames = [h.strip() for h in header]
    return list(reader.fieldnames), reader


def import_contacts(
    session: Session,
    stream: IO[bytes],
    *,
    permission: ImportPermission,
    mapping: dict[str, str] | None = None,
    encoding: str = "utf-8",
    fmt: TextFormat = PLAIN,
    batch_size: int = 1000,
    source: str = "import",
    on_batch: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Import contacts from a CSV byte stream under the declared ``permission``, reading
    dates and numbers as ``fmt`` says. ``on_batch`` runs after each written batch (the
    CLI commits and moves its progress bar there)."""
    encoding = text_encoding(encoding)
    head = stream.peek(65536) if hasattr(stream, "peek") else b""
    check_encoding(head[:65536], encoding)
    fields = field_types(session)
    header, reader = _rows(stream, encoding)
    mapping_resolved, ignored = resolve_mapping(header, fields, mapping)
    check_permission(permission, mapping_resolved)
    report = ImportReport(ignored_columns=ignored, mapping=mapping_resolved)
    batch: list[tuple[int, dict[str, Any]]] = []
    line = 1
    try:
        for raw in reader:
            line += 1
            report.rows += 1
            if None in raw:
                report.failed += 1
                report.add_error(RowError(line, "", "more values than header columns"))
                continue
            values, errors = _parse_row(raw, mapping_resolved, fields, fmt)
            if errors:
                report.failed += 1
                for column, reason in errors:
                    report.add_error(RowError(line, column, reason))
                continue
            batch.append((line, values))
            if len(batch) >= batch_size:
                _write_batch(session, batch, report, source, permission)
                batch = []
                if on_batch:
                    on_batch(report)
    except UnicodeDecodeError:
        report.add_error(RowError(line + 1, "", f"not valid {encoding}; import stopped here"))
        report.failed += 1
    except csv.Error as exc:
        report.add_error(RowError(line + 1, "", f"malformed CSV: {exc}; import stopped here"))
        report.failed += 1
    if batch:
        _write_batch(session, batch, report, source, permission)
    if on_batch:
        on_batch(report)
    return report


CONTACT_COLUMNS = (
    "first_name",
    "last_name",
    "external_id",
    "time_zone",
    "lifecycle_stage",
    "score",
    "status",
)


def check_permission(permission: ImportPermission, mapping: dict[str, str]) -> None:
    """A consent column says who has the declared permission: it needs a basis."""
    if "consent" in mapping.values() and permission.basis is ImportBasis.NONE:
        raise InvalidInput(
            FieldError(
                "permission",
                "a consent column says who agreed to what: declare the basis it rests on "
                "(e.g. consent)",
            )
        )


def _write_batch(
    session: Session,
    batch: list[tuple[int, dict[str, Any]]],
    report: ImportReport,
    source: str,
    permission: ImportPermission,
) -> None:
    # A later row for the same address wins, as when editing the contact twice.
    by_email: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, values in batch:
        if values["email"] in by_email:
            report.unchanged += 1  # superseded by a later row of the same file
        by_email[values["email"]] = (line, values)
    emails = list(by_email)
    existing = {
        c.email: c
        for c in session.execute(
            select(
                Contact.id,
                Contact.email,
                Contact.first_name,
                Contact.last_name,
                Contact.external_id,
                Contact.time_zone,
                Contact.lifecycle_stage,
                Contact.score,
                Contact.status,
                Contact.attributes,
            ).where(Contact.email.in_(emails))
        )
    }
    erased = erased_addresses(session, [e for e in emails if e not in existing])
    if erased:
        column = next((c for c, t in report.mapping.items() if t == "email"), "email")
        for email in erased:
            line, _ = by_email.pop(email)
            report.failed += 1
            report.add_error(
                RowError(
                    line,
                    column,
                    "this address belonged to an erased contact: an import does not re-create "
                    "it (the person can sign up again through a form)",
                )
            )
    current_tags: dict[int, set[str]] = {}
    if existing:
        for contact_id, name in session.execute(
            select(ContactTag.contact_id, Tag.name)
            .join(Tag)
            .where(ContactTag.contact_id.in_([c.id for c in existing.values()]))
        ):
            current_tags.setdefault(contact_id, set()).add(name)
    now = clock.now()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    tag_adds: dict[str, list[str]] = {}
    changed_ids: list[int] = []
    bases: list[str] = []
    status_changes: list[tuple[int, str, str]] = []
    for email, (_line, values) in by_email.items():
        old = existing.get(email)
        tags = values.get("tags", [])
        if old is None:
            row = new_contact_row(email, source, now)
            row.update({k: values[k] for k in CONTACT_COLUMNS if k in values})
            row["status"], basis = permission.row_status(values)
            row["attributes"] = values["attributes"]
            row["confirmed_at"] = None  # nobody confirmed anything by double opt-in
            inserts.append(row)
            bases.append(basis)
            if tags:
                tag_adds[email] = tags
            continue
        change: dict[str, Any] = {}
        for key in CONTACT_COLUMNS:
            if key in values and values[key] != _plain(getattr(old, key)):
                change[key] = values[key]
        if "status" in change:
            old_status = ContactStatus(_plain(old.status))
            if (
                change["status"] in IMPORT_MAY_SET
                and ContactStatus(change["status"]) in (ALLOWED[old_status])
            ):
                status_changes.append((old.id, old_status.value, change["status"]))
            else:
                del change["status"]  # an import records opt-outs, never an opt-in
        merged = {**old.attributes, **values["attributes"]}
        if merged != old.attributes:
            change["attributes"] = merged
        new_tags = [t for t in tags if t not in current_tags.get(old.id, set())]
        if new_tags:
            tag_adds[email] = new_tags
        if change or new_tags:
            if change:
                updates.append({"id": old.id, **change, "updated_at": now})
            changed_ids.append(old.id)
            report.updated += 1
        else:
            report.unchanged += 1
    if inserts:
        ids = session.scalars(
            dialect_insert(session, Contact).returning(
                Contact.id, Contact.email, sort_by_parameter_order=True
            ),
            inserts,
        )
        report.created += len(inserts)
        new_ids = list(ids)
        changed_ids.extend(new_ids)
        id_of = {row["email"]: new_ids[i] for i, row in enumerate(inserts)}
        session.execute(
            insert(ConsentRecord),
            [
                {
                    "contact_id": new_ids[i],
                    "status_from": None,
                    "status_to": row["status"],
                    "occurred_at": now,
                    "source": source,
                    "ip": None,
                    "consent_text": permission.consent_text,
                    "basis": bases[i],
                }
                for i, row in enumerate(inserts)
            ],
        )
    else:
        id_of = {}
    if status_changes:
        session.execute(
            insert(ConsentRecord),
            [
                {
                    "contact_id": contact_id,
                    "status_from": status_from,
                    "status_to": status_to,
                    "occurred_at": now,
                    "source": source,
                    "ip": None,
                    "consent_text": None,
                    "basis": None,
                }
                for contact_id, status_from, status_to in status_changes
            ],
        )
    if updates:
        session.execute(update(Contact), updates)
    id_of.update({email: c.id for email, c in existing.items()})
    by_tag: dict[str, list[int]] = {}
    for email, tags in tag_adds.items():
        for tag in tags:
            by_tag.setdefault(tag, []).append(id_of[email])
    for tag, contact_ids in by_tag.items():
        tag_ops.add_tags(session, contact_ids, [tag])
    react_to_contact_changes(session, changed_ids)


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def iter_csv_errors(report: ImportReport) -> Iterable[list[str]]:
    """The error report as CSV rows (row, column, reason)."""
    yield ["row", "column", "reason"]
    for error in report.errors:
        yield [str(error.row), error.column, error.reason]
