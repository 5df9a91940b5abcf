"""The workflow canvas in a real browser (Debian's Chromium through Playwright), end to end:
a marketer draws an abandoned-cart workflow on the canvas (event trigger, a wait, an email,
a branch on "opened"), sees a problem on the step it names, publishes; an event posted
through the API enrols a shopper; a real Celery worker with its beat moves the enrolment
when the test clock passes the wait and sends over SMTP to the local catcher; the email
shows in "Sent mail (local)" and the statistics on the canvas move. Screenshots land in
test-artifacts/."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import make_settings, screenshot, start_worker
from sqlalchemy import select
from test_browser_ui import PASSWORD, log_in

from automation import clock
from automation.clock import file_source, write_clock_file
from automation.email.catcher import free_port, start_catcher
from automation.workflows.models import Enrollment
from web.ui.email_templates import STARTER

pytestmark = pytest.mark.browser

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path):
    # SQLite: the subject is the page and the engine's path through it; the worker shares
    # the file. Mail goes to a catcher on a port of our own.
    from automation.db import Base, make_engine

    path = tmp_path / "wf.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return make_settings(
        tmp_path,
        f"sqlite:///{path}",
        NURTURE_SMTP_HOST="127.0.0.1",
        NURTURE_SMTP_PORT=str(free_port()),
        NURTURE_SMTP_TLS="none",
        NURTURE_SMTP_CATCHER="1",
    )


@pytest.fixture
def test_clock(tmp_path):
    """One clock file for the web app (this process) and the worker (its own)."""
    path = tmp_path / "clock"
    write_clock_file(path, START)
    clock.set_source(file_source(path))
    yield path
    clock.set_source(None)


@pytest.fixture
def catcher(settings):
    controller = start_catcher(settings.maildir, port=settings.smtp_port)
    yield controller
    controller.stop()


@pytest.fixture
def console_errors(page):
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "response",
        lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404 or r.status >= 500 else 0,
    )
    yield errors
    # A 422 from validating a half-built draft is the expected answer, not an error.
    assert [e for e in errors if "Failed to load resource" not in e] == []


def stat(page, node: str, key: str) -> str:
    return page.inner_text(f"[data-node='{node}'] [data-stat='{key}'] strong")


def wait_for_stat(page, node: str, key: str, value: int, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([node, key, value]) => document.querySelector("
        "`[data-node='${node}'] [data-stat='${key}'] strong`)?.textContent === value",
        arg=[node, key, str(value)],
        timeout=timeout,
    )


def wait_until_waiting(app, node: str, timeout: float = 60.0) -> None:
    """Until the engine has started the enrolment's wait at ``node`` (polls the database)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.extensions["nurture"].sessions() as s:
            started = s.scalar(
                select(Enrollment.id).where(
                    Enrollment.current_node == node, Enrollment.waiting_since.is_not(None)
                )
            )
        if started:
            return
        time.sleep(0.2)
    raise AssertionError(f"no enrolment started waiting at {node} in {timeout} s")


def add_step(page, after_edge: str, kind: str) -> None:
    page.click(f"[data-edge='{after_edge}'] .wf-add")
    page.click(f".wf-menu [data-kind='{kind}']")


