"""Declared input and output shapes for contacts, fields and events (drive the OpenAPI doc)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from automation.addresses import Email, validate_time_zone
from automation.contacts.models import ContactStatus, FieldType, IndexStatus, LifecycleStage
from automation.db import PageNumber, clip_json, json_depth

TimeZone = Annotated[str, AfterValidator(validate_time_zone)]
TagName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
FieldName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$", min_length=1, max_length=64)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ContactIn(Strict):
    email: Email
    external_id: str | None = Field(None, max_length=128)
    first_name: str = Field("", max_length=100)
    last_name: str = Field("", max_length=100)
    status: ContactStatus = ContactStatus.SUBSCRIBED
    time_zone: TimeZone = "UTC"
    lifecycle_stage: LifecycleStage = LifecycleStage.SUBSCRIBER
    score: int = Field(0, ge=-1_000_000, le=1_000_000)
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[TagName] = Field(default_factory=list, max_length=100)
    consent_text: str | None = Field(None, max_length=2000, description="Consent wording shown")


class ContactPatch(Strict):
    email: Email | None = None
    external_id: str | None = Field(None, max_length=128)
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    status: ContactStatus | None = None
    time_zone: TimeZone | None = None
    lifecycle_stage: LifecycleStage | None = None
    score: int | None = Field(None, ge=-1_000_000, le=1_000_000)
    attributes: dict[str, Any] | None = Field(
        None, description="Merged into the stored attributes; a null value removes one"
    )
    add_tags: list[TagName] = Field(default_factory=list, max_length=100)
    remove_tags: list[TagName] = Field(default_factory=list, max_length=100)
    consent_text: str | None = Field(None, max_length=2000)


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    external_id: str | None
    first_name: str
    last_name: str
    status: ContactStatus
    time_zone: str
    lifecycle_stage: LifecycleStage
    score: int
    attributes: dict[str, Any]
    tags: list[str]
    confirmed_at: datetime | None
    last_open_at: datetime | None
    last_click_at: datetime | None
    emails_sent: int
    opens: int
    clicks: int
    engagement_score: float
    created_at: datetime
    updated_at: datetime

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_names(cls, value: Any) -> list[str]:
        return [getattr(tag, "name", tag) for tag in value]


class ContactPage(BaseModel):
    items: list[ContactOut]
    total: int
    page: int
    per_page: int


class ContactSearch(Strict):
    q: str | None = Field(None, max_length=200, description="Matches email and names")
    status: ContactStatus | None = None
    lifecycle_stage: LifecycleStage | None = None
    tag: str | None = None
    page: PageNumber = Field(1, ge=1)
    per_page: int = Field(50, ge=1, le=500)


class CustomFieldIn(Strict):
    name: FieldName
    label: str = Field(..., min_length=1, max_length=100)
    type: FieldType
    options: list[str] = Field(default_factory=list, max_length=200)
    indexed: bool = Field(
        False,
        description="Build a database index on this attribute for segment conditions "
        "(PostgreSQL; see docs/segments.md)",
    )


class CustomFieldPatch(Strict):
    indexed: bool = Field(
        ...,
        description="Build (true) or drop (false) this attribute's index; true retries a failure",
    )


class CustomFieldOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    label: str
    type: FieldType
    options: list[str]
    indexed: bool
    index_status: IndexStatus = Field(
        description="none, building, ready (segments use it), failed (see index_error), "
        "or unsupported (SQLite)"
    )
    index_error: str | None


class StatusChange(Strict):
    status: ContactStatus
    consent_text: str | None = Field(None, max_length=2000)


# Event properties are bounded when written, so every later read (the contact's events,
# the GDPR export, workflow conditions) can take them whole: Segment's limits per event
# and per batch call.
MAX_PROPERTY_DEPTH = 32
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024


def bounded_properties(value: dict[str, Any]) -> dict[str, Any]:
    """Event properties no deeper than MAX_PROPERTY_DEPTH and no larger than
    MAX_EVENT_BYTES as JSON, with only finite numbers."""
    if json_depth(value) > MAX_PROPERTY_DEPTH:
        raise ValueError(f"nested deeper than {MAX_PROPERTY_DEPTH} levels")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ValueError("numbers must be finite (no NaN or Infinity)") from None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_EVENT_BYTES:
        raise ValueError(f"{size} bytes as JSON; at most {MAX_EVENT_BYTES // 1024} KB per event")
    return value


class EventIn(Strict):
    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")
    email: Email | None = None
    external_id: str | None = Field(None, max_length=128)
    properties: Annotated[dict[str, Any], AfterValidator(bounded_properties)] = Field(
        default_factory=dict,
        description=f"At most {MAX_PROPERTY_DEPTH} levels deep and "
        f"{MAX_EVENT_BYTES // 1024} KB as JSON",
    )
    occurred_at: datetime | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


MAX_EVENT_BATCH = 1000


class EventBatchIn(Strict):
    events: list[Any] = Field(
        ..., min_length=1, max_length=MAX_EVENT_BATCH, description="Each item is an EventIn"
    )


class EventItemResult(BaseModel):
    index: int
    status: str = Field(description="created | duplicate | error")
    id: int | None = None
    contact_id: int | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)


class EventBatchOut(BaseModel):
    created: int
    duplicates: int
    errors: int
    results: list[EventItemResult]


def readable_properties(value: Any) -> Any:
    """Stored properties as they can be shown: ones stored before MAX_PROPERTY_DEPTH was
    enforced are clipped there (the deeper part as its JSON text)."""
    return clip_json(value, MAX_PROPERTY_DEPTH)


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    contact_id: int
    name: str
    properties: Annotated[dict[str, Any], BeforeValidator(readable_properties)]
    occurred_at: datetime
    received_at: datetime
    source: str
