"""Compile a template version once: check it, turn MJML into HTML with its Jinja kept, number
its links for click tracking, place the open pixel and derive the plain-text part.

MJML never sees Jinja: every ``{{ … }}``, ``{% … %}`` and ``{# … #}`` is first replaced by
an opaque alphanumeric placeholder, which survives MJML and the text extraction untouched
and is put back afterwards. A Jinja tag that stands between MJML elements (a loop around
sections, say) is wrapped in ``<mj-raw>`` so MJML keeps it in place.

Every problem carries the line and column of the MJML source it was found in.
"""

from __future__ import annotations

import bisect
import html as html_lib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from mjml import mjml_to_html
from mjml.core.registry import components, register_core_components

from automation.email.context import CONTACT_FIELDS, CONTEXT_NAMES
from automation.email.sandbox import (
    CHECK_HTML_ENV,
    CHECK_TEXT_ENV,
    HTML_ENV,
    TEXT_ENV,
    RenderError,
    render,
)
from automation.errors import FieldError

MAX_HTML_BYTES = 100 * 1024  # Gmail clips messages above ~102 KB
MAX_SOURCE = 500_000
MAX_SUBJECT = 500
MAX_PREHEADER = 500
TRACKED_SCHEMES = ("http://", "https://")
SPECIAL_URLS = {"unsubscribe_url", "preferences_url", "view_in_browser_url", "confirm_url"}
# Where a recipient's tracking URLs go. HTML comments, so autoescaped contact data can
# never contain one; substituted per recipient outside Jinja (see render.py).
LINK_MARKER = "<!--nurture:link:{}-->"
OPEN_MARKER = "<!--nurture:open-->"
RESERVED = "<!--nurture:"


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def field_error(self) -> FieldError:
        where = ""
        if self.line is not None:
            where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
            where += ": "
        return FieldError(self.path, where + self.message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "message": self.message,
            "line": self.line,
            "column": self.column,
        }


@dataclass(frozen=True)
class Draft:
    subject: str
    preheader: str
    mjml: str
    marketing: bool


@dataclass(frozen=True)
class CompiledTemplate:
    html: str
    text: str
    links: list[dict[str, Any]]
    html_bytes: int


@dataclass
class CompileResult:
    compiled: CompiledTemplate | None = None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


# --- positions -------------------------------------------------------------------------


class _Lines:
    """Offsets ↔ (line, column), both 1-based."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        index = bisect.bisect_right(self.starts, offset) - 1
        return index + 1, offset - self.starts[index] + 1

    def offset(self, line: int, column0: int) -> int:
        return self.starts[min(line, len(self.starts)) - 1] + column0


# --- Jinja placeholders ----------------------------------------------------------------

_OPENERS = re.compile(r"\{\{|\{%|\{#")
_RAW = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_ENDRAW = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")


def jinja_spans(source: str) -> list[tuple[int, int]]:
    """(start, end) of every Jinja tag, honouring quoted strings and raw blocks. Run only
    on source Jinja has parsed, so every tag is closed."""
    spans = []
    pos = 0
    while (match := _OPENERS.search(source, pos)) is not None:
        start, opener = match.start(), match.group()
        if opener == "{#":
            close = source.find("#}", start + 2)
            end = len(source) if close < 0 else close + 2
        else:
            closer = "}}" if opener == "{{" else "%}"
            i = start + 2
            while i < len(source) and not source.startswith(closer, i):
                if source[i] in "'\"":
                    quote, i = source[i], i + 1
                    while i < len(source) and source[i] != quote:
                        i += 2 if source[i] == "\\" else 1
                i += 1
            end = min(len(source), i + 2)
            if opener == "{%" and _RAW.fullmatch(source, start, end):
                raw_end = _ENDRAW.search(source, end)
                end = len(source) if raw_end is None else raw_end.end()
        spans.append((start, end))
        pos = end
    return spans


class Placeholders:
    """Source text with its Jinja tags swapped for placeholders, and the way back."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or "jjq" + secrets.token_hex(4)
        self.pattern = re.compile(re.escape(self.prefix) + r"\d{5}x")
        self.jinja: dict[str, str] = {}
        self.origin: dict[str, int] = {}  # placeholder → offset in the original source

    def new(self, jinja: str, origin: int = -1) -> str:
        name = f"{self.prefix}{len(self.jinja):05d}x"
        self.jinja[name] = jinja
        self.origin[name] = origin
        return name

    def hide(self, source: str) -> tuple[str, list[tuple[int, int]]]:
        """The source with placeholders, and a map of (new offset, original offset)."""
        out: list[str] = []
        mapping: list[tuple[int, int]] = [(0, 0)]
        pos = length = 0
        for start, end in jinja_spans(source):
            out.append(source[pos:start])
            length += start - pos
            name = self.new(source[start:end], start)
            out.append(name)
            length += len(name)
            mapping.append((length, end))
            pos = end
        out.append(source[pos:])
        return "".join(out), mapping

    def restore(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.jinja.get(m.group(), m.group()), text)

    def found(self, text: str) -> list[str]:
        return self.pattern.findall(text)


