"""Links for click tracking: each tracked href numbered and swapped for its marker, the
special URLs (unsubscribe, preferences …) recognised, dynamic hrefs reported."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from automation.email.jinja_source import Placeholders
from automation.email.problems import SourceLines

TRACKED_SCHEMES = ("http://", "https://")
SPECIAL_URLS = {"unsubscribe_url", "preferences_url", "view_in_browser_url", "confirm_url"}
# Where a recipient's tracking URLs go. HTML comments, so autoescaped contact data can
# never contain one; substituted per recipient outside Jinja (see render.py).
LINK_MARKER = "<!--nurture:link:{}-->"
OPEN_MARKER = "<!--nurture:open-->"
RESERVED = "<!--nurture:"

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
        self.lines = SourceLines(text)
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


def classify_links(
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
