"""The Jinja in a template's source: its tags found (quotes and raw blocks honoured),
hidden behind opaque placeholders while MJML and the text extraction work, and checked
without running anything (syntax, sandbox rules, known names and fields).

MJML never sees Jinja: every ``{{ … }}``, ``{% … %}`` and ``{# … #}`` is replaced by an
alphanumeric placeholder that survives MJML untouched and is put back afterwards.
"""

from __future__ import annotations

import bisect
import html as html_lib
import re
import secrets

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError

from automation.email.context import CONTACT_FIELDS, CONTEXT_NAMES
from automation.email.problems import Problem, SourceLines
from automation.email.sandbox import (
    HTML_ENV,
    TEXT_ENV,
)

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


def html_source(text: str) -> str:
    """Plain text holding Jinja (a preheader) as a source for the HTML environment: the
    text HTML-escaped (Jinja escapes only what its tags output), the tags kept."""
    ph = Placeholders()
    hidden, _ = ph.hide(text)
    return ph.restore(html_lib.escape(hidden, quote=False))


def map_offset(mapping: list[tuple[int, int]], offset: int) -> int:
    index = bisect.bisect_right([m[0] for m in mapping], offset) - 1
    new, old = mapping[index]
    return old + (offset - new)


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
    lines = SourceLines(source)
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