def _map_offset(mapping: list[tuple[int, int]], offset: int) -> int:
    index = bisect.bisect_right([m[0] for m in mapping], offset) - 1
    new, old = mapping[index]
    return old + (offset - new)


# --- Jinja checks ----------------------------------------------------------------------


def _column_of(source: str, line: int, needle: str) -> int | None:
    lines = source.splitlines()
    if 0 < line <= len(lines):
        col = lines[line - 1].find(needle)
        return col + 1 if col >= 0 else None
    return None


_BLOCK = re.compile(r"\{%[-+]?\s*(end)?(\w+)")
_BLOCK_TAGS = {"if", "for", "macro", "call", "filter", "block", "with", "autoescape", "raw"}


def _syntax_position(source: str, exc: TemplateSyntaxError) -> tuple[int, int | None]:
    """Where to point for a syntax error: the unclosed block for an unexpected end, else
    the Jinja tag the error is in (Jinja itself knows only the line)."""
    lines = _Lines(source)
    line = exc.lineno or 1
    spans = _loose_spans(source)
    if "end of template" in (exc.message or ""):
        stack: list[int] = []
        for start, _end in spans:
            match = _BLOCK.match(source, start)
            if match is None or match.group(2) not in _BLOCK_TAGS:
                continue
            if match.group(1):
                if stack:
                    stack.pop()
            elif match.group(2) != "set" or "=" not in source[start:_end]:
                stack.append(start)
        if stack:
            return lines.position(stack[-1])
    before = [s for s, _e in spans if lines.position(s)[0] <= line]
    if before:
        return lines.position(before[-1])
    return line, None


def _loose_spans(source: str) -> list[tuple[int, int]]:
    """Jinja tags of source that may not parse: each opener up to its closer, if any."""
    spans = []
    for match in _OPENERS.finditer(source):
        closer = {"{{": "}}", "{%": "%}", "{#": "#}"}[match.group()]
        end = source.find(closer, match.end())
        spans.append((match.start(), len(source) if end < 0 else end + 2))
    return spans


