"""GDPR: export everything held on one contact; erase a contact everywhere."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.addresses import email_hash
from automation.contacts.models import Contact
from automation.contacts.related import delete_related_rows, export_related_rows
from automation.contacts.schema import MAX_PROPERTY_DEPTH
from automation.contacts.service import get_contact
from automation.contacts.suppressions import SuppressionReason, suppress
from automation.db import clip_json

EXPORT_DEPTH = 3 + MAX_PROPERTY_DEPTH  # table → row → column → the properties


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return getattr(value, "value", value)


def export_contact(session: Session, contact_id: int) -> dict[str, Any]:
    """Profile plus every row in any table that refers to the contact, as JSON-ready data."""
    contact = get_contact(session, contact_id)
    row = session.execute(select(Contact.__table__).where(Contact.id == contact.id)).mappings()
    profile = dict(row.one())
    related = export_related_rows(session, contact.id)
    document = {
        "exported_at": clock.now(),
        "profile": profile,
        "tags": [t.name for t in contact.tags],
        **related,
    }
    # Rows, then their JSON columns: event properties stored before they were bounded
    # can nest hundreds deep, past what the response's serializer takes.
    return _jsonable(clip_json(document, EXPORT_DEPTH))


def erase_contact(session: Session, contact_id: int) -> str:
    """Delete the contact and everything referring to it; keep only a hash of the address
    in suppressions so that a later import of the same address is never mailed."""
    contact = get_contact(session, contact_id)
    digest = email_hash(contact.email)
    suppress(session, [contact.email], SuppressionReason.ERASED, source="gdpr_erasure")
    delete_related_rows(session, [contact.id])
    session.delete(contact)
    session.flush()
    return digest
