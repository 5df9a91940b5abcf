"""Contact CRUD and search. Functions take a session and never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts import tags as tag_ops
from automation.contacts.attributes import field_types, validate_attributes
from automation.contacts.consent import change_status, record_consent
from automation.contacts.models import (
    Contact,
    ContactStatus,
    ContactTag,
    CustomField,
    IndexStatus,
    Tag,
)
from automation.contacts.related import delete_related_rows
from automation.contacts.schema import ContactIn, ContactPatch, ContactSearch, CustomFieldIn
from automation.contacts.suppressions import erased_addresses, forget_erasure
from automation.db import is_postgres, json_objects
from automation.errors import Conflict, FieldError, InvalidInput, NotFound
from automation.reactions import react_to_contact_changes
from automation.references import Target, refuse_if_used


def get_contact(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} not found")
    return contact


def find_contact_by_email(session: Session, email: str) -> Contact | None:
    return session.scalar(select(Contact).where(Contact.email == email.strip().lower()))


def _ensure_unique(
    session: Session, *, email: str | None, external_id: str | None, exclude_id: int | None = None
) -> None:
    errors = []
    for field, value, message in (
        ("email", email, "a contact with this email already exists"),
        ("external_id", external_id, "a contact with this external_id exists"),
    ):
        if value is None:
            continue
        q = select(Contact.id).where(getattr(Contact, field) == value)
        if exclude_id is not None:
            q = q.where(Contact.id != exclude_id)
        if session.scalar(q) is not None:
            errors.append(FieldError(field, message))
    if errors:
        raise Conflict("; ".join(f"{e.path}: {e.message}" for e in errors), errors)


def _refuse_erased(session: Session, email: str, consent_text: str | None) -> None:
    """An erased contact's address comes back only with the person's new consent; then its
    tombstone goes, so the new contact can be mailed (docs/contacts.md, "Erasure")."""
    if not erased_addresses(session, [email]):
        return
    if not consent_text:
        raise Conflict(
            "this address belonged to an erased contact",
            [
                FieldError(
                    "email",
                    "this address belonged to an erased contact; use it again only with the "
                    "person's new consent (consent_text)",
                )
            ],
        )
    forget_erasure(session, email)


def create_contact(
    session: Session, data: ContactIn, *, source: str, ip: str | None = None
) -> Contact:
    attributes, errors = validate_attributes(field_types(session), data.attributes)
    if errors:
        raise InvalidInput(errors)
    _ensure_unique(session, email=data.email, external_id=data.external_id)
    _refuse_erased(session, data.email, data.consent_text)
    now = clock.now()
    contact = Contact(
        email=data.email,
        external_id=data.external_id,
        first_name=data.first_name,
        last_name=data.last_name,
        status=data.status,
        time_zone=data.time_zone,
        lifecycle_stage=data.lifecycle_stage,
        score=data.score,
        attributes={k: v for k, v in attributes.items() if v is not None},
        source=source,
        confirmed_at=now if data.status is ContactStatus.SUBSCRIBED else None,
        created_at=now,
        updated_at=now,
    )
    session.add(contact)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("a contact with this email or external_id already exists") from None
    record_consent(session, contact, None, source=source, ip=ip, consent_text=data.consent_text)
    tag_ops.add_tags(session, [contact.id], data.tags)
    session.refresh(contact)
    react_to_contact_changes(session, [contact.id])
    return contact


def update_contact(
    session: Session, contact_id: int, patch: ContactPatch, *, source: str, ip: str | None = None
) -> Contact:
    contact = get_contact(session, contact_id)
    fields = patch.model_fields_set
    if patch.attributes is not None:
        clean, errors = validate_attributes(field_types(session), patch.attributes)
        if errors:
            raise InvalidInput(errors)
        merged = dict(contact.attributes)
        for name, value in clean.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        contact.attributes = merged
    if "email" in fields and patch.email is not None and patch.email != contact.email:
        _ensure_unique(session, email=patch.email, external_id=None, exclude_id=contact.id)
        _refuse_erased(session, patch.email, patch.consent_text)
        contact.email = patch.email
    if "external_id" in fields and patch.external_id != contact.external_id:
        _ensure_unique(session, email=None, external_id=patch.external_id, exclude_id=contact.id)
        contact.external_id = patch.external_id
    for name in ("first_name", "last_name", "time_zone", "lifecycle_stage", "score"):
        value = getattr(patch, name)
        if name in fields and value is not None:
            setattr(contact, name, value)
    if patch.status is not None:
        change_status(
            session, contact, patch.status, source=source, ip=ip, consent_text=patch.consent_text
        )
    tag_ops.add_tags(session, [contact.id], patch.add_tags)
    tag_ops.remove_tags(session, [contact.id], patch.remove_tags)
    contact.updated_at = clock.now()
    session.flush()
    session.refresh(contact)
    react_to_contact_changes(session, [contact.id])
    return contact


def delete_contact(session: Session, contact_id: int) -> None:
    contact = get_contact(session, contact_id)
    delete_related_rows(session, [contact.id])
    session.delete(contact)
    session.flush()


def search_contacts(session: Session, search: ContactSearch) -> tuple[list[Contact], int]:
    """A page of contacts matching the search, newest first, and the total count."""
    query = select(Contact)
    if search.q:
        like = f"%{search.q.lower()}%"
        query = query.where(
            or_(
                Contact.email.like(like),
                func.lower(Contact.first_name).like(like),
                func.lower(Contact.last_name).like(like),
            )
        )
    if search.status is not None:
        query = query.where(Contact.status == search.status)
    if search.lifecycle_stage is not None:
        query = query.where(Contact.lifecycle_stage == search.lifecycle_stage)
    if search.tag:
        query = query.where(
            Contact.id.in_(select(ContactTag.contact_id).join(Tag).where(Tag.name == search.tag))
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(
        query.order_by(Contact.id.desc())
        .limit(search.per_page)
        .offset((search.page - 1) * search.per_page)
    )
    return list(page), total


def declare_field(session: Session, data: CustomFieldIn) -> CustomField:
    if data.type.value == "choice" and not data.options:
        raise InvalidInput(FieldError("options", "a choice field needs at least one option"))
    if session.scalar(select(CustomField.id).where(CustomField.name == data.name)) is not None:
        raise Conflict(
            f"custom field {data.name!r} already exists",
            [FieldError("name", "a custom field with this name already exists")],
        )
    field = CustomField(
        name=data.name,
        label=data.label,
        type=data.type,
        options=data.options,
        created_at=clock.now(),
    )
    session.add(field)
    _mark_indexed(session, field, data.indexed)
    session.flush()
    return field


def set_field_indexed(session: Session, name: str, indexed: bool) -> CustomField:
    """Ask for (or give up) the expression index of a custom field. The index itself is
    built or dropped outside the transaction, by the ``segments.sync_field_indexes`` task
    the caller queues after commit; asking again retries a failed build."""
    field = session.scalar(select(CustomField).where(CustomField.name == name))
    if field is None:
        raise NotFound(f"custom field {name!r} not found")
    _mark_indexed(session, field, indexed)
    session.flush()
    return field


def _mark_indexed(session: Session, field: CustomField, indexed: bool) -> None:
    field.indexed = indexed
    field.index_error = None
    if not indexed:
        field.index_status = IndexStatus.NONE
    elif not is_postgres(session):
        field.index_status = IndexStatus.UNSUPPORTED
    elif field.index_status is not IndexStatus.READY:
        field.index_status = IndexStatus.BUILDING


def list_fields(session: Session) -> list[CustomField]:
    return list(session.scalars(select(CustomField).order_by(CustomField.name)))


def delete_field(session: Session, name: str) -> None:
    """Remove a declared field; values already stored stay on contacts until overwritten.
    Refused while a segment, a live workflow or a lead form uses it: a segment naming an
    undeclared field can no longer be evaluated, and a workflow's branch on it fails."""
    refuse_if_used(session, Target.CUSTOM_FIELD, name, f"custom field {name!r}")
    result = session.execute(delete(CustomField).where(CustomField.name == name))
    if not result.rowcount:  # type: ignore[attr-defined]  # CursorResult has rowcount
        raise NotFound(f"custom field {name!r} not found")


def names_field(document: Any, name: str) -> bool:
    """Whether a stored document (segment conditions, a workflow) names the custom field
    ``name``: as a condition's or trigger's ``field`` (``attributes.name``, or ``name`` for
    date fields) or as a key an update step sets."""
    wanted = {name, f"attributes.{name}"}
    return any(
        value.get("field") in wanted
        or (isinstance(value.get("set"), dict) and f"attributes.{name}" in value["set"])
        for value in json_objects(document)
    )
