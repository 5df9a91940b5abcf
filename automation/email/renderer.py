"""mjml-python, the MJML renderer Nurture uses, and what Nurture does around it so that a
template renders as MJML (the reference implementation) renders it.

- **Fonts.** Nurture links web fonts itself: mjml-python ignores ``<mj-font>`` here. Its own
  handling asserts ("Not yet implemented") on a font named like one of its defaults
  (Roboto, Open Sans, Lato, Ubuntu, Droid Sans), and MJML and mjml-python both link Google
  Fonts for those defaults whenever a font-family names one, so every email (mj-text's
  default font is Ubuntu) sent its recipients' addresses to Google. An email links exactly
  the fonts its template declares with ``<mj-font>`` and uses in a font-family.
- **Crashes.** Where mjml-python fails on valid MJML that MJML renders (defaults given
  twice, an mj-spacer in a hero, a hero in a wrapper or without a background size, a
  column's inner-border), a subclass of its component renders it as MJML does: the
  components Nurture passes in ``_COMPONENTS``.
- **Gaps.** ``IGNORED`` lists what MJML supports and mjml-python ignores; the save check
  warns by that name, and ``tests/test_mjml_reference.py`` compares the two renderers in a
  browser to keep the list true.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mjml import mjml_to_html
from mjml.core.registry import components, register_core_components
from mjml.elements import MjColumn, MjHero, MjSpacer
from mjml.elements.head import MjFont, MjHead
from mjml.helpers.shorthand_parser import borderParser

RENDERER = "mjml-python (the MJML renderer Nurture uses)"


@dataclass(frozen=True)
class Gap:
    """An attribute MJML supports and mjml-python ignores."""

    does: str  # what MJML does with it
    instead: str  # what mjml-python does, or what to use instead
    same_for: frozenset[str] = frozenset()  # values both render alike (MJML's default)


# Found by comparing the attribute lists of mjml 4 (the npm package in web/frontend) and
# mjml-python, and their renderings (tests/test_mjml_reference.py).
IGNORED: dict[tuple[str, str], Gap] = {
    ("mj-wrapper", "gap"): Gap(
        "spaces the wrapper's sections by it",
        "give the sections padding instead",
        frozenset({"0", "0px"}),
    ),
    ("mj-social-element", "icon-position"): Gap(
        "puts the icon on that side of the text",
        "the icon stays left of the text",
        frozenset({"left"}),
    ),
    ("mj-accordion-title", "font-weight"): Gap(
        "sets the title's weight",
        "use <b> in the title or a css-class",
    ),
    ("mj-button", "title"): Gap("gives the link a title", "the button has no tooltip"),
    ("mj-image", "sizes"): Gap("passes it on with srcset", "the image has no sizes"),
    ("mj-table", "role"): Gap("sets the table's role", "the table keeps role-less markup"),
    ("mj-table", "cellspacing"): Gap(
        "spaces the cells by it",
        "its tables collapse their borders, so give the cells padding instead",
        frozenset({"0", "0px"}),
    ),
    ("mj-divider", "align"): Gap(
        "puts a divider narrower than its column on that side",
        "it is centred",
        frozenset({"center"}),
    ),
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


def ignored_by_renderer(tag: str, attribute: str, value: str) -> str | None:
    """The warning for an attribute MJML supports and mjml-python ignores, else None."""
    gap = IGNORED.get((tag, attribute))
    if gap is None or value.strip().lower() in gap.same_for:
        return None
    return f"<{tag}> {attribute}: MJML {gap.does}, but {RENDERER} ignores it; {gap.instead}"


@dataclass(frozen=True)
class Font:
    """A web font a template declares with ``<mj-font>``."""

    name: str
    href: str


class _FontLinkedByNurture(MjFont):
    """``<mj-font>`` as mjml-python sees it: nothing (``render_mjml`` links the fonts)."""

    def handler(self) -> None:
        return None


class _Spacer(MjSpacer):
    """A hero asks its children for css-class, which mjml-python's spacer never declared."""

    @classmethod
    def default_attrs(cls) -> dict[str, str]:
        return {**super().default_attrs(), "css-class": ""}


class _Hero(MjHero):
    """A wrapper asks its children for css-class, which mjml-python's hero never declared;
    and a hero without a background size failed on its ratio, which MJML computes as NaN:
    the browser drops that padding, so here it is left out."""

    @classmethod
    def default_attrs(cls) -> dict[str, str]:
        return {**super().default_attrs(), "css-class": ""}

    def get_styles(self) -> dict[str, Any]:
        sizes = ("background-height", "background-width")
        given: dict[str, Any] = vars(self)["attrs"]  # untyped in mjml-python
        if all(re.match(r"\s*[1-9]", given.get(name) or "") for name in sizes):
            return dict(super().get_styles())
        self.attrs = {**given, **dict.fromkeys(sizes, "1px")}
        try:
            styles = dict(super().get_styles())
        finally:
            self.attrs = given
        styles["td-fluid"] = {k: v for k, v in styles["td-fluid"].items() if k != "padding-bottom"}
        return styles


