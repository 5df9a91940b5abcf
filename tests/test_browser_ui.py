"""The marketer's workspace in a real browser (Debian's Chromium through Playwright):
import with a column-mapping step and a live progress bar run by a real Celery worker,
contact editing, tags and merge, API keys shown once, the dashboard's charts, keyboard use
and tablet widths. Screenshots of each page land in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import emailkit
import pytest
from conftest import make_settings, screenshot, start_worker

pytestmark = pytest.mark.browser
smtp_server, sending = emailkit.smtp_server, emailkit.sending

PASSWORD = "correct horse battery"
VENDOR = Path(__file__).resolve().parent.parent / "web" / "static" / "vendor" / "chart.umd.min.js"


@pytest.fixture
def settings(tmp_path):
    # SQLite: the subject is the page, not the database (and a worker process shares it).
    from automation.db import Base, make_engine

    path = tmp_path / "b.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return make_settings(tmp_path, f"sqlite:///{path}")


@pytest.fixture
def console_errors(page):
    """Script errors, Content-Security-Policy violations, missing files and server errors
    fail the test. (A 422 answering a form with errors is expected, so the browser's own
    "failed to load resource" notes are judged by status below instead.)"""
    errors: list[str] = []

    def on_console(msg):
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    def on_response(response):
        if response.status == 404 or response.status >= 500:
            errors.append(f"{response.status} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", on_response)
    yield errors
    assert errors == []


def log_in(page, email: str) -> None:
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def declare_fields(api) -> None:
    for body in (
        {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]},
        {"name": "renewal", "label": "Renewal date", "type": "date"},
        {"name": "vip", "label": "VIP", "type": "boolean"},
    ):
        assert api.post("/fields", body).status_code == 201


def test_marketer_imports_a_csv_through_the_mapping_step_and_sees_progress_and_errors(
    page, app, api, user_factory, settings, console_errors
):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    declare_fields(api)
    rows = "".join(f"person{i}@example.com,Person,{i},pro,Acme\n" for i in range(2500))
    bad = "not-an-email,Bad,Row,pro,Acme\nzoe@example.com,Zoë,Z,gold,Initech\n"
    csv_bytes = ("Email,Given,Family,Plan,Company name\n" + rows + bad).encode()

    log_in(page, "marketer@example.com")
    page.click("nav >> text=Contacts")
    page.click("text=Import CSV")
    screenshot(page, "import-upload")
    page.set_input_files(
        "#f-file", {"name": "people.csv", "mimeType": "text/csv", "buffer": csv_bytes}
    )
    page.click("text=Upload and map columns")
    page.wait_for_url("**/mapping")

    # Suggested from the header; the rest chosen (or ignored) by the marketer.
    assert page.input_value("#column-0") == "email"
    assert page.input_value("#column-3") == "attributes.plan"
    assert page.input_value("#column-1") == ""
    assert "person0@example.com" in page.inner_text("#mapping")
    page.select_option("#column-1", "first_name")
    page.select_option("#column-2", "last_name")
    page.check("#permission-consent")
    page.click("text=Preview again")
    page.wait_for_selector("#stored-preview")
    assert "first_name=Person" in page.inner_text("#stored-preview")
    assert "subscribed" in page.inner_text("#stored-preview")
    screenshot(page, "import-mapping")
    page.click("text=Start import")
    page.wait_for_url("**/contacts/import/*")

    # No worker yet: the job waits in the queue and the page says so.
    assert page.get_attribute("#progress-card", "data-poll") == "true"
    assert page.get_attribute("#import-progress", "value") == "0"
    assert "queued" in page.inner_text("#job-status")
    screenshot(page, "import-queued")
    polls: list[int] = []
    page.on("response", lambda r: polls.append(r.status) if "/progress" in r.url else None)

    worker = start_worker(settings)
    try:
        page.wait_for_selector("#import-summary", timeout=90_000)
    finally:
        worker.terminate()
        worker.wait(20)
    assert polls and set(polls) == {200}
    assert page.get_attribute("#import-progress", "value") == "100"
    summary = page.inner_text("#import-summary")
    assert "2,500\ncreated" in summary and "2\nfailed" in summary
    errors = page.inner_text("#import-errors")
    assert "Email" in errors and "Plan" in errors and "expected one of free, pro" in errors
    assert "Ignored columns: Company name" in page.inner_text("main")
    screenshot(page, "import-report")

    with page.expect_download() as download:
        page.click("text=Download as CSV")
    report = Path(download.value.path()).read_text()
    lines = report.strip().splitlines()
    assert lines[0] == "row,column,reason" and len(lines) == 3
    assert lines[1].startswith("2502,Email,") and lines[2].startswith("2503,Plan,")

    page.goto("/contacts?q=person1")
    assert "Person" in page.inner_text("#contacts")


def test_marketer_edits_a_contact_tags_it_and_merges_a_duplicate(
    page, app, api, user_factory, console_errors
):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    declare_fields(api)
    ana = api.post("/contacts", {"email": "ana.perez@gmail.com", "first_name": "Ana"}).json
    dup = api.post(
        "/contacts", {"email": "anaperez+shop@gmail.com", "tags": ["shopper"], "score": 5}
    ).json
    api.post(
        "/events",
        {
            "events": [
                {"name": "order_completed", "email": dup["email"], "properties": {"total": 42}}
            ]
        },
    )

    log_in(page, "marketer@example.com")
    page.goto(f"/contacts/{ana['id']}")
    screenshot(page, "contact-detail")
    page.click("text=Edit")
    page.fill("#f-email", "not an address")
    page.fill("#f-last_name", "Pérez")
    page.click("text=Save")
    assert page.get_attribute("#f-email", "aria-invalid") == "true"
    assert page.inner_text("#e-email")
    assert page.input_value("#f-last_name") == "Pérez"  # kept while fixing the error
    screenshot(page, "contact-edit-errors")
    page.fill("#f-email", "ana.perez@gmail.com")
    page.select_option("#f-attributes-plan", "pro")
    page.fill("#f-attributes-renewal", "2027-01-31")
    page.select_option("#f-attributes-vip", "true")
    page.select_option("#f-lifecycle_stage", "customer")
    screenshot(page, "contact-edit")
    page.click("text=Save")
    page.wait_for_url(f"**/contacts/{ana['id']}")
    assert page.get_by_role("status").inner_text() == "Saved."
    attributes = page.inner_text("#attributes")
    assert "Plan\tpro" in attributes and "Renewal date\t2027-01-31" in attributes
    assert "VIP\tYes" in attributes

    page.fill("#f-tag", "vip")
    page.keyboard.press("Enter")
    page.wait_for_selector("#tags .tag:has-text('vip')")
    page.click("button[aria-label='Remove tag vip']")
    page.wait_for_load_state()
    assert "No tags." in page.inner_text("#tags")

    page.goto("/contacts/duplicates")
    assert dup["email"] in page.inner_text("main")
    screenshot(page, "duplicates")
    page.goto(f"/contacts/{ana['id']}")
    page.click("text=Merge…")
    screenshot(page, "merge")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"button[aria-label='Merge {dup['email']} into this contact']")
    page.wait_for_url(f"**/contacts/{ana['id']}")
    assert "Merged anaperez+shop@gmail.com" in page.get_by_role("status").inner_text()
    assert "shopper" in page.inner_text("#tags")
    assert "order_completed" in page.inner_text("#timeline")
    assert api.get(f"/contacts/{dup['id']}").status_code == 404


def test_admin_creates_an_api_key_and_sees_it_only_once(page, app, user_factory, console_errors):
    user_factory("admin@example.com", PASSWORD, "admin")
    log_in(page, "admin@example.com")
    page.click("nav >> text=Settings")
    screenshot(page, "settings-senders")
    page.click("text=Add sender identity")
    page.fill("#f-name", "Newsletter")
    page.fill("#f-from_name", "Nurture Outdoor")
    page.fill("#f-from_email", "news@example.com")
    page.click("button:has-text('Add sender identity')")
    assert "news@example.com" in page.inner_text("#senders")
    page.click(".subnav >> text=Custom fields")
    screenshot(page, "settings-fields")
    page.click(".subnav >> text=Users and roles")
    screenshot(page, "settings-users")
    page.click(".subnav >> text=API keys")
    page.fill("#f-name", "Shop events")
    page.select_option("#f-role", "marketer")
    page.click("text=Create key")
    token = page.inner_text("#new-key").strip()
    assert token.startswith("nrt_")
    screenshot(page, "api-key-created")

    answer = page.request.get("/api/v1/contacts", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200
    page.click("text=Done")
    listing = page.inner_text("#api-keys")
    assert token not in page.content() and "Shop events" in listing
    screenshot(page, "settings-api-keys")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button[aria-label='Revoke Shop events']")
    assert "revoked" in page.inner_text("#api-keys")
    answer = page.request.get("/api/v1/contacts", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 401


def test_dashboard_charts_count_people_and_show_empty_states(
    page, app, api, user_factory, console_errors, sending
):
    if not VENDOR.exists():
        pytest.fail("web/static/vendor is missing: run `make vendor` (make test does)", False)
    user_factory("viewer@example.com", PASSWORD, "viewer")
    log_in(page, "viewer@example.com")
    assert page.is_visible("#engagement-empty")
    assert page.locator("#engagement-chart").count() == 0

    def email_event(name: str, i: int, **props):
        return {"name": name, "email": f"p{i}@example.com", "properties": props}

    # Six emails go out (the sends the dashboard counts are the outbox's messages) …
    from emailkit import make_contact, make_identity, make_template

    from automation.email.outbox import queue_message, send_due

    runtime = app.extensions["nurture"]
    with runtime.sessions() as s:
        version = make_template(s, sender_identity_id=make_identity(s)).version.id
        for i in range(6):
            queue_message(
                s,
                dedupe_key=f"dash:{i}",
                contact_id=make_contact(s, f"p{i}@example.com"),
                template_version_id=version,
            )
        s.commit()
    assert send_due(runtime.sessions, sending).outcomes == {"sent": 6}
    # … and people (and machines) engage with them.
    events = [email_event("email.opened", i, machine=False) for i in range(3)]
    events += [email_event("email.opened", i, machine=True) for i in range(4)]
    events += [email_event("email.clicked", 1), email_event("email.unsubscribed", 2)]
    assert api.post("/events", {"events": events}).json["created"] == len(events)
    page.reload()
    page.wait_for_selector("#engagement-chart[data-drawn=true]")
    page.wait_for_selector("#growth-chart[data-drawn=true]")
    totals = page.inner_text("#engagement-totals")
    assert "6\nsent" in totals and "3\nopens" in totals and "1\nclicks" in totals
    assert "email.opened" in page.inner_text("#recent-events")
    screenshot(page, "dashboard")
    page.click("text=7 days")
    page.wait_for_selector("#engagement-chart[data-drawn=true]")


def test_page_scripts_send_the_csrf_token_and_keyboard_users_get_around(
    page, app, api, user_factory, console_errors
):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    api.post("/contacts", {"email": "ana@example.com", "first_name": "Ana"})
    log_in(page, "marketer@example.com")

    created = page.evaluate(
        """() => Nurture.request('/api/v1/contacts',
               {method: 'POST', json: {email: 'js@example.com'}})"""
    )
    assert created["status"] == 201 and created["body"]["email"] == "js@example.com"
    forged = page.evaluate(
        """() => fetch('/api/v1/contacts', {method: 'POST', credentials: 'same-origin',
               headers: {'Content-Type': 'application/json'},
               body: JSON.stringify({email: 'forged@example.com'})}).then(r => r.status)"""
    )
    assert forged == 401

    page.goto("/contacts")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.type("ana")
    page.keyboard.press("Enter")
    page.wait_for_url("**q=ana**")
    assert page.locator("#contacts tbody tr").count() == 1
    page.select_option("select[name=status]", "subscribed")  # filters submit on change
    page.wait_for_url("**status=subscribed**")


@pytest.mark.parametrize("width", [1024, 768])
def test_pages_fit_laptop_and_tablet_widths(page, app, api, user_factory, width, console_errors):
    user_factory("admin@example.com", PASSWORD, "admin")
    declare_fields(api)
    contact = api.post(
        "/contacts",
        {
            "email": "a.very.long.address.for.layout.testing@subdomain.example.com",
            "first_name": "Ana",
            "tags": ["newsletter", "webinar-2026", "trial", "vip", "partner"],
            "attributes": {"plan": "pro"},
        },
    ).json
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page, "admin@example.com")
    for path, name in (
        ("/", "dashboard"),
        ("/contacts", "contacts"),
        (f"/contacts/{contact['id']}", "contact-detail"),
        (f"/contacts/{contact['id']}/edit", "contact-edit"),
        ("/contacts/import", "import"),
        ("/settings/users", "settings-users"),
        ("/sent-mail", "sent-mail"),
    ):
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, width, overflow)
        screenshot(page, f"{name}-{width}")


def test_admin_allows_a_site_origin_and_offers_a_topic(page, app, user_factory, console_errors):
    user_factory("admin@example.com", PASSWORD, "admin")
    log_in(page, "admin@example.com")
    page.click("nav >> text=Settings")
    page.click(".subnav >> text=Website")
    page.wait_for_url("**/settings/website")
    assert "No origin is allowed yet" in page.content()
    page.fill("#f-origin", "https://shop.example/cart")
    page.click("text=Allow origin")
    assert "no path" in page.inner_text("#e-origin")  # named under the field, not saved
    page.fill("#f-origin", "https://Shop.Example")
    page.click("text=Allow origin")
    assert "https://shop.example" in page.inner_text("#site-origins")
    assert "/t/nurture.js" in page.input_value("#tracking-snippet")
    page.fill("#f-label", "Product news")
    page.fill("#f-tag", "product-news")
    page.click("text=Add topic")
    assert "product-news" in page.inner_text("#topics")
    screenshot(page, "settings-website")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button[aria-label='Remove origin https://shop.example']")
    assert "Origin removed" in page.get_by_role("status").inner_text()
    assert page.locator("#site-origins").count() == 0
