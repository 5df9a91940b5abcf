"""Declared input and output shapes of lead-capture forms (drive the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from automation.contacts.schema import FieldName, Strict, TagName
from automation.db import RowId

CONTACT_FIELDS = ("email", "first_name", "last_name")


class FormFieldIn(Strict):
    name: FieldName = Field(
        ..., description="email, first_name, last_name, or a declared custom field"
    )
    label: str = Field(..., min_length=1, max_length=100)
    required: bool = False


class FormIn(Strict):
    name: str = Field(..., min_length=1, max_length=200)
    fields: list[FormFieldIn] = Field(..., min_length=1, max_length=30)
    consent_text: str = Field(
        "", max_length=2000, description="shown beside a required consent checkbox; recorded"
    )
    double_opt_in: bool = False
    tags: list[TagName] = Field(default_factory=list, max_length=20)
    lists: list[RowId] = Field(
        default_factory=list, max_length=20, description="static lists a submission joins"
    )
    success_message: str = Field("Thank you!", max_length=500)
    redirect_url: str | None = Field(None, max_length=2000, description="http(s) page after a post")
    confirmation_template_id: RowId | None = Field(
        None, description="transactional template with {{ confirm_url }}; none = built-in"
    )


class FormFieldOut(BaseModel):
    name: str
    label: str
    required: bool
    type: str
    options: list[str] = Field(default_factory=list)


class FormOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    public_id: str
    name: str
    fields: list[FormFieldOut]
    consent_text: str
    double_opt_in: bool
    tags: list[str]
    lists: list[int]
    success_message: str
    redirect_url: str | None
    confirmation_template_id: int | None
    action_url: str
    embed_html: str
    created_at: datetime
    updated_at: datetime


class SubmissionOut(BaseModel):
    status: str = Field(description="confirmed | pending (check your inbox)")
    message: str
    contact_id: int | None = None


class SiteOriginIn(Strict):
    origin: str = Field(..., max_length=255, description="https://shop.example")


class SiteOriginOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    origin: str
    created_at: datetime


class SiteIdentitySecretOut(BaseModel):
    origin: str
    identity_secret: str = Field(
        ...,
        description="HMAC-SHA256 key for identify hashes: hex(HMAC-SHA256(identity_secret, "
        "lower-cased email)). Keep it on the site's server.",
    )


class TopicIn(Strict):
    tag: str = Field(..., min_length=1, max_length=100, description="the tag a choice adds")
    label: str = Field(..., min_length=1, max_length=200, description="shown to contacts")


class TopicOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    tag: str
    label: str