def check_jinja(
    source: str, path: str, *, known_fields: set[str], html: bool
) -> tuple[nodes.Template | None, list[Problem]]:
    """Syntax, sandbox rules and names, found without running anything."""
    env = HTML_ENV if html else TEXT_ENV
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        line, column = _syntax_position(source, exc)
        return None, [Problem(path, f"Jinja syntax: {exc.message}", line, column)]
    problems: list[Problem] = []

    def add(node: nodes.Node, message: str, needle: str | None = None) -> None:
        line = getattr(node, "lineno", None)
        column = _column_of(source, line, needle) if line and needle else None
        problems.append(Problem(path, message, line, column))

    for stmt in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        add(stmt, "templates cannot include, extend or import other templates", "{%")
    for attr in ast.find_all(nodes.Getattr):
        if attr.attr.startswith("_"):
            add(attr, f"not allowed: attribute {attr.attr!r} (sandbox)", attr.attr)
    for item in ast.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and str(item.arg.value).startswith("_"):
            add(item, f"not allowed: item {item.arg.value!r} (sandbox)", str(item.arg.value))
    for filter_ in ast.find_all(nodes.Filter):
        if filter_.name == "attr":
            add(filter_, "not allowed: the attr filter (sandbox); use contact.field", "attr")
        elif filter_.name not in env.filters:
            add(filter_, f"unknown filter {filter_.name!r}", filter_.name)
    for test in ast.find_all(nodes.Test):
        if test.name not in env.tests:
            add(test, f"unknown test {test.name!r}", test.name)
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    reported: set[str] = set()
    for name in ast.find_all(nodes.Name):
        if name.ctx != "load" or name.name in assigned or name.name in reported:
            continue
        if name.name.startswith("_"):
            add(name, f"not allowed: name {name.name!r} (sandbox)", name.name)
        elif name.name not in CONTEXT_NAMES and name.name not in env.globals:
            add(
                name,
                f"unknown variable {name.name!r}; available: {', '.join(sorted(CONTEXT_NAMES))}",
                name.name,
            )
        reported.add(name.name)
    for node in ast.find_all(nodes.Getattr):
        target = node.node
        if (
            isinstance(target, nodes.Name)
            and target.name == "contact"
            and "contact" not in assigned
        ):
            if node.attr not in CONTACT_FIELDS and not node.attr.startswith("_"):
                add(
                    node,
                    f"unknown contact field {node.attr!r}; "
                    f"fields: {', '.join(sorted(CONTACT_FIELDS))}",
                    node.attr,
                )
        elif (
            isinstance(target, nodes.Getattr)
            and target.attr == "attributes"
            and isinstance(target.node, nodes.Name)
            and target.node.name == "contact"
            and node.attr not in known_fields
            and not node.attr.startswith("_")
            and node.attr not in {"items", "keys", "values", "get"}
        ):
            add(
                node,
                f"unknown attribute {node.attr!r}: declare it as a custom field first",
                node.attr,
            )
    return ast, problems


# --- MJML checks ------------------------------------------------------------------------

_CONTENT = {
    "mj-text",
    "mj-button",
    "mj-image",
    "mj-divider",
    "mj-spacer",
    "mj-table",
    "mj-social",
    "mj-navbar",
    "mj-accordion",
    "mj-carousel",
    "mj-raw",
}
CHILDREN: dict[str, set[str] | None] = {
    "mjml": {"mj-head", "mj-body"},
    "mj-head": {
        "mj-attributes",
        "mj-breakpoint",
        "mj-font",
        "mj-html-attributes",
        "mj-preview",
        "mj-style",
        "mj-title",
        "mj-raw",
    },
    "mj-attributes": None,  # defaults for any element
    "mj-html-attributes": {"mj-selector"},
    "mj-selector": {"mj-html-attribute"},
    "mj-body": {"mj-section", "mj-wrapper", "mj-hero", "mj-raw"},
    "mj-wrapper": {"mj-section", "mj-hero", "mj-raw"},
    "mj-section": {"mj-column", "mj-group", "mj-raw"},
    "mj-group": {"mj-column", "mj-raw"},
    "mj-column": _CONTENT,
    "mj-hero": _CONTENT,
    "mj-social": {"mj-social-element", "mj-raw"},
    "mj-navbar": {"mj-navbar-link"},
    "mj-accordion": {"mj-accordion-element"},
    "mj-accordion-element": {"mj-accordion-title", "mj-accordion-text"},
    "mj-carousel": {"mj-carousel-image"},
}
# Elements whose content is HTML or text, passed through by MJML.
ENDING = {
    "mj-text",
    "mj-button",
    "mj-table",
    "mj-raw",
    "mj-navbar-link",
    "mj-accordion-title",
    "mj-accordion-text",
    "mj-social-element",
    "mj-style",
    "mj-title",
    "mj-preview",
    "mj-html-attribute",
}
# Where a Jinja tag between elements is kept by wrapping it in <mj-raw>.
STRUCTURAL = {"mj-body", "mj-wrapper", "mj-section", "mj-group", "mj-column", "mj-hero"}
URL_ATTRIBUTES = {"href", "src", "background", "action", "formaction", "poster", "xlink:href"}
BAD_SCHEMES = ("javascript:", "data:", "vbscript:")
_ALWAYS_ALLOWED = {"mj-class", "css-class"}


