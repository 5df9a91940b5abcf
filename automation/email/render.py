"""Per-recipient rendering of a compiled version: one sandboxed Jinja render of the subject,
HTML and text, with the message's signed tracking URLs substituted.

Tracking URLs do not go through Jinja: the compiled HTML and text carry markers
(``<!--nurture:link:N-->``) in their static text, which each template's `Codec` splits once;
per recipient a marker is one list lookup. The sender's path also quoted-printable-encodes
as it goes, with the static pieces encoded once per process."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from jinja2 import Template
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.config import DEFAULT_LANGUAGE
from automation.email.context import template_context
from automation.email.html_checks import check_html, inert_skeleton
from automation.email.jinja_source import html_source
from automation.email.mime import qp_encode, qp_url
from automation.email.models import Template as TemplateRow
from automation.email.models import TemplateKind, TemplateVersion, VersionOverride
from automation.email.render_budget import Budget, new_budget
from automation.email.sandbox import (
    HTML_ENV,
    TEXT_ENV,
    EscapedText,
    RenderError,
    render,
    static_chunks,
    with_globals,
)
from automation.errors import NotFound
from automation.signing import MessageTokens, TokenKind

MAX_SUBJECT_CHARS = 300
# The compiler's own names in a compiled HTML (no template source may use a name starting
# with "_"), filled per message: the subject as the title where the template has none,
# the preheader and the language. A campaign variant overrides the first two.
SUBJECT_SLOT = "_subject"
PREHEADER_SLOT = "_preheader"
LANGUAGE_SLOT = "_language"
_SPACES = re.compile(r"\s+")


_MARKER = re.compile(r"<!--nurture:(?:link:(\d+)|open)-->")
OPEN = -1  # the open pixel's place in a message's URL list: last
Part = str | int  # static text, or the index of a tracking URL
# A preheader: rendered per message (it holds Jinja), its HTML (it does not), or none.
Preheader = Template | Markup | None


def _split(chunk: str) -> tuple[Part, ...] | None:
    if "<!--nurture:" not in chunk:
        return None
    parts: list[Part] = []
    pos = 0
    for match in _MARKER.finditer(chunk):
        if match.start() > pos:
            parts.append(chunk[pos : match.start()])
        parts.append(int(match.group(1)) if match.group(1) else OPEN)
        pos = match.end()
    if pos < len(chunk):
        parts.append(chunk[pos:])
    return tuple(parts)


class Codec:
    """A compiled template's static chunks: split at tracking markers, and
    quoted-printable encoded once."""

    def __init__(self, static: set[str]) -> None:
        self.marked: dict[str, tuple[Part, ...]] = {}
        self.qp: dict[str, bytes | tuple[bytes | int, ...]] = {}
        for chunk in static:
            parts = _split(chunk)
            if parts is None:
                self.qp[chunk] = qp_encode(chunk)
            else:
                self.marked[chunk] = parts
                self.qp[chunk] = tuple(qp_encode(p) if isinstance(p, str) else p for p in parts)

    def text_sink(self, out: list[str], urls: list[str]) -> Any:
        marked = self.marked

        def consume(batch: list[str]) -> None:
            for chunk in batch:
                parts = marked.get(chunk)
                if parts is None:
                    out.append(chunk)
                else:
                    out.extend([urls[p] if isinstance(p, int) else p for p in parts])

        return consume

    def qp_sink(self, out: list[bytes], urls: list[bytes]) -> Any:
        get, append, extend = self.qp.get, out.append, out.extend

        def consume(batch: list[str]) -> None:
            # The sender's hottest loop: locals, and `type() is` rather than isinstance().
            for chunk in batch:
                encoded = get(chunk)
                if encoded is None:
                    append(qp_encode(chunk))
                elif type(encoded) is bytes:
                    append(encoded)
                else:
                    extend([urls[p] if type(p) is int else p for p in encoded])  # type: ignore[misc]  # type() is narrows nothing for mypy

        return consume


@dataclass(frozen=True)
class CompiledVersion:
    """A version ready to render: its Jinja compiled once per process."""

    id: int
    template_id: int
    template_deleted: bool
    marketing: bool
    sender_identity_id: int | None
    subject: Template
    preheader: Preheader  # None: no preheader
    language: str | None  # None: the workspace's
    html: Template
    text: Template
    links: list[dict[str, Any]]
    html_codec: Codec
    text_codec: Codec
    inert: bool = False  # html_checks.inert_skeleton: escaped-only renders need no check
    mjml: str = ""  # the source, for naming its line in a render error
    html_source: str = ""
    text_source: str = ""


@dataclass(frozen=True)
class CompiledOverride:
    """A campaign variant's subject and preheader, compiled once per process."""

    id: int
    subject: Template | None
    preheader: Preheader
    clears_preheader: bool  # the override is an empty preheader

    def apply(self, version: CompiledVersion) -> CompiledVersion:
        return replace(
            version,
            subject=self.subject or version.subject,
            preheader=None if self.clears_preheader else self.preheader or version.preheader,
        )


