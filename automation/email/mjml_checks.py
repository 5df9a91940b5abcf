"""The MJML checks: known tags and attributes, where content may stand, URL schemes, and
the structure MJML would otherwise drop or repair without a word; each problem with its
line and column."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from automation.email.jinja_source import Placeholders, map_offset
from automation.email.problems import Problem, SourceLines
from automation.email.renderer import RENDERER, Font, ignored_by_renderer, supported_attributes

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
# Which element may stand in which: MJML 4's own table (mjml-validator's dependencies).
CHILDREN: dict[str, set[str] | None] = {
    "mjml": {"mj-head", "mj-body", "mj-raw"},
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
    "mj-class": None,  # defaults for the children of elements of that class
    "mj-html-attributes": {"mj-selector"},
    "mj-selector": {"mj-html-attribute"},
    "mj-body": {"mj-section", "mj-wrapper", "mj-hero", "mj-raw"},
    "mj-wrapper": {"mj-section", "mj-hero", "mj-raw"},
    "mj-section": {"mj-column", "mj-group", "mj-raw"},
    "mj-group": {"mj-column", "mj-raw"},
    "mj-column": _CONTENT,
    "mj-hero": _CONTENT,
    "mj-social": {"mj-social-element", "mj-raw"},
    "mj-navbar": {"mj-navbar-link", "mj-raw"},
    "mj-accordion": {"mj-accordion-element", "mj-raw"},
    "mj-accordion-element": {"mj-accordion-title", "mj-accordion-text", "mj-raw"},
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
FONT_URL = re.compile(r"https?://[^\s\"'()<>\\]+\Z")


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
        self.tlines = SourceLines(text)
        self.slines = SourceLines(source)
        self.stack: list[_Open] = []
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.structural: set[str] = set()
        self.body_offset: int | None = None
        # Where the template's own <mj-head> content starts (a preheader goes in there).
        self.head_content_at: int | None = None
        self.has_preview = False
        self.has_title = False
        self.root_seen = self.root_closed = False
        self.fonts: list[Font] = []
        # Placeholders standing in the body's text (not in an attribute, not in the head).
        self.in_body_text: set[str] = set()

    # positions
    def _here(self) -> int:
        line, col0 = self.getpos()
        return self.tlines.offset(line, col0)

    def _where(self, text_offset: int) -> tuple[int, int]:
        return self.slines.position(map_offset(self.mapping, text_offset))

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
            if supported_attributes(tag) is None and tag not in {
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
            elif parent.tag == "mj-class":
                self._problem(
                    f"<{tag}> inside <mj-class>: MJML gives the {tag} elements inside an "
                    f"element of that class these defaults, but {RENDERER} ignores them; "
                    f"set them on the {tag} elements or with their own mj-class",
                    offset,
                    warning=True,
                )
        if tag == "mj-body":
            self.body_offset = offset
        if tag == "mj-font":
            self._declare_font(dict(attrs), offset)
        if tag == "mj-raw" and self.stack and self.stack[-1].tag == "mjml":
            self._problem(
                "<mj-raw> directly under <mjml> is left out of the email: MJML keeps it only "
                f'with position="file-start", which {RENDERER} ignores; put it in <mj-body> '
                "or <mj-head>",
                offset,
                warning=True,
            )
        if tag == "mj-preview":
            self.has_preview = True
        if tag == "mj-title":
            self.has_title = True
        if tag == "mj-head" and not closed and self.head_content_at is None:
            self.head_content_at = offset + len(self.get_starttag_text() or "")
        if not closed:
            self.stack.append(_Open(tag, offset))

    def _declare_font(self, attrs: dict[str, str | None], offset: int) -> None:
        name, href = (attrs.get("name") or "").strip(), (attrs.get("href") or "").strip()
        if not name:
            self._problem("<mj-font> needs a name (the font-family it provides)", offset)
        elif not FONT_URL.match(href) or self.ph.found(href):
            self._problem(
                f"<mj-font name={name!r}> needs an href: the https:// address of its stylesheet",
                offset,
            )
        else:
            self.fonts.append(Font(name, href))

    def _check_attributes(self, tag: str, attrs: list[tuple[str, str | None]], offset: int) -> None:
        in_defaults = bool(self.stack) and self.stack[-1].tag in {"mj-attributes"}
        allowed = None if in_defaults else supported_attributes(tag)
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
            if tag == "mj-raw" and name == "position":
                continue  # only means something directly under <mjml>, warned about there
            if (gap := ignored_by_renderer(tag, name, value or "")) is not None:
                self._problem(gap, offset, warning=True)
            elif allowed is not None and name not in allowed and tag.startswith("mj-"):
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
        if names and any(o.tag == "mj-body" for o in self.stack):
            self.in_body_text.update(names)
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
            # MJML drops such text (with a validation warning), and so does mjml-python.
            where = f"directly inside <{parent}>" if parent else "outside <mjml>"
            leading = len(data) - len(data.lstrip())
            self._problem(
                f"text {where} is left out of the email, as MJML does; put it in <mj-text>",
                offset + leading,
                warning=True,
            )

    def finish(self) -> None:
        self.close()
        for still_open in self.stack:
            if not still_open.unknown:
                self._problem(f"<{still_open.tag}> is never closed", still_open.offset)
        if not self.root_seen:
            self.errors.append(Problem("mjml", "the template must start with <mjml>", 1, 1))
        elif self.body_offset is None:
            self.errors.append(Problem("mjml", "<mjml> needs an <mj-body>", 1, 1))