def _allowed_attributes(tag: str) -> set[str] | None:
    register_core_components()
    component = components.get(tag)
    if component is None:
        return None
    return set(component.allowed_attrs()) | _ALWAYS_ALLOWED


def _scheme(value: str) -> str:
    cleaned = re.sub(r"[\x00-\x20]", "", html_lib.unescape(value)).lower()
    return cleaned


@dataclass
class _Open:
    tag: str
    offset: int
    unknown: bool = False  # already reported: its content and closing are not checked


class MjmlChecker(HTMLParser):
    """Walks placeholder-substituted MJML, noting problems with their source positions."""

    def __init__(
        self, text: str, placeholders: Placeholders, mapping: list[tuple[int, int]], source: str
    ) -> None:
        super().__init__(convert_charrefs=True)
        self.text = text
        self.ph = placeholders
        self.mapping = mapping
        self.tlines = _Lines(text)
        self.slines = _Lines(source)
        self.stack: list[_Open] = []
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.structural: set[str] = set()
        self.body_offset: int | None = None
        self.has_preview = False
        self.root_seen = self.root_closed = False

    # positions
    def _here(self) -> int:
        line, col0 = self.getpos()
        return self.tlines.offset(line, col0)

    def _where(self, text_offset: int) -> tuple[int, int]:
        return self.slines.position(_map_offset(self.mapping, text_offset))

    def _problem(self, message: str, offset: int | None = None, warning: bool = False) -> None:
        line, col = self._where(self._here() if offset is None else offset)
        (self.warnings if warning else self.errors).append(Problem("mjml", message, line, col))

    def _placeholder_problem(self, name: str, message: str) -> None:
        line, col = self.slines.position(self.ph.origin[name])
        self.errors.append(Problem("mjml", message, line, col))

    @property
    def _ending(self) -> _Open | None:
        return next((o for o in reversed(self.stack) if o.tag in ENDING), None)

    # parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        offset = self._here()
        if self.ph.found(tag):
            self._problem("Jinja cannot produce a tag name", offset)
            return
        self._check_attributes(tag, attrs, offset)
        if tag == "script":
            self._problem("<script> is not allowed in email", offset)
            return
        is_mjml = tag == "mjml" or tag.startswith("mj-")
        if not is_mjml:
            if self._ending is None and not any(o.unknown for o in self.stack):
                self._problem(
                    f"<{tag}> must be inside <mj-text>, <mj-raw> or another content element", offset
                )
            return
        if tag == "mj-include":
            self._problem("mj-include is not allowed: a template cannot read files", offset)
            return
        ending = self._ending
        if ending is not None:
            self._problem(f"<{tag}> cannot be inside <{ending.tag}>", offset)
            return
        if tag == "mjml":
            if self.root_seen:
                self._problem("only one <mjml> root element is allowed", offset)
            self.root_seen = True
        elif not self.stack:
            self._problem(f"<{tag}> must be inside <mjml>", offset)
        else:
            parent = self.stack[-1]
            allowed = CHILDREN.get(parent.tag, set())
            if tag not in components and tag not in {
                "mj-all",
                "mj-class",
                "mj-selector",
                "mj-html-attribute",
            }:
                self._problem(f"unknown MJML element <{tag}>", offset)
                if not closed:
                    self.stack.append(_Open(tag, offset, unknown=True))
                return
            if parent.unknown:
                pass
            elif allowed is not None and tag not in allowed:
                self._problem(f"<{tag}> cannot be inside <{parent.tag}>", offset)
        if tag == "mj-body":
            self.body_offset = offset
        if tag == "mj-preview":
            self.has_preview = True
        if not closed:
            self.stack.append(_Open(tag, offset))

    def _check_attributes(self, tag: str, attrs: list[tuple[str, str | None]], offset: int) -> None:
        in_defaults = bool(self.stack) and self.stack[-1].tag in {"mj-attributes"}
        allowed = None if in_defaults else _allowed_attributes(tag)
        for name, value in attrs:
            if self.ph.found(name):
                self._problem(
                    "Jinja tags cannot stand in a tag's attribute list; use them in a value", offset
                )
                continue
            if name.startswith("on"):
                self._problem(f"event handler attribute {name!r} is not allowed", offset)
            if value and name in URL_ATTRIBUTES:
                cleaned = _scheme(value)
                if cleaned.startswith(BAD_SCHEMES):
                    self._problem(
                        f"{cleaned.split(':')[0]}: links are not allowed ({name})", offset
                    )
            if allowed is not None and name not in allowed and tag.startswith("mj-"):
                self._problem(
                    f"<{tag}> has no attribute {name!r}; MJML ignores it", offset, warning=True
                )

    def handle_endtag(self, tag: str) -> None:
        offset = self._here()
        is_mjml = tag == "mjml" or tag.startswith("mj-")
        if not is_mjml:
            return  # HTML inside content elements: browsers are lenient, so is MJML
        if self.stack and self.stack[-1].unknown and self.stack[-1].tag != tag:
            self.stack.pop()  # the misspelt element's closing tag, spelt right
            return
        if not any(o.tag == tag for o in self.stack):
            self._problem(f"</{tag}> closes nothing", offset)
            return
        while self.stack:
            top = self.stack.pop()
            if top.tag == tag:
                break
            if not top.unknown:
                self._problem(f"<{top.tag}> is not closed before </{tag}>", top.offset)
        if tag == "mjml":
            self.root_closed = True

    def handle_data(self, data: str) -> None:
        offset = self._here()
        names = self.ph.found(data)
        rest = self.ph.pattern.sub("", data)
        ending = self._ending
        if ending is not None:
            return
        parent = self.stack[-1].tag if self.stack else None
        if parent is not None and parent not in CHILDREN and parent not in STRUCTURAL:
            return  # inside an element already reported or one without children
        for name in names:
            if parent in STRUCTURAL:
                self.structural.add(name)
            else:
                where = f"directly inside <{parent}>" if parent else "outside <mjml>"
                self._placeholder_problem(
                    name,
                    f"a Jinja tag {where} has nowhere to go; put it in mj-body, around "
                    "sections or columns, or inside <mj-text>",
                )
        if rest.strip():
            where = f"directly inside <{parent}>" if parent else "outside <mjml>"
            leading = len(data) - len(data.lstrip())
            self._problem(f"text {where} is dropped by MJML; put it in <mj-text>", offset + leading)

    def finish(self) -> None:
        self.close()
        for still_open in self.stack:
            if not still_open.unknown:
                self._problem(f"<{still_open.tag}> is never closed", still_open.offset)
        if not self.root_seen:
            self.errors.append(Problem("mjml", "the template must start with <mjml>", 1, 1))
        elif self.body_offset is None:
            self.errors.append(Problem("mjml", "<mjml> needs an <mj-body>", 1, 1))


