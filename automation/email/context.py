"""What a template can see: the contact (fields, typed attributes, tags, lifecycle stage),
its own unsubscribe / preferences / view-in-browser URLs and the workflow or campaign name.
Nothing else: no settings, request or secrets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from contextlib import suppress
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Contact, ContactTag, CustomField, FieldType, Tag
from automation.db import one_of

# Names a template may use at the top level.
CONTEXT_NAMES = frozenset(
    {
        "contact",
        "unsubscribe_url",
        "preferences_url",
        "view_in_browser_url",
        "confirm_url",
        "workflow_name",
        "campaign_name",
    }
)
CONTACT_FIELDS = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "full_name",
        "external_id",
        "lifecycle_stage",
        "score",
        "time_zone",
        "tags",
        "attributes",
    }
)

_CONTACT_COLUMNS = (
    Contact.id,
    Contact.email,
    Contact.first_name,
    Contact.last_name,
    Contact.external_id,
    Contact.lifecycle_stage,
    Contact.score,
    Contact.time_zone,
    Contact.attributes,
)


def field_types(session: Session) -> dict[str, FieldType]:
    return {
        name: kind for name, kind in session.execute(select(CustomField.name, CustomField.type))
    }


def _typed(attributes: Mapping[str, Any], types: Mapping[str, FieldType]) -> dict[str, Any]:
    out = dict(attributes)
    for name, value in attributes.items():
        if types.get(name) is FieldType.DATE and isinstance(value, str):
            with suppress(ValueError):
                out[name] = date.fromisoformat(value)
    return out


def contact_context(
    row: Mapping[str, Any], tags: list[str], types: Mapping[str, FieldType]
) -> dict[str, Any]:
    first, last = row["first_name"] or "", row["last_name"] or ""
    stage = row["lifecycle_stage"]
    return {
        "email": row["email"],
        "first_name": first,
        "last_name": last,
        "full_name": f"{first} {last}".strip(),
        "external_id": row["external_id"],
        "lifecycle_stage": getattr(stage, "value", stage),
        "score": row["score"],
        "time_zone": row["time_zone"],
        "tags": tags,
        "attributes": _typed(row["attributes"] or {}, types),
    }


# The contact columns rendering needs, for callers selecting them with other columns.
CONTACT_COLUMNS = _CONTACT_COLUMNS[1:]


def load_tags(session: Session, contact_ids: Iterable[int]) -> dict[int, list[str]]:
    tags: dict[int, list[str]] = defaultdict(list)
    ids = sorted(set(contact_ids))
    if ids:
        for contact_id, name in session.execute(
            select(ContactTag.contact_id, Tag.name)
            .join(Tag, Tag.id == ContactTag.tag_id)
            .where(one_of(session, ContactTag.contact_id, ids))
            .order_by(Tag.name)
        ):
            tags[contact_id].append(name)
    return tags


def load_contact_contexts(
    session: Session, contact_ids: Iterable[int], types: Mapping[str, FieldType] | None = None
) -> dict[int, dict[str, Any]]:
    """Rendering context for many contacts in three small queries."""
    ids = sorted(set(contact_ids))
    if not ids:
        return {}
    types = field_types(session) if types is None else types
    rows = session.execute(
        select(*_CONTACT_COLUMNS).where(one_of(session, Contact.id, ids))
    ).mappings()
    tags = load_tags(session, ids)
    return {row["id"]: contact_context(dict(row), tags[row["id"]], types) for row in rows}


def _sample_value(field: CustomField) -> Any:
    if field.type is FieldType.NUMBER:
        return 42
    if field.type is FieldType.BOOLEAN:
        return True
    if field.type is FieldType.DATE:
        return clock.now().date()
    if field.type is FieldType.CHOICE:
        return field.options[0] if field.options else ""
    return f"Sample {field.label or field.name}"


def sample_contact(session: Session) -> dict[str, Any]:
    """A contact with every declared attribute filled, for previews and save-time checks."""
    fields = list(session.scalars(select(CustomField).order_by(CustomField.name)))
    return {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "full_name": "Ada Lovelace",
        "external_id": "sample-1",
        "lifecycle_stage": "lead",
        "score": 10,
        "time_zone": "Europe/London",
        "tags": ["sample"],
        "attributes": {f.name: _sample_value(f) for f in fields},
    }


def template_context(
    contact: dict[str, Any],
    *,
    unsubscribe_url: str,
    preferences_url: str,
    view_in_browser_url: str,
    confirm_url: str = "",
    workflow_name: str | None = None,
    campaign_name: str | None = None,
) -> dict[str, Any]:
    return {
        "contact": contact,
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": preferences_url,
        "view_in_browser_url": view_in_browser_url,
        "confirm_url": confirm_url,
        "workflow_name": workflow_name or "",
        "campaign_name": campaign_name or "",
    }
