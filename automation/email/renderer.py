"""mjml-python, the MJML renderer Nurture uses, and what Nurture does around it so that a
template renders as MJML (the reference implementation) renders it.

- **Fonts.** Nurture links web fonts itself: mjml-python ignores ``<mj-font>`` here. Its own
  handling asserts ("Not yet implemented") on a font named like one of its defaults
  (Roboto, Open Sans, Lato, Ubuntu, Droid Sans), and MJML and mjml-python both link Google
  Fonts for those defaults whenever a font-family names one, so every email (mj-text's
  default font is Ubuntu) sent its recipients' addresses to Google. An email links exactly
  the fonts its template declares with ``<mj-font>`` and uses in a font-family.
- **Gaps.** ``IGNORED`` lists what MJML supports and mjml-python ignores; the save check
  warns by that name, and ``tests/test_mjml_reference.py`` compares the two renderers in a
  browser to keep the list true.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mjml import mjml_to_html
from mjml.core.registry import components, register_core_components
from mjml.elements.head import MjFont
from mjml.helpers import buildFontsTags

RENDERER = "mjml-python (the MJML renderer Nurture uses)"

# (element, attribute) → (what MJML does with it, what to do instead). Found by comparing
# the attribute lists of mjml 4 (the npm package in web/frontend) and mjml-python.
IGNORED: dict[tuple[str, str], tuple[str, str]] = {
    ("mj-wrapper", "gap"): (
        "spaces the wrapper's sections by it",
        "give the sections padding instead",
    ),
    ("mj-social-element", "icon-position"): (
        "puts the icon on that side of the text",
        "the icon stays left of the text",
    ),
    ("mj-accordion-title", "font-weight"): (
        "sets the title's weight",
        "use <b> in the title or a css-class",
    ),
    ("mj-button", "title"): ("gives the link a title", "the button has no tooltip"),
    ("mj-image", "sizes"): ("passes it on with srcset", "the image has no sizes"),
    ("mj-table", "role"): ("sets the table's role", "the table keeps role-less markup"),
}
ALWAYS_ALLOWED = {"mj-class", "css-class"}


def supported_attributes(tag: str) -> set[str] | None:
    """The attributes mjml-python reads on ``tag`` (None for an element it does not know).
    Its declared list misses some it does read (mj-body width, mj-style inline), so the
    defaults count too."""
    register_core_components()
    component = components.get(tag)
    if component is None:
        return None
    return set(component.allowed_attrs()) | set(component.default_attrs()) | ALWAYS_ALLOWED


def ignored_by_renderer(tag: str, attribute: str) -> str | None:
    """The warning for an attribute MJML supports and mjml-python ignores, else None."""
    gap = IGNORED.get((tag, attribute))
    if gap is None:
        return None
    does, instead = gap
    return f"<{tag}> {attribute}: MJML {does}, but {RENDERER} ignores it; {instead}"


@dataclass(frozen=True)
class Font:
    """A web font a template declares with ``<mj-font>``."""

    name: str
    href: str


class _FontLinkedByNurture(MjFont):
    """``<mj-font>`` as mjml-python sees it: nothing (``render_mjml`` links the fonts)."""

    def handler(self) -> None:
        return None


# The block mjml-python writes for the default fonts a font-family names (helpers/fonts.py).
_DEFAULT_FONT_BLOCK = re.compile(
    r"\s*<!--\[if !mso\]><!-->\s*(?:<link href=\"[^\"]*\" rel=\"stylesheet\" "
    r"type=\"text/css\">\s*)+<style type=\"text/css\">\s*(?:@import url\([^)]*\);\s*)+"
    r"</style>\s*<!--<!\[endif\]-->\s*"
)
# Where MJML places its font links: after the skeleton's Outlook group fix.
_FONTS_GO_AFTER = re.compile(r"\.mj-outlook-group-fix \{[^}]*\}\s*</style>\s*<!\[endif\]-->")


def render_mjml(text: str, fonts: Sequence[Font]) -> str:
    """Compile checked MJML to HTML, linking only the declared fonts a font-family uses."""
    compiled = mjml_to_html(text, keep_comments=True, custom_components=[_FontLinkedByNurture])
    return _link_fonts(compiled.html, fonts)


def _link_fonts(html: str, fonts: Sequence[Font]) -> str:
    head_end = html.find("<body")
    head = html[:head_end]
    default = _DEFAULT_FONT_BLOCK.search(head)
    if default is not None:
        html = html[: default.start()] + "\n" + html[default.end() :]
        head = html[: html.find("<body")]
    # MJML's rule: a font is linked when a font-family in the body or the CSS names it.
    styles = re.findall(r"<style\b[^>]*>(.*?)</style>", head, re.S)
    block = buildFontsTags(
        html[len(head) :],
        styles,
        fonts={re.escape(f.name): html_lib.escape(f.href) for f in fonts},
    )
    if not block:
        return html
    after = _FONTS_GO_AFTER.search(head)
    at = after.end() if after is not None else head.rfind("</head>")
    return html[:at] + block.rstrip() + html[at:]