# --- links -----------------------------------------------------------------------------

_HREF = re.compile(r"""(\shref\s*=\s*)("[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)


@dataclass
class _Anchor:
    start: int
    end: int
    href: str
    text: list[str] = field(default_factory=list)


class _LinkFinder(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.lines = _Lines(text)
        self.anchors: list[_Anchor] = []
        self._open: _Anchor | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"a", "area"}:
            raw = self.get_starttag_text() or ""
            line, col0 = self.getpos()
            start = self.lines.offset(line, col0)
            href = dict(attrs).get("href")
            if href is not None:
                anchor = _Anchor(start, start + len(raw), href)
                self.anchors.append(anchor)
                self._open = anchor if tag == "a" else None
        elif tag == "img" and self._open is not None:
            alt = dict(attrs).get("alt")
            if alt:
                self._open.text.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.text.append(data)


_SPECIAL = re.compile(r"\{\{-?\s*(\w+)\s*-?\}\}")


def _href_to(placeholder: str) -> Callable[[re.Match[str]], str]:
    return lambda match: f'{match.group(1)}"{placeholder}"'


def _classify_links(
    html: str, ph: Placeholders
) -> tuple[str, list[dict[str, Any]], bool, list[str]]:
    """HTML with tracked hrefs swapped for link placeholders; the links; whether an
    unsubscribe link exists; the dynamic (untracked) hrefs."""
    finder = _LinkFinder(html)
    finder.feed(html)
    finder.close()
    links: list[dict[str, Any]] = []
    has_unsubscribe = False
    dynamic: list[str] = []
    out: list[str] = []
    pos = 0
    for anchor in finder.anchors:
        href = anchor.href.strip()
        names = ph.found(href)
        if names:
            sources = " ".join(ph.jinja[n] for n in names)
            if re.search(r"\bunsubscribe_url\b", sources):
                has_unsubscribe = True
            special = _SPECIAL.fullmatch(ph.jinja[names[0]]) if href == names[0] else None
            if special is None or special.group(1) not in SPECIAL_URLS:
                dynamic.append(ph.restore(href))
            continue
        if not href.lower().startswith(TRACKED_SCHEMES):
            continue
        index = len(links)
        text = re.sub(r"\s+", " ", ph.restore(" ".join(anchor.text))).strip()[:200]
        links.append({"index": index, "url": href, "text": text})
        placeholder = ph.new(LINK_MARKER.format(index))
        tag = html[anchor.start : anchor.end]
        tag = _HREF.sub(_href_to(placeholder), tag, count=1)
        out.append(html[pos : anchor.start])
        out.append(tag)
        pos = anchor.end
    out.append(html[pos:])
    return "".join(out), links, has_unsubscribe, dynamic


# --- the pipeline ----------------------------------------------------------------------

_TEXT_CONFIG = ParserConfig(display_links=True)
_PIXEL = (
    f'<img src="{OPEN_MARKER}" width="1" height="1" alt="" border="0" '
    'style="display:block;height:1px;width:1px;border:0;margin:0;padding:0" />'
)


_HONEYPOT = (
    '<a href="{}" tabindex="-1" aria-hidden="true" style="display:none;font-size:0;'
    'line-height:0;max-height:0;overflow:hidden;mso-hide:all"></a>'
)


_TABLE_CONTEXTS = {
    "table": ("<tr><td>", "</td></tr>"),
    "tbody": ("<tr><td>", "</td></tr>"),
    "thead": ("<tr><td>", "</td></tr>"),
    "tfoot": ("<tr><td>", "</td></tr>"),
    "tr": ("<td>", "</td>"),
}
_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


class _TableText(HTMLParser):
    """Finds placeholders that sit in a table but outside a cell, where an HTML parser
    would move them out of the table (and the text part would lose their place)."""

    def __init__(self, text: str, ph: Placeholders) -> None:
        super().__init__(convert_charrefs=False)
        self.lines = _Lines(text)
        self.ph = ph
        self.stack: list[str] = []
        self.moves: list[tuple[int, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if not self.stack or self.stack[-1] not in _TABLE_CONTEXTS:
            return
        line, col0 = self.getpos()
        start = self.lines.offset(line, col0)
        for match in self.ph.pattern.finditer(data):
            self.moves.append((start + match.start(), match.group(), self.stack[-1]))


_LINK_TEXT = re.compile(r"\[\s+([^\[\]]*?)\s*\]\(")
_EMPTY_LINK = re.compile(r"\[\s*\]\([^)\s]*\)")
_IMG = re.compile(r"""<img\b(?:[^>]*?\salt=(["'])(.*?)\1)?[^>]*>""", re.IGNORECASE | re.DOTALL)


def _text_part(html: str, ph: Placeholders) -> str:
    finder = _TableText(html, ph)
    finder.feed(html)
    finder.close()
    for offset, name, context in sorted(finder.moves, reverse=True):
        before, after = _TABLE_CONTEXTS[context]
        html = html[:offset] + before + name + after + html[offset + len(name) :]
    # An image stands for its alt text (a linked image becomes a link with that text).
    html = _IMG.sub(lambda m: f" {m.group(2) or ''} ", html)
    text = get_text(html, _TEXT_CONFIG)
    text = "\n".join(line.strip() for line in text.splitlines())
    text = _EMPTY_LINK.sub("", _LINK_TEXT.sub(lambda m: f"[{m.group(1)}](", text))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def compile_template(
    draft: Draft, *, known_fields: Iterable[str], sample: dict[str, Any]
) -> CompileResult:
    """Check and compile a draft; the sample context is used for a trial render."""
    result = CompileResult()
    fields = set(known_fields)
    for path, value, limit in (
        ("subject", draft.subject, MAX_SUBJECT),
        ("preheader", draft.preheader, MAX_PREHEADER),
        ("mjml", draft.mjml, MAX_SOURCE),
    ):
        if len(value) > limit:
            result.errors.append(Problem(path, f"longer than {limit:,} characters"))
    if not draft.subject.strip():
        result.errors.append(Problem("subject", "a subject is required"))
    for path, value in (
        ("subject", draft.subject),
        ("preheader", draft.preheader),
        ("mjml", draft.mjml),
    ):
        if RESERVED in value:
            result.errors.append(Problem(path, f"{RESERVED!r} is reserved for tracking links"))
    if "\n" in draft.subject or "\r" in draft.subject:
        result.errors.append(Problem("subject", "the subject must be one line"))
    if result.errors:
        return result
    for path, source, html in (
        ("subject", draft.subject, False),
        ("preheader", draft.preheader, True),
        ("mjml", draft.mjml, True),
    ):
        _ast, problems = check_jinja(source, path, known_fields=fields, html=html)
        result.errors.extend(problems)
    if result.errors:
        return result

    ph = Placeholders()
    text, mapping = ph.hide(draft.mjml)
    checker = MjmlChecker(text, ph, mapping, draft.mjml)
    checker.feed(text)
    checker.finish()
    result.errors.extend(checker.errors)
    result.warnings.extend(checker.warnings)
    if draft.preheader.strip() and checker.has_preview:
        result.errors.append(
            Problem("preheader", "the MJML has its own <mj-preview>; leave the preheader empty")
        )
    if result.errors:
        return result

    for name in checker.structural:
        text = text.replace(name, f"<mj-raw>{name}</mj-raw>")
    if draft.preheader.strip():
        pre_text, _ = ph.hide(draft.preheader)
        preview = f"<mj-preview>{html_lib.escape(pre_text, quote=False)}</mj-preview>"
        text = re.sub(
            r"<mjml\b[^>]*>",
            lambda m: m.group() + f"<mj-head>{preview}</mj-head>",
            text,
            count=1,
        )
    try:
        compiled_html = mjml_to_html(text, keep_comments=True).html
    except Exception as exc:  # mjml-python raises plain errors on input its checks let through
        line, col = checker.slines.position(_map_offset(mapping, checker.body_offset or 0))
        result.errors.append(Problem("mjml", f"MJML could not compile this: {exc}", line, col))
        return result

    tracked_html, links, has_unsubscribe, dynamic = _classify_links(compiled_html, ph)
    body_line, body_col = checker.slines.position(_map_offset(mapping, checker.body_offset or 0))
    if draft.marketing and not has_unsubscribe:
        result.errors.append(
            Problem(
                "mjml",
                'a marketing email needs an unsubscribe link: <a href="{{ unsubscribe_url }}">',
                body_line,
                body_col,
            )
        )
    for href in dynamic[:10]:
        result.warnings.append(
            Problem("mjml", f"link {href[:120]!r} depends on the contact and is not click-tracked")
        )
    text_part = ph.restore(_text_part(tracked_html, ph))
    # The honeypot: a tracked link no person can see or reach (hidden, empty, out of the
    # tab order, absent from the text part). Only a machine following every href in the
    # HTML clicks it, so ingestion classifies that message's hits as `scanner`.
    links.append({"index": len(links), "url": "", "text": "", "honeypot": True})
    trap = _HONEYPOT.format(LINK_MARKER.format(len(links) - 1))
    final_html = ph.restore(
        tracked_html.replace("</body>", trap + _PIXEL + "\n</body>", 1)
        if "</body>" in tracked_html
        else tracked_html + trap + _PIXEL
    )
    size = len(final_html.encode())
    if size > MAX_HTML_BYTES:
        result.errors.append(
            Problem(
                "mjml",
                f"the HTML is {size / 1024:.0f} KB; keep it under {MAX_HTML_BYTES // 1024} KB "
                "(Gmail clips larger messages)",
            )
        )
    for path, source, env in (
        ("mjml", final_html, HTML_ENV),
        ("mjml", text_part, TEXT_ENV),
    ):
        try:
            env.from_string(source)
        except TemplateSyntaxError as exc:
            result.errors.append(
                Problem(
                    path,
                    "after compiling, the Jinja tags no longer fit together (are some inside "
                    f"HTML comments or hidden elements?): {exc.message}",
                )
            )
    if result.errors:
        return result

    _trial_render(draft, sample, result)
    if result.errors:
        return result
    result.compiled = CompiledTemplate(final_html, text_part, links, size)
    _check_rendered_size(result.compiled, sample, result)
    if result.errors:
        result.compiled = None
    return result


def _trial_render(draft: Draft, sample: dict[str, Any], result: CompileResult) -> None:
    """Render the sources themselves against the sample, so that runtime problems and
    empty placeholders are reported with source lines."""
    for path, source, env in (
        ("subject", draft.subject, CHECK_TEXT_ENV),
        ("preheader", draft.preheader, CHECK_HTML_ENV),
        ("mjml", draft.mjml, CHECK_HTML_ENV),
    ):
        try:
            rendered = render(env.from_string(source), sample)
        except RenderError as exc:
            column = None
            result.errors.append(Problem(path, exc.message, exc.line, column))
            continue
        for name, line in rendered.undefined:
            result.warnings.append(
                Problem(path, f"{name!r} is empty for the sample contact; add | default(…)", line)
            )


def _check_rendered_size(
    compiled: CompiledTemplate, sample: dict[str, Any], result: CompileResult
) -> None:
    try:
        rendered = render(HTML_ENV.from_string(compiled.html), sample)
    except RenderError as exc:
        result.errors.append(Problem("mjml", exc.message))
        return
    # Each marker becomes a tracking URL of about 80 characters.
    size = len(rendered.output.encode()) + 60 * (len(compiled.links) + 1)
    if size > MAX_HTML_BYTES:
        result.errors.append(
            Problem(
                "mjml",
                f"for the sample contact the HTML is {size / 1024:.0f} KB; keep it under "
                f"{MAX_HTML_BYTES // 1024} KB (Gmail clips larger messages)",
            )
        )
