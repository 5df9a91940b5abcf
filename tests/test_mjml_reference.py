"""Nurture's emails look like the reference implementation's (issue 16, "compare compiled
emails with the reference implementation").

Every template of the corpus (tests/data/mjml_corpus: each MJML component with its main
attributes from the MJML documentation, and the constructs of MJML's public template
collection that the save check used to refuse) and every template Nurture ships is compiled
twice: by Nurture's compiler (mjml-python) and by the mjml npm package of web/frontend
(tests/mjml_reference.mjs). Both are rendered in Chromium at the template preview's desktop
and mobile widths, and the screenshots must differ in fewer than ``THRESHOLD`` of their
pixels. Where mjml-python lacks a feature the difference is real: the save check must warn
by name (``renderer.IGNORED``), and the test asserts that warning, and that the difference
is still there, so the list of gaps stays true.

Every image a template loads is answered with a plain picture of the size its address
names (``…/600x300.png``) and every other request (web fonts) is refused: the comparison
is of the markup, offline and the same on every machine.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, IN_CI, require_chromium
from PIL import Image, ImageChops

from automation.email.compiler import Draft, compile_template
from automation.email.context import template_context
from automation.email.samples import CART, NEWSLETTER, WELCOME
from automation.email.sandbox import HTML_ENV, render
from automation.forms.service import CONFIRMATION_MJML
from web.ui.email_templates import STARTER

pytestmark = pytest.mark.browser

HERE = Path(__file__).parent
CORPUS = HERE / "data" / "mjml_corpus"
REFERENCE_SCRIPT = HERE / "mjml_reference.mjs"
REFERENCE_PACKAGE = HERE.parent / "web" / "frontend" / "node_modules" / "mjml"
WIDTHS = {"desktop": 800, "mobile": 375}  # the template preview's viewports

# A pixel differs when a colour channel is off by more than TOLERANCE (of 255): below that
# is the anti-aliasing of an edge that moved by a fraction of a pixel. Both renderers give
# the same browser the same fonts and pictures, so equal markup gives equal pixels: the
# corpus measures 0 % for most templates and at most 0.1 % (half-pixel rounding of column
# widths, the 1 px open pixel). A missing feature moves whole blocks or lines: the gaps
# below measure 1.8 % to 15 %. The threshold sits between the two, ten times the worst
# rounding, so that a real difference in one element of a long email still shows.
TOLERANCE = 40
THRESHOLD = 0.01

# What mjml-python lacks, shown by a corpus template: the save check's warning for it.
KNOWN_GAPS = {
    "gap_wrapper_gap": "<mj-wrapper> gap: MJML spaces the wrapper's sections by it",
    "gap_social_icon_position": "<mj-social-element> icon-position: MJML puts the icon",
    "gap_table_cellspacing": "<mj-table> cellspacing: MJML spaces the cells by it",
    "gap_divider_align": "<mj-divider> align: MJML puts a divider narrower than its column",
}

SAMPLE = template_context(
    {
        "first_name": "Ada",
        "email": "ada@example.com",
        "lifecycle_stage": "customer",
        "tags": ["vip"],
        "attributes": {"plan": "pro", "company": "Alpine Club"},
    },
    unsubscribe_url="https://nurture.example/u/token",
    preferences_url="https://nurture.example/p/token",
    view_in_browser_url="https://nurture.example/v/token",
)
SAMPLE["confirm_url"] = "https://nurture.example/f/confirm"
FIELDS = {"plan", "company"}

SHIPPED = {
    "shipped_welcome": WELCOME,
    "shipped_cart": CART,
    "shipped_newsletter": NEWSLETTER,
    "shipped_form_confirmation": CONFIRMATION_MJML,
    "shipped_editor_starter": STARTER,
}
SOURCES = {path.stem: path.read_text() for path in sorted(CORPUS.glob("*.mjml"))} | SHIPPED


def _needed(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} and CI=true: the reference comparison must run", False)
    pytest.skip(f"{what}: reference comparison skipped (run `make vendor`)")


@pytest.fixture(scope="module")
def reference_html() -> dict[str, str]:
    """Every source compiled by the reference implementation, in one node process."""
    if shutil.which("node") is None:
        _needed("node is not installed")
    if not REFERENCE_PACKAGE.exists():
        _needed("the mjml npm package is not installed")
    # The reference knows no Jinja: it gets the source as rendered for the sample contact.
    names = list(SOURCES)
    sources = [render(HTML_ENV.from_string(SOURCES[n]), SAMPLE).output for n in names]
    done = subprocess.run(
        ["node", str(REFERENCE_SCRIPT)],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return {name: out["html"] for name, out in zip(names, json.loads(done.stdout), strict=True)}


_PICTURES: dict[tuple[int, int], bytes] = {}


def _picture(url: str) -> bytes:
    """A PNG of the size the address names (100 by 100 without one), coloured by its size."""
    found = re.search(r"(\d+)x(\d+)", url)
    size = (int(found[1]), int(found[2])) if found else (100, 100)
    if size not in _PICTURES:
        colour = (40 + size[0] % 180, 90 + size[1] % 150, 160)
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, "PNG")
        _PICTURES[size] = buffer.getvalue()
    return _PICTURES[size]


def _answer(route: Any) -> None:
    if route.request.resource_type == "image":
        route.fulfill(status=200, content_type="image/png", body=_picture(route.request.url))
    else:
        route.abort()


@pytest.fixture(scope="module")
def pages() -> Iterator[dict[str, Any]]:
    """One Chromium page per preview width, offline but for the pictures."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tabs = {}
        for name, width in WIDTHS.items():
            context = browser.new_context(viewport={"width": width, "height": 600})
            context.route("**/*", _answer)
            tabs[name] = context.new_page()
            tabs[name].set_default_timeout(15000)
        yield tabs
        browser.close()


