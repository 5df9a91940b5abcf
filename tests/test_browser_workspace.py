"""Segments and templates in a real browser (Debian's Chromium through Playwright): a
marketer builds a segment and watches its live count follow the conditions, writes a
template and sees the sandboxed preview update and a validation error at its line.
Screenshots land in test-artifacts/."""

from __future__ import annotations

import re

import pytest
from conftest import make_settings, screenshot
from test_browser_ui import PASSWORD, log_in

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(tmp_path):
    from automation.db import Base, make_engine

    path = tmp_path / "w.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return make_settings(tmp_path, f"sqlite:///{path}")


@pytest.fixture
def console_errors(page):
    """As in test_browser_ui, except that the page's Content-Security-Policy blocking the
    web font MJML links from Google (inside the sandboxed preview, which inherits the
    policy) is expected: previews load no third-party styles."""
    errors: list[str] = []

    def on_console(msg):
        text = msg.text
        if msg.type != "error" or text.startswith("Failed to load resource"):
            return
        if "fonts.googleapis.com" in text and "Content Security Policy" in text:
            return
        errors.append(text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "response",
        lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404 or r.status >= 500 else 0,
    )
    yield errors
    assert errors == []


def count_on_page(page, previous: str | None = None) -> int:
    """The live count once it has settled (differs from ``previous`` when given)."""
    page.wait_for_function(
        "prev => { const t = document.querySelector('#live-count').textContent;"
        " return /^[0-9,]+$/.test(t) && t !== prev; }",
        arg=previous,
    )
    return int(page.inner_text("#live-count").replace(",", ""))


def test_marketer_builds_a_segment_and_sees_its_count_follow_the_conditions(
    page, app, api, user_factory, settings, console_errors
):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    for i in range(6):
        body = {"email": f"p{i}@example.com", "first_name": f"P{i}", "score": i * 10}
        body["tags"] = ["vip"] if i % 2 else []
        assert api.post("/contacts", body).status_code == 201

    log_in(page, "marketer@example.com")
    page.click("nav >> text=Segments")
    page.click("text=New segment or list")
    page.wait_for_url("**/segments/new")
    assert count_on_page(page) == 6  # the starting condition: status equals subscribed

    # A tag condition: while its tag is empty the error shows at that condition.
    page.select_option("[data-key='conditions.add-kind']", "tags")
    page.click("[data-key='conditions.add']")
    page.wait_for_selector("[data-path='conditions[1]'] .field-error")
    assert "conditions[0]" not in page.inner_text("[data-path='conditions[1]'] .field-error")
    page.fill("[data-key='conditions[1].tags']", "vip")
    assert count_on_page(page, "6") == 3
    assert page.locator("[data-path='conditions[1]'] .field-error").count() == 0
    assert '"vip"' in page.input_value("#tree-json")  # the JSON follows the builder

    # A nested any-group with a numeric field condition.
    page.select_option("[data-key='conditions.add-kind']", "any")
    page.click("[data-key='conditions.add']")
    page.select_option("[data-key='conditions[2].any[0].field']", "score")
    page.select_option("[data-key='conditions[2].any[0].operator']", "greater_than")
    page.fill("[data-key='conditions[2].any[0].value']", "20")
    assert count_on_page(page, "3") == 2  # p3 and p5
    assert "p5@example.com" in page.inner_text("#sample")

    # Behaviour with a property filter: both bought, only p3's order was 50 or more.
    purchases = [
        {"name": "purchase", "email": "p3@example.com", "properties": {"total": 80}},
        {"name": "purchase", "email": "p5@example.com", "properties": {"total": 5}},
    ]
    assert api.post("/events", {"events": purchases}).status_code in (200, 201, 202)
    page.select_option("[data-key='conditions.add-kind']", "event")
    page.click("[data-key='conditions.add']")
    page.fill("[data-key='conditions[3].event']", "purchase")
    page.click("[data-key='conditions[3].add-property']")
    page.fill("[data-key='conditions[3].where[0].property']", "total")
    page.select_option("[data-key='conditions[3].where[0].operator']", "greater_or_equal")
    page.fill("[data-key='conditions[3].where[0].value']", "50")
    page.select_option("[data-key='conditions[3].where[0].type']", "number")
    # Intermediate edits may briefly count other numbers; the settled count is 1.
    page.wait_for_function("() => document.querySelector('#live-count').textContent === '1'")
    assert '"value": 50' in page.input_value("#tree-json")  # a number, not the text "50"
    assert "p3@example.com" in page.inner_text("#sample")
    screenshot(page, "segment-builder")

    page.fill("#seg-name", "VIP high scorers")
    page.click("#save-segment")
    page.wait_for_url(re.compile(r".*/segments/\d+$"))
    assert page.input_value("[data-key='conditions[2].any[0].value']") == "20"

    # Why is p1 out? Its score condition fails.
    page.fill("#explain-contact", "2")
    page.click("text=in or out?")
    page.wait_for_selector("#explain-result >> text=is OUT")
    screenshot(page, "segment-explain")
    page.click("nav >> text=Segments")
    assert "VIP high scorers" in page.inner_text("#segments")


def test_marketer_writes_a_template_sees_the_preview_and_an_error_at_its_line(
    page, app, user_factory, settings, console_errors
):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    log_in(page, "marketer@example.com")
    page.click("nav >> text=Templates")
    page.click("text=New template")
    page.wait_for_url("**/templates/new")
    desktop = page.frame_locator("#preview-desktop")
    desktop.locator("text=Hello Ada").wait_for()  # the starter, rendered for the sample
    assert page.get_attribute("#preview-desktop", "sandbox") == ""
    assert page.get_attribute("#preview-mobile", "width") == "375"

    editor = page.locator(".CodeMirror")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("<mj-text>{{ contact.nosuchfield }}")
    page.wait_for_selector("#problems li.error")
    problem = page.locator("#problems li.error").first
    line = int(problem.get_attribute("data-line") or 0)
    assert line >= 12, page.inner_text("#problems")
    assert page.locator(".cm-error-line").count() >= 1
    screenshot(page, "template-error")

    page.keyboard.press("Control+z")
    page.wait_for_function("() => !document.querySelector('#problems li.error')")
    # Personalisation from the picker; the preview follows.
    page.fill("#t-name", "Welcome")
    page.fill("#t-subject", "Hi {{ contact.first_name }}!")
    page.wait_for_selector("#preview-subject >> text=Hi Ada!")
    assert page.get_attribute("#t-language", "placeholder").startswith("en ")
    page.fill("#t-language", "de")
    page.wait_for_function(
        "() => document.querySelector('#preview-desktop').srcdoc.includes('<html lang=\"de\"')"
    )
    page.click("#save-template")
    page.wait_for_url(re.compile(r".*/templates/\d+$"))
    assert "1" in page.inner_text("#versions")
    desktop.locator("text=Hello Ada").wait_for()
    assert page.input_value("#t-language") == "de"  # saved with the version
    screenshot(page, "template-editor")
