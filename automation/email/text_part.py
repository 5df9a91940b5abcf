"""The plain-text part, derived from the compiled HTML with its placeholders kept in place
(a placeholder between table cells is moved into one first, or the parser would move it
out of the table)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from inscriptis import get_text
from inscriptis.model.config import ParserConfig

from automation.email.jinja_source import Placeholders
from automation.email.problems import SourceLines

_TEXT_CONFIG = ParserConfig(display_links=True)

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
        self.lines = SourceLines(text)
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


def derive_text(html: str, ph: Placeholders) -> str:
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