def _shot(page: Any, html: str) -> Image.Image:
    page.set_content(html, wait_until="load")
    return Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")


def _differing(ours: Image.Image, theirs: Image.Image) -> tuple[float, Image.Image]:
    """The share of pixels that differ (a taller page differs by its extra rows too)."""
    size = (max(ours.width, theirs.width), max(ours.height, theirs.height))
    a, b = (Image.new("RGB", size, "white") for _ in range(2))
    a.paste(ours)
    b.paste(theirs)
    mask = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > TOLERANCE else 0)
    differing = mask.histogram()[255]
    return differing / (size[0] * size[1]), mask


@pytest.mark.parametrize("name", list(SOURCES))
def test_nurture_renders_each_template_as_mjml_does(name, reference_html, pages):
    compiled = compile_template(
        Draft("Reference", "", SOURCES[name], marketing=False), known_fields=FIELDS, sample=SAMPLE
    )
    assert compiled.errors == [] and compiled.compiled is not None, compiled.errors
    ours = render(HTML_ENV.from_string(compiled.compiled.html), SAMPLE).output
    diffs = {}
    for width, page in pages.items():
        mine, reference = _shot(page, ours), _shot(page, reference_html[name])
        diffs[width], mask = _differing(mine, reference)
        if diffs[width] >= THRESHOLD and name not in KNOWN_GAPS:
            ARTIFACTS.mkdir(exist_ok=True)
            for kind, image in (("nurture", mine), ("mjml", reference), ("diff", mask)):
                image.save(ARTIFACTS / f"mjml-reference-{name}-{width}-{kind}.png")
    shown = {w: f"{d:.2%}" for w, d in diffs.items()}
    gap = KNOWN_GAPS.get(name)
    if gap is None:
        assert max(diffs.values()) < THRESHOLD, f"{name} differs from MJML: {shown}"
        return
    assert any(w.message.startswith(gap) for w in compiled.warnings), compiled.warnings
    assert max(diffs.values()) >= THRESHOLD, f"{name}: mjml-python renders it now? {shown}"
