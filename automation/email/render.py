"""Per-recipient rendering of a compiled version: one sandboxed Jinja render of the subject,
HTML and text, with the message's signed tracking URLs substituted."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jinja2 import Template
from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.email.compiler import LINKS_NAME, OPEN_NAME
from automation.email.context import template_context
from automation.email.mime import QuotedPrintable
from automation.email.models import Template as TemplateRow
from automation.email.models import TemplateKind, TemplateVersion
from automation.email.sandbox import HTML_ENV, TEXT_ENV, RenderError, render, static_chunks
from automation.errors import NotFound
from automation.tracking.tokens import MessageTokens, TokenKind

MAX_SUBJECT_CHARS = 300
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class CompiledVersion:
    """A version ready to render: its Jinja compiled once per process."""

    id: int
    template_id: int
    template_deleted: bool
    marketing: bool
    sender_identity_id: int | None
    subject: Template
    html: Template
    text: Template
    links: list[dict[str, Any]]
    html_qp: QuotedPrintable
    text_qp: QuotedPrintable


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class EncodedEmail:
    """What the sender needs: the subject and both parts already quoted-printable."""

    subject: str
    html_qp: bytes
    text_qp: bytes


class VersionCache:
    """Compiled versions by id, least recently used dropped first. Versions never change,
    so an entry never goes stale (only `template_deleted`, refreshed per batch)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[int, CompiledVersion] = OrderedDict()

    def get_many(self, session: Session, ids: set[int]) -> dict[int, CompiledVersion]:
        missing = [i for i in ids if i not in self._items]
        if missing:
            rows = session.execute(
                select(TemplateVersion, TemplateRow.deleted_at)
                .join(TemplateRow, TemplateRow.id == TemplateVersion.template_id)
                .where(TemplateVersion.id.in_(missing))
            ).all()
            for version, deleted_at in rows:
                self._put(compile_version(version, deleted=deleted_at is not None))
        out = {}
        for i in ids:
            if i in self._items:
                self._items.move_to_end(i)
                out[i] = self._items[i]
        return out

    def get(self, session: Session, version_id: int) -> CompiledVersion:
        found = self.get_many(session, {version_id})
        if version_id not in found:
            raise NotFound(f"template version {version_id} not found")
        return found[version_id]

    def _put(self, item: CompiledVersion) -> None:
        self._items[item.id] = item
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def compile_version(version: TemplateVersion, *, deleted: bool = False) -> CompiledVersion:
    html = HTML_ENV.from_string(version.html)
    text = TEXT_ENV.from_string(version.text)
    return CompiledVersion(
        id=version.id,
        template_id=version.template_id,
        template_deleted=deleted,
        marketing=version.kind is TemplateKind.MARKETING,
        sender_identity_id=version.sender_identity_id,
        subject=TEXT_ENV.from_string(version.subject),
        html=html,
        text=text,
        links=list(version.links),
        html_qp=QuotedPrintable(static_chunks(html)),
        text_qp=QuotedPrintable(static_chunks(text)),
    )


@dataclass(frozen=True)
class TrackingUrls:
    open: str
    unsubscribe: str
    preferences: str
    view: str
    links: list[str]


def tracking_urls(tokens: MessageTokens, base_url: str, link_count: int) -> TrackingUrls:
    return TrackingUrls(
        open=tokens.url(base_url, TokenKind.OPEN),
        unsubscribe=tokens.url(base_url, TokenKind.UNSUBSCRIBE),
        preferences=tokens.url(base_url, TokenKind.PREFERENCES),
        view=tokens.url(base_url, TokenKind.VIEW),
        links=[tokens.url(base_url, TokenKind.CLICK, i) for i in range(link_count)],
    )


def preview_urls(version: CompiledVersion, base_url: str) -> TrackingUrls:
    """For previews and test sends: links go straight to their destinations, and the
    message's own pages to a placeholder that is no real token."""
    return TrackingUrls(
        open="",
        unsubscribe=f"{base_url}/u/preview",
        preferences=f"{base_url}/p/preview",
        view=f"{base_url}/v/preview",
        links=[link["url"] for link in version.links],
    )


def _context(
    contact: dict[str, Any],
    urls: TrackingUrls,
    workflow_name: str | None,
    campaign_name: str | None,
) -> dict[str, Any]:
    context = template_context(
        contact,
        unsubscribe_url=urls.unsubscribe,
        preferences_url=urls.preferences,
        view_in_browser_url=urls.view,
        workflow_name=workflow_name,
        campaign_name=campaign_name,
    )
    context[LINKS_NAME] = urls.links
    context[OPEN_NAME] = urls.open
    return context


def _subject(version: CompiledVersion, context: dict[str, Any]) -> str:
    subject = _SPACES.sub(" ", render(version.subject, context).output).strip()
    if not subject:
        raise RenderError("the subject renders empty")
    return subject[:MAX_SUBJECT_CHARS]


def render_email(
    version: CompiledVersion,
    contact: dict[str, Any],
    urls: TrackingUrls,
    *,
    workflow_name: str | None = None,
    campaign_name: str | None = None,
) -> RenderedEmail:
    """Subject, HTML and text for one recipient, as text (previews). Raises RenderError."""
    context = _context(contact, urls, workflow_name, campaign_name)
    subject = _subject(version, context)
    html = render(version.html, context).output
    if not urls.open:  # previews carry no pixel
        html = _drop_pixel(html)
    return RenderedEmail(subject, html, render(version.text, context).output)


def render_for_send(
    version: CompiledVersion,
    contact: dict[str, Any],
    urls: TrackingUrls,
    *,
    workflow_name: str | None = None,
    campaign_name: str | None = None,
) -> EncodedEmail:
    """The same render, each part quoted-printable as it is produced. Raises RenderError."""
    context = _context(contact, urls, workflow_name, campaign_name)
    return EncodedEmail(
        _subject(version, context),
        render(version.html, context, encoder=version.html_qp).encoded,
        render(version.text, context, encoder=version.text_qp).encoded,
    )


def _drop_pixel(html: str) -> str:
    return re.sub(r'<img src="" width="1" height="1"[^>]*/>\n?', "", html, count=1)
