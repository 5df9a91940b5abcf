"""Declared input and output shapes for templates, sender identities and messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from automation.addresses import smtputf8_warnings
from automation.config import LANGUAGE_TAG
from automation.contacts.schema import Email, Strict
from automation.db import BigRowId, PageNumber, RowId
from automation.email.models import MessageStatus, TemplateKind


class SenderIdentityIn(Strict):
    name: str = Field(..., min_length=1, max_length=100)
    from_name: str = Field(..., min_length=1, max_length=100)
    from_email: Email
    reply_to: Email | None = None
    max_per_minute: int = Field(600, ge=1, le=1_000_000)


class SenderIdentityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    from_name: str
    from_email: str
    reply_to: str | None
    max_per_minute: int
    paused_at: datetime | None = None
    paused_reason: str | None = None

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def warnings(self) -> list[str]:
        """Valid, but: an address that can be sent only through a relay with SMTPUTF8."""
        return smtputf8_warnings(self.from_email, self.reply_to)


class DefaultSenderOut(BaseModel):
    """The default sender (NURTURE_DEFAULT_SENDER): it has no identity row, but the complaint
    guard pauses it like one."""

    from_name: str
    from_email: str
    paused_at: datetime | None = None
    paused_reason: str | None = None


class TemplateContent(Strict):
    """The fields of a version: saving them makes a new version."""

    kind: TemplateKind = TemplateKind.MARKETING
    sender_identity_id: RowId | None = Field(
        None, description="Sender identity; none uses NURTURE_DEFAULT_SENDER"
    )
    subject: str = Field(..., max_length=500)
    preheader: str = Field("", max_length=500)
    mjml: str = Field(..., max_length=500_000, description="MJML with Jinja placeholders")
    language: str | None = Field(
        None,
        max_length=35,
        pattern=LANGUAGE_TAG,
        description="The emails' language (BCP 47, e.g. en, de-CH: <html lang>); "
        "none uses the workspace's (NURTURE_EMAIL_LANGUAGE)",
    )


class DraftPreviewIn(TemplateContent):
    contact_id: BigRowId | None = Field(None, description="Render for this contact; else a sample")


class TemplateIn(TemplateContent):
    name: str = Field(..., min_length=1, max_length=200)


class TemplateRename(Strict):
    name: str = Field(..., min_length=1, max_length=200)


class ProblemOut(BaseModel):
    path: str
    message: str
    line: int | None = None
    column: int | None = None


def visible_links(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The links a reader can see: the compiler's hidden honeypot is left out."""
    return [link for link in links if not link.get("honeypot")]


class ValidationOut(BaseModel):
    valid: bool
    errors: list[ProblemOut]
    warnings: list[ProblemOut]
    links: list[dict[str, Any]] = Field(default_factory=list)
    html_bytes: int | None = None

    @field_validator("links")
    @classmethod
    def _visible(cls, links: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return visible_links(links)


class DraftPreviewOut(BaseModel):
    valid: bool
    errors: list[ProblemOut]
    warnings: list[ProblemOut]
    subject: str | None = None
    html: str | None = None
    text: str | None = None


class VersionSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    number: int
    kind: TemplateKind
    sender_identity_id: int | None
    subject: str
    created_at: datetime


class VersionOut(VersionSummary):
    preheader: str
    language: str | None = None
    mjml: str
    html: str
    text: str
    links: list[dict[str, Any]]
    html_bytes: int

    @field_validator("links")
    @classmethod
    def _visible(cls, links: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return visible_links(links)


class TemplateOut(BaseModel):
    id: int
    name: str
    latest_version: int
    created_at: datetime
    updated_at: datetime
    version: VersionOut
    warnings: list[ProblemOut] = Field(default_factory=list)


class TemplateSummary(BaseModel):
    id: int
    name: str
    latest_version: int
    kind: TemplateKind
    subject: str
    updated_at: datetime


class PreviewIn(Strict):
    contact_id: BigRowId | None = Field(None, description="Render for this contact; else a sample")
    version_id: RowId | None = Field(None, description="A version of this template; else latest")


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str
    viewports: dict[str, int] = Field(
        description="Widths to show the HTML at (desktop, mobile), in CSS pixels"
    )
    contact: str = Field(description="Whom it was rendered for")


class TestSendIn(PreviewIn):
    to: Email


class TestSendOut(BaseModel):
    status: str
    response: str
    message_id: str


class MessageSearch(Strict):
    status: MessageStatus | None = None
    contact_id: BigRowId | None = None
    template_id: RowId | None = None
    campaign_id: RowId | None = None
    enrollment_id: BigRowId | None = None
    page: PageNumber = Field(1, ge=1)
    per_page: int = Field(50, ge=1, le=500)


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dedupe_key: str
    contact_id: int
    template_version_id: int
    sender_identity_id: int | None
    marketing: bool
    status: MessageStatus
    reason: str | None
    error: str | None
    attempts: int
    next_attempt_at: datetime
    lease_expires_at: datetime | None
    smtp_response: str | None
    provider_message_id: str | None
    internet_message_id: str | None = Field(
        description="The Message-ID header it went out with (angle brackets included)"
    )
    campaign_id: int | None
    campaign_variant_id: int | None
    enrollment_id: int | None
    workflow_node_id: str | None
    workflow_name: str | None
    campaign_name: str | None
    created_at: datetime
    sent_at: datetime | None
    first_open_at: datetime | None
    last_open_at: datetime | None
    opens: int
    first_click_at: datetime | None
    last_click_at: datetime | None
    clicks: int


class MessagePage(BaseModel):
    items: list[MessageOut]
    total: int
    page: int
    per_page: int