def test_marketer_draws_publishes_and_watches_an_abandoned_cart_workflow(
    page, app, api, user_factory, settings, test_clock, catcher, console_errors
):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    template = api.post(
        "/templates",
        {
            "name": "Cart reminder",
            "kind": "marketing",
            "subject": "You left something in your cart, {{ contact.first_name }}",
            "mjml": STARTER,
        },
    )
    assert template.status_code == 201, template.json
    assert (
        api.post("/contacts", {"email": "shopper@example.com", "first_name": "Sam"}).status_code
        == 201
    )
    # The worker starts now, so its start-up overlaps the drawing.
    worker = start_worker(
        settings,
        queues="engine,send",
        beat=True,
        env={
            "NURTURE_CLOCK_FILE": str(test_clock),
            "NURTURE_WORKFLOW_TICK_SECONDS": "0.5",
            "NURTURE_SMTP_HOST": "127.0.0.1",
            "NURTURE_SMTP_PORT": str(settings.smtp_port),
            "NURTURE_SMTP_TLS": "none",
        },
    )
    try:
        log_in(page, "marketer@example.com")
        page.click("nav >> text=Workflows")
        page.click("text=New workflow")
        page.fill("#f-name", "Abandoned cart")
        page.click("text=Create and open the canvas")
        page.wait_for_url(re.compile(r".*/workflows/\d+$"))
        page.wait_for_selector("#wf-graph[data-drawn=true]")

        # The trigger: keyboard to it, Enter opens its panel.
        page.focus("[data-node='@trigger']")
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "wf-panel-title"
        page.select_option("#wf-trigger-type", "event")
        page.fill("#wf-trigger-event", "cart_abandoned")

        # Wait one hour, then the reminder, then a branch on "opened".
        add_step(page, "@trigger|start", "wait")
        page.fill("[aria-label='days']", "")
        page.fill("[aria-label='hours']", "1")
        add_step(page, "wait-1|next", "send_email")
        page.select_option("#wf-template", label="Cart reminder")
        page.fill("#wf-node-name", "Reminder: your cart")
        add_step(page, "email-1|next", "branch")
        page.fill("#wf-node-name", "Opened the reminder?")
        assert page.input_value("[data-key='conditions[0].workflow_email']") == "opened"
        assert page.input_value("[data-key='conditions[0].node']") == "email-1"

        # A webhook without its URL: the engine's validation names it, on that step.
        add_step(page, "branch-1|yes", "webhook")
        page.wait_for_selector("[data-node='webhook-1'].invalid .wf-problem")
        assert "webhook 'webhook-1'" in page.inner_text("#wf-problems")
        assert page.inner_text("[data-node='webhook-1'] .wf-problem")
        screenshot(page, "workflow-canvas-problem")
        page.click("#wf-delete-node")
        page.wait_for_function("() => !document.querySelector('[data-node=\"webhook-1\"]')")
        page.wait_for_function("() => !document.querySelector('#wf-problems li')")

        page.click("#wf-publish")
        page.wait_for_selector("#wf-message >> text=Published version 1")
        assert page.inner_text("#wf-status") == "active"
        for node in ("wait-1", "email-1", "branch-1"):
            assert page.locator(f"[data-node='{node}']").count() == 1
        screenshot(page, "workflow-canvas-published")

        # Dry run for the shopper: the path lights up on the canvas, nothing is sent.
        page.fill("#dry-contact", "1")
        page.click("#dry-run button[type=submit]")
        page.wait_for_selector("#dry-steps")
        assert [r.get_attribute("data-node") for r in page.locator("#dry-steps tbody tr").all()][
            :3
        ] == ["wait-1", "email-1", "branch-1"]
        assert page.locator("[data-node='email-1'].on-path").count() == 1
        page.click("#dry-clear")

        # A shopper abandons a cart: enrolled at once, waiting at the wait.
        posted = api.post(
            "/events",
            {"events": [{"name": "cart_abandoned", "email": "shopper@example.com"}]},
        )
        assert posted.status_code in (200, 201, 202), posted.json
        wait_for_stat(page, "@trigger", "enrolled", 1)
        wait_for_stat(page, "wait-1", "waiting", 1)
        assert stat(page, "email-1", "sent") == "0"
        # The worker's first tick starts the wait at 12:00 (its start-up may still be going).
        wait_until_waiting(app, "wait-1")

        # An hour later the worker's tick sends the reminder; the branch takes "no".
        write_clock_file(test_clock, START + timedelta(hours=1, minutes=1))
        wait_for_stat(page, "email-1", "sent", 1, timeout=40_000)
        wait_for_stat(page, "wait-1", "passed", 1)
        wait_for_stat(page, "branch-1", "passed", 1)
        assert stat(page, "wait-1", "waiting") == "0"
        assert "no · 1" in page.inner_text("[data-edge='branch-1|no']")
        screenshot(page, "workflow-canvas-stats")
    finally:
        worker.terminate()
        worker.wait(20)

    page.click("nav >> text=Sent mail (local)")
    assert "You left something in your cart, Sam" in page.inner_text("main")
    assert "shopper@example.com" in page.inner_text("main")
    screenshot(page, "workflow-sent-mail")

    # Readable at laptop and tablet widths: the canvas scrolls inside itself.
    page.click("nav >> text=Workflows")
    assert "Abandoned cart" in page.inner_text("#workflows")
    page.click("text=Abandoned cart")
    for width in (1024, 768):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_selector("#wf-graph[data-drawn=true]")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (width, overflow)
        screenshot(page, f"workflow-canvas-{width}")


def test_marketer_enrols_contacts_by_email_from_the_canvas(page, api, user_factory, console_errors):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    for email in ("ada@example.com", "grace@example.com"):
        assert api.post("/contacts", {"email": email}).status_code == 201
    workflow = api.post(
        "/workflows",
        {
            "name": "Welcome by hand",
            "trigger": {"type": "manual"},
            "start": "wait",
            "nodes": [
                {"id": "wait", "type": "wait", "mode": "duration", "duration": {"days": 1},
                 "next": "end"},
                {"id": "end", "type": "exit"},
            ],
        },
    )  # fmt: skip
    assert workflow.status_code == 201, workflow.json
    log_in(page, "marketer@example.com")
    page.goto("/workflows")
    page.click("text=Welcome by hand")
    page.wait_for_selector("#wf-graph[data-drawn=true]")
    # Nothing is live yet: the form says what to do first.
    assert page.is_disabled("#enrol-submit")
    assert page.inner_text("#enrol-note") == "Publish the workflow to enrol contacts."
    page.click("#wf-publish")
    page.wait_for_selector("#wf-message >> text=Published version 1")
    assert page.is_enabled("#enrol-submit")

    # A typo: the unknown address is named and nobody is enrolled.
    page.fill("#enrol-emails", "ada@example.com\nnobody@example.com")
    page.click("#enrol-submit")
    page.wait_for_selector("#enrol-problems li")
    assert page.inner_text("#enrol-problems") == (
        "nobody@example.com: no contact with the email nobody@example.com"
    )
    assert api.get(f"/workflows/{workflow.json['id']}/enrollments").json == []

    page.fill("#enrol-emails", "ada@example.com, Grace@Example.com")
    page.click("#enrol-submit")
    page.wait_for_selector("#enrol-result >> text=2 contacts enrolled.")
    enrolled = api.get(f"/workflows/{workflow.json['id']}/enrollments").json
    assert len(enrolled) == 2
    wait_for_stat(page, "wait", "waiting", 2)
    screenshot(page, "workflow-enrol-by-email")