class _Column(MjColumn):
    """MJML reads inner-border as a border ("2px solid #000"); mjml-python parsed it as a
    padding and failed on "solid"."""

    def getShorthandAttrValue(  # mjml-python names it so
        self, attribute: str, direction: str, attr_with_direction: bool = True
    ) -> int:
        if attribute != "inner-border":
            return int(super().getShorthandAttrValue(attribute, direction, attr_with_direction))
        side = self.getAttribute(f"inner-border-{direction}") if attr_with_direction else None
        return int(borderParser(side or self.getAttribute("inner-border") or "0"))


class _Head(MjHead):
    """MJML merges defaults given twice (two <mj-all>, two <mj-class name="a">, two
    <mj-attributes> blocks, a selector named twice), later values winning; mjml-python
    asserted ("Not yet implemented"). It gets them merged, and no defaults inside an
    <mj-class>, which it cannot apply (the save check warns)."""

    def handler(self) -> Any:
        children = self.props.get("children") or []
        children = _merge_into_first(children, "mj-attributes", _default_key, _merge_default)
        children = _merge_into_first(children, "mj-html-attributes", _selector_key, _merge_selector)
        self.props["children"] = children
        return super().handler()


Entry = dict[str, Any]


def _default_key(entry: Entry) -> tuple[str, str | None]:
    name = entry["attributes"].get("name") if entry["tagName"] == "mj-class" else None
    return entry["tagName"], name


def _merge_default(into: Entry, entry: Entry) -> None:
    into["attributes"] = {**into["attributes"], **entry["attributes"]}
    into["children"] = []


def _selector_key(entry: Entry) -> tuple[str, str | None]:
    return entry["tagName"], entry["attributes"].get("path")


def _merge_selector(into: Entry, entry: Entry) -> None:
    into["children"] = [*into["children"], *entry["children"]]


def _merge_into_first(
    children: list[Entry],
    container: str,
    key: Callable[[Entry], tuple[str, str | None]],
    merge: Callable[[Entry, Entry], None],
) -> list[Entry]:
    """Every ``container``'s entries in the first one, entries of the same key merged."""
    merged: list[Entry] = []
    first: Entry | None = None
    entries: dict[tuple[str, str | None], Entry] = {}
    for child in children:
        if child["tagName"] != container:
            merged.append(child)
            continue
        if first is None:
            first = {**child, "children": []}
            merged.append(first)
        for entry in child.get("children") or []:
            same = entries.get(key(entry))
            if same is None:
                entries[key(entry)] = same = {**entry, "children": []}
                first["children"].append(same)
            merge(same, entry)
    return merged


_COMPONENTS = [_FontLinkedByNurture, _Head, _Spacer, _Hero, _Column]


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
    compiled = mjml_to_html(text, keep_comments=True, custom_components=_COMPONENTS)
    return _link_fonts(compiled.html, fonts)


def _link_fonts(html: str, fonts: Sequence[Font]) -> str:
    head_end = html.find("<body")
    head = html[:head_end]
    default = _DEFAULT_FONT_BLOCK.search(head)
    if default is not None:
        html = html[: default.start()] + "\n" + html[default.end() :]
        head = html[: html.find("<body")]
    # MJML's rule: a font is linked when a font-family in the body or the CSS names it.
    used = html[len(head) :] + "".join(re.findall(r"<style\b[^>]*>(.*?)</style>", head, re.S))
    hrefs = [
        f.href
        for f in fonts
        if re.search(r"font-family:[^;}\"]*" + re.escape(f.name), used, re.IGNORECASE)
    ]
    if not hrefs:
        return html
    links = "".join(
        f'\n<link href="{html_lib.escape(h)}" rel="stylesheet" type="text/css">' for h in hrefs
    )
    imports = "".join(f"\n@import url({h});" for h in hrefs)  # CSS: no entities here
    block = f'\n<!--[if !mso]><!-->{links}\n<style type="text/css">{imports}\n</style>'
    block += "\n<!--<![endif]-->"
    after = _FONTS_GO_AFTER.search(head)
    at = after.end() if after is not None else head.rfind("</head>")
    return html[:at] + block + html[at:]
