"""The plain-text part, derived from the compiled HTML with its placeholders kept in place
(a placeholder between table cells is moved into one first, or the parser would move it
out of the table).

The text is laid out as paragraphs with a blank line between them: every block of the
email (a heading, a paragraph, a text block, a button) is one; only a ``<br>`` inside a
block and the items of a list stay on consecutive lines. A line holding nothing but
Jinja block tags (``{% if %}``, ``{% endfor %}`` …) is put at the start of the paragraph
that follows it: the text environment trims such a line with its newline (trim_blocks),
so what a condition shows or hides is always a whole paragraph with its blank line, and
no block is glued to the next one. An image stands for its alt text, unless the text next
to it says the same (a product picture above its name): then the name is shown once,
as the image's link when the image had one."""

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


_SOFT = "\ue000"  # a line break from <br>: stays a single newline
_IMG_OPEN, _IMG_CLOSE = "\ue001", "\ue002"  # an image's alt text
_BR = re.compile(r"<br\b[^>]*>", re.IGNORECASE)
# A tag that outputs nothing itself ({% raw %} outputs its content).
_BLOCK_TAG = re.compile(r"\{#|\{%(?![-+]?\s*raw\b)")
_LIST_ITEM = re.compile(r"(?:[*+-]|\d+\.)\s")
_IMAGE_LINE = re.compile(
    "^(?:\\["
    + _IMG_OPEN
    + "(.*?)"
    + _IMG_CLOSE
    + r"\]\(([^)\s]*)\)|"
    + _IMG_OPEN
    + "(.*?)"
    + _IMG_CLOSE
    + ")$"
)
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
    html = _IMG.sub(lambda m: _alt(m.group(2)), html)
    html = _BR.sub(lambda m: _SOFT + m.group(), html)
    text = get_text(html, _TEXT_CONFIG)
    text = "\n".join(line.strip() for line in text.splitlines())
    text = _EMPTY_LINK.sub("", _LINK_TEXT.sub(lambda m: f"[{m.group(1)}](", text))
    return _paragraphs(_once(text.splitlines()), ph)


def _alt(alt: str | None) -> str:
    alt = " ".join((alt or "").split())
    return f" {_IMG_OPEN}{alt}{_IMG_CLOSE} " if alt else " "


def _once(lines: list[str]) -> list[str]:
    """Image lines whose alt text the next line repeats: shown once, with the image's link."""
    out: list[str] = []
    for n, line in enumerate(lines):
        match = _IMAGE_LINE.match(line)
        if match is None:
            out.append(line)
            continue
        alt, url = (
            (match.group(1), match.group(2)) if match.group(3) is None else (match.group(3), "")
        )
        following = next((x for x in lines[n + 1 :] if x), "")
        if following.rstrip(_SOFT) == alt:
            at = lines.index(following, n + 1)
            if url:
                lines[at] = f"[{alt}]({url})" + (_SOFT if following.endswith(_SOFT) else "")
            continue
        out.append(line)
    return [line.replace(_IMG_OPEN, "").replace(_IMG_CLOSE, "") for line in out]


def _paragraphs(lines: list[str], ph: Placeholders) -> str:
    """One paragraph per block, a blank line between. Block tags at the start or end of a
    line are taken off it and, like tag-only lines, lead the next paragraph."""

    def is_block(name: str) -> bool:
        return bool(_BLOCK_TAG.match(ph.jinja.get(name, "")))

    def peel(line: str) -> tuple[list[str], str, list[str]]:
        leading: list[str] = []
        trailing: list[str] = []
        while (m := ph.pattern.match(line)) and is_block(m.group()):
            leading.append(m.group())
            line = line[m.end() :].lstrip()
        while True:
            last = list(ph.pattern.finditer(line))
            if not last or last[-1].end() != len(line) or not is_block(last[-1].group()):
                break
            trailing.insert(0, last[-1].group())
            line = line[: last[-1].start()].rstrip()
        return leading, line, trailing

    out: list[str] = []
    pending: list[str] = []  # tags waiting for the paragraph they lead
    soft = False  # the previous line ended in a <br>
    previous_item = False
    for raw in lines:
        leading, line, trailing = peel(raw.replace(_SOFT, "").strip())
        pending += leading
        if not line:
            pending += trailing
            continue
        item = bool(_LIST_ITEM.match(line))
        if out and not pending and (soft or (item and previous_item)):
            out.append("\n")
        elif out:
            out.append("\n\n")
        out.extend(f"{tag}\n" for tag in pending)
        pending = trailing
        out.append(line)
        soft, previous_item = raw.endswith(_SOFT), item
    text = "".join(out)
    if pending:
        text += "\n\n" + "".join(f"{tag}\n" for tag in pending)
    return text.rstrip("\n") + "\n"