def compile_override(row: VersionOverride) -> CompiledOverride:
    return CompiledOverride(
        id=row.id,
        subject=TEXT_ENV.from_string(row.subject) if row.subject is not None else None,
        preheader=_preheader(row.preheader or ""),
        clears_preheader=row.preheader is not None and not row.preheader.strip(),
    )


def _preheader(source: str) -> Preheader:
    """A preheader to render per message, or its HTML once when it holds no Jinja."""
    if not source.strip():
        return None
    template = HTML_ENV.from_string(html_source(source))
    if "{" in source:
        return template
    return EscapedText(" ".join(render(template, {}).output.split()))  # escaped


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
        self._overrides: OrderedDict[int, CompiledOverride] = OrderedDict()

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

    def get_overrides(self, session: Session, ids: set[int]) -> dict[int, CompiledOverride]:
        """Compiled overrides by id (they never change either)."""
        missing = [i for i in ids if i not in self._overrides]
        if missing:
            for row in session.scalars(
                select(VersionOverride).where(VersionOverride.id.in_(missing))
            ):
                self._overrides[row.id] = compile_override(row)
                while len(self._overrides) > self.size:
                    self._overrides.popitem(last=False)
        return {i: self._overrides[i] for i in ids if i in self._overrides}

    def for_message(
        self, session: Session, version_id: int, override_id: int | None
    ) -> CompiledVersion:
        """What one message renders: its version, with its campaign variant's override."""
        version = self.get(session, version_id)
        if override_id is None:
            return version
        found = self.get_overrides(session, {override_id})
        if override_id not in found:
            raise NotFound(f"version override {override_id} not found")
        return found[override_id].apply(version)


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
        preheader=_preheader(version.preheader),
        language=version.language,
        html=html,
        text=text,
        links=list(version.links),
        html_codec=Codec(static_chunks(html)),
        text_codec=Codec(static_chunks(text)),
        inert=inert_skeleton(version.html),
        mjml=version.mjml,
        html_source=version.html,
        text_source=version.text,
    )


_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")


def _source_line(compiled: str, mjml: str, line: int | None) -> int | None:
    """The MJML line that line ``line`` of a compiled part came from: where the source
    has the first Jinja tag of that line (MJML moves markup, never the Jinja in it)."""
    lines = compiled.splitlines()
    if line is None or not 0 < line <= len(lines):
        return None
    for tag in _JINJA_TAG.findall(lines[line - 1]):
        at = mjml.find(tag)
        if at >= 0:
            return mjml.count("\n", 0, at) + 1
    return None


def _render_part(
    version: CompiledVersion,
    html: bool,
    context: dict[str, Any],
    budget: Budget,
    consume: Any,
) -> None:
    """Render the HTML or text part; a RenderError names the line of the MJML source."""
    template, compiled = (
        (version.html, version.html_source) if html else (version.text, version.text_source)
    )
    try:
        render(template, context, budget=budget, consume=consume)
    except RenderError as exc:
        exc.line = _source_line(compiled, version.mjml, exc.line)
        raise


@dataclass(frozen=True)
class TrackingUrls:
    open: str
    unsubscribe: str
    preferences: str
    view: str
    links: list[str]
    confirm: str = ""  # the double opt-in confirmation page (forms)


def tracking_urls(tokens: MessageTokens, base_url: str, link_count: int) -> TrackingUrls:
    return TrackingUrls(
        open=tokens.url(base_url, TokenKind.OPEN),
        unsubscribe=tokens.url(base_url, TokenKind.UNSUBSCRIBE),
        preferences=tokens.url(base_url, TokenKind.PREFERENCES),
        view=tokens.url(base_url, TokenKind.VIEW),
        links=tokens.click_urls(base_url, link_count),
        confirm=tokens.url(base_url, TokenKind.CONFIRM),
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
        confirm=f"{base_url}/f/confirm/preview",
    )