def test_a_form_trigger_is_chosen_among_the_lead_forms(page, api, user_factory, console_errors):
    """A document naming its form by name shows that form chosen; choosing another stores
    the form's id."""
    user_factory("marketer@example.com", PASSWORD, "marketer")
    fields = [{"name": "email", "label": "Email", "required": True}]
    ebook = api.post("/forms", {"name": "ebook", "fields": fields}).json
    webinar = api.post("/forms", {"name": "Webinar", "fields": fields, "double_opt_in": True}).json
    created = api.post(
        "/workflows",
        {
            "name": "Welcome",
            "trigger": {"type": "form_submitted", "form": "ebook"},
            "start": "end",
            "nodes": [{"id": "end", "type": "exit"}],
        },
    )
    assert created.status_code == 201, created.json
    log_in(page, "marketer@example.com")
    page.goto(f"/workflows/{created.json['id']}")
    page.wait_for_selector("#wf-graph[data-drawn=true]")
    assert "Form “ebook” submitted" in page.inner_text("[data-node='@trigger']")
    page.focus("[data-node='@trigger']")
    page.keyboard.press("Enter")
    assert page.input_value("#wf-trigger-form") == str(ebook["id"])
    page.select_option("#wf-trigger-form", label="Webinar (double opt-in)")
    page.click("#wf-save")
    page.wait_for_selector("#wf-message >> text=Draft saved.")
    assert "Form “Webinar” submitted" in page.inner_text("[data-node='@trigger']")
    saved = api.get(f"/workflows/{created.json['id']}").json["definition"]["trigger"]
    assert saved == {"type": "form_submitted", "form_id": webinar["id"]}


def test_the_canvas_builds_steps_from_the_node_kinds_the_server_describes(
    page, api, user_factory, console_errors
):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    assert (
        api.post("/fields", {"name": "renewal", "label": "Renewal", "type": "date"}).status_code
        == 201
    )
    workflow = api.post(
        "/workflows",
        {
            "name": "Kinds",
            "trigger": {"type": "manual"},
            "start": "end",
            "nodes": [{"id": "end", "name": "End", "type": "exit"}],
        },
    )
    assert workflow.status_code == 201, workflow.json
    log_in(page, "marketer@example.com")
    page.goto(f"/workflows/{workflow.json['id']}")
    page.wait_for_selector("#wf-graph[data-drawn=true]")

    # A split: one exit per path, both leading on to where the edge led.
    add_step(page, "@trigger|start", "split")
    page.wait_for_selector("[data-edge='split-1|A']")
    page.wait_for_selector("[data-edge='split-1|B']")
    # A wait for an event on path A: its two exits, and its own heading.
    add_step(page, "split-1|A", "wait_event")
    page.wait_for_selector("[data-edge='wait-1|happened']")
    page.wait_for_selector("[data-edge='wait-1|timed_out']")
    assert page.inner_text("#wf-panel-title").startswith("Wait for event")
    # Another mode: the event's settings and exits go, the date field's starter comes.
    page.select_option("#wf-wait-mode", "date_field")
    page.wait_for_selector("[data-edge='wait-1|next']")
    assert not page.query_selector("[data-edge='wait-1|happened']")
    assert page.inner_text("#wf-panel-title").startswith("Wait")
    page.click("#wf-save")
    page.wait_for_selector("#wf-message >> text=Draft saved.")

    draft = api.get(f"/workflows/{workflow.json['id']}").json["definition"]
    nodes = {n["id"]: n for n in draft["nodes"]}
    assert draft["start"] == "split-1"
    assert nodes["split-1"]["paths"] == [
        {"name": "A", "weight": 50, "next": "wait-1"},
        {"name": "B", "weight": 50, "next": "end"},
    ]
    assert nodes["wait-1"] == {
        "id": "wait-1",
        "name": "",
        "type": "wait",
        "mode": "date_field",
        "field": "renewal",
        "offset_days": 0,
        "time": "09:00",
        "next": "end",
    }
