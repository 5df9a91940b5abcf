"""A campaign in a real browser (Debian's Chromium through Playwright): a marketer creates
an A/B campaign with two variants in the form (watching the audience count), starts it,
and a real Celery worker runs the campaign tick and the sender against an SMTP catcher;
the page's progress follows without a reload, then the results show the variant table,
its chart and the click map. Screenshots land in test-artifacts/."""

from __future__ import annotations

import pytest
from campaignkit import bulk_contacts, make_list
from conftest import ARTIFACTS, make_settings, screenshot, start_worker
from emailkit import make_template
from playwright.sync_api import expect
from test_browser_ui import PASSWORD, log_in
from test_browser_workspace import console_errors  # noqa: F401  # fixture

from automation.email.catcher import free_port, list_caught, start_catcher

pytestmark = pytest.mark.browser

AUDIENCE = 8


@pytest.fixture
def settings(tmp_path):
    from automation.db import Base, make_engine

    path = tmp_path / "c.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return make_settings(tmp_path, f"sqlite:///{path}")


@pytest.fixture
def catcher(tmp_path):
    maildir = tmp_path / "caught"
    controller = start_catcher(maildir, port=free_port())
    yield maildir, controller.port
    controller.stop()


@pytest.fixture
def worker(settings, catcher):
    """A real Celery worker (engine and send queues) sending to the catcher; it boots while
    the marketer fills the form and idles until the form wakes it."""
    process = start_worker(
        settings,
        queues="engine,send",
        env={
            "NURTURE_SMTP_HOST": "127.0.0.1",
            "NURTURE_SMTP_PORT": str(catcher[1]),
            "NURTURE_SMTP_TLS": "none",
        },
    )
    yield process
    process.terminate()
    process.wait(20)


def test_marketer_creates_and_starts_an_ab_campaign_and_sees_its_results(
    page,
    app,
    user_factory,
    settings,
    catcher,
    worker,
    console_errors,  # noqa: F811
):
    maildir, _ = catcher
    user_factory("marketer@example.com", PASSWORD, "marketer")
    with app.extensions["nurture"].sessions() as s:
        make_template(s, name="Autumn letter")
        ids = bulk_contacts(s, "reader", AUDIENCE + 2)
        make_list(s, "Readers", ids)
        make_list(s, "Staff", ids[:2])
        s.commit()

    log_in(page, "marketer@example.com")
    page.click("nav >> text=Campaigns")
    page.click("text=New campaign")
    page.wait_for_url("**/campaigns/new")
    page.fill("#f-name", "Autumn A/B")
    page.check("input[name='include_segment_ids'] >> nth=0")  # Readers
    expect(page.locator("#audience-count")).to_have_text("10")
    page.check("input[name='exclude_segment_ids'] >> nth=1")  # Staff
    expect(page.locator("#audience-count")).to_have_text("8")
    assert page.is_hidden("#ab-test")  # one variant: no test settings
    page.select_option("[name='variants[0].template_version_id']", label="Autumn letter (v1)")
    assert page.is_hidden("[name='send_at']")  # "now" needs no time
    assert page.is_visible("[data-variant='1']") and page.is_hidden("[data-variant='2']")
    page.select_option("[name='variants[1].template_version_id']", label="Autumn letter (v1)")
    page.fill("[name='variants[1].subject']", "Last days of autumn")
    assert page.is_visible("#ab-test")
    page.fill("[name='ab_test.test_percent']", "100")
    page.fill("[name='ab_test.min_sample']", "1")
    page.select_option("[name='ab_test.fallback']", "manual")
    screenshot(page, "campaign-form")
    page.click("#save-start")
    page.wait_for_url("**/campaigns/*")
    assert page.inner_text("#progress-status") in ("scheduled", "testing")

    # The page polls; the numbers move without a reload.
    expect(page.locator("[data-count=sent]")).to_have_text(str(AUDIENCE), timeout=60_000)
    assert page.get_attribute("#progress-bar", "value") == "100"
    caught = list_caught(maildir)
    assert len(caught) == AUDIENCE
    assert len({m.to for m in caught}) == AUDIENCE  # each reader once, staff never
    assert {m.subject for m in caught} >= {"Last days of autumn"}

    page.reload()
    assert "testing" in page.inner_text("#progress-status")
    rows = page.inner_text("#variant-table")
    assert "Last days of autumn" in rows and "95 % interval" in rows.lower()
    page.wait_for_selector("#variant-chart[data-drawn='true']")
    frame = page.frame_locator("#click-map-frame")
    assert "clicks" in frame.locator("body").inner_text()
    assert page.get_attribute("#click-map-frame", "sandbox") == ""
    screenshot(page, "campaign-results")
    page.locator("#click-map-frame").scroll_into_view_if_needed()
    page.locator("#click-map-frame").screenshot(path=str(ARTIFACTS / "campaign-click-map.png"))