def _context(
    version: CompiledVersion,
    contact: dict[str, Any],
    urls: TrackingUrls,
    workflow_name: str | None,
    campaign_name: str | None,
    default_language: str,
    budget: Budget,
) -> tuple[dict[str, Any], str]:
    """The render context with the compiler's slots filled, and the subject (both spend
    from the message's budget)."""
    context = with_globals(
        template_context(
            contact,
            unsubscribe_url=urls.unsubscribe,
            preferences_url=urls.preferences,
            view_in_browser_url=urls.view,
            confirm_url=urls.confirm,
            workflow_name=workflow_name,
            campaign_name=campaign_name,
        )
    )
    subject = _subject(version, context, budget)
    context[SUBJECT_SLOT] = subject
    preheader = version.preheader
    if isinstance(preheader, Template):
        # HTML already: the autoescaping environment rendered it from an escaped source.
        # Escaped text unless one of its outputs was markup (|safe): then it stays plain
        # Markup, and putting it into the HTML marks this recipient's HTML for the check.
        output = " ".join(render(preheader, context, budget=budget).output.split())
        unescaped = budget.unescaped  # (each render starts its own count)
        preheader = Markup(output) if unescaped else EscapedText(output)  # noqa: S704
    context[PREHEADER_SLOT] = preheader or ""
    context[LANGUAGE_SLOT] = version.language or default_language
    return context, subject


def _subject(version: CompiledVersion, context: dict[str, Any], budget: Budget) -> str:
    try:
        rendered = render(version.subject, context, budget=budget).output
    except RenderError as exc:
        exc.message, exc.line = f"the subject: {exc.message}", None
        raise
    subject = _SPACES.sub(" ", rendered).strip()
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
    default_language: str = DEFAULT_LANGUAGE,
) -> RenderedEmail:
    """Subject, HTML and text for one recipient, as text (previews, the view-in-browser
    page). Raises RenderError, and UnsafeHtml when the HTML fails check_html."""
    budget = new_budget()  # one for the message's parts
    context, subject = _context(
        version, contact, urls, workflow_name, campaign_name, default_language, budget
    )
    all_urls = [*urls.links, urls.open]
    html: list[str] = []
    _render_part(version, True, context, budget, version.html_codec.text_sink(html, all_urls))
    checked = not version.inert or budget.unescaped  # (the text part renders unescaped)
    text: list[str] = []
    _render_part(version, False, context, budget, version.text_codec.text_sink(text, all_urls))
    page = "".join(html)
    if checked:
        check_html(page)
    if not urls.open:  # previews carry no pixel
        page = _drop_pixel(page)
    return RenderedEmail(subject, page, "".join(text))


def render_for_send(
    version: CompiledVersion,
    contact: dict[str, Any],
    urls: TrackingUrls,
    *,
    workflow_name: str | None = None,
    campaign_name: str | None = None,
    default_language: str = DEFAULT_LANGUAGE,
) -> EncodedEmail:
    """The same render, each part quoted-printable as it is produced, and the HTML checked
    as it is sent (with its tracking markers, our own URLs, still in place). Raises
    RenderError, and UnsafeHtml when the HTML fails check_html."""
    budget = new_budget()
    context, subject = _context(
        version, contact, urls, workflow_name, campaign_name, default_language, budget
    )
    encoded_urls = [qp_url(u) for u in urls.links]
    encoded_urls.append(qp_url(urls.open))
    html: list[bytes] = []
    raw: list[str] = []
    encode = version.html_codec.qp_sink(html, encoded_urls)

    def consume(batch: list[str]) -> None:
        raw.extend(batch)
        encode(batch)

    _render_part(version, True, context, budget, consume)
    if not version.inert or budget.unescaped:
        check_html("".join(raw))
    text: list[bytes] = []
    _render_part(version, False, context, budget, version.text_codec.qp_sink(text, encoded_urls))
    return EncodedEmail(subject, b"".join(html), b"".join(text))


def _drop_pixel(html: str) -> str:
    return re.sub(r'<img src="" width="1" height="1"[^>]*/>\n?', "", html, count=1)
