from __future__ import annotations

import pytest
from conftest import screenshot

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(tmp_path):
    # Browser tests run against SQLite: the subject is the page, not the database.
    from conftest import make_settings

    path = tmp_path / "b.sqlite"
    from automation.db import Base, make_engine

    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return make_settings(tmp_path, f"sqlite:///{path}")


def test_marketer_logs_in_sees_dashboard_and_searches_contacts(page, app, user_factory, api):
    email, password = user_factory()
    api.post("/contacts", {"email": "ana@example.com", "first_name": "Ana", "tags": ["vip"]})
    api.post("/contacts", {"email": "ben@example.com", "first_name": "Ben"})
    page.goto("/contacts")
    assert "/login" in page.url
    page.fill("#email", email)
    page.fill("#password", "wrong password")
    page.click("button[type=submit]")
    assert page.get_by_role("alert").inner_text() == "Wrong email or password."
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/contacts")
    screenshot(page, "contacts")
    page.fill("input[name=q]", "ana")
    page.keyboard.press("Enter")
    page.wait_for_url("**q=ana**")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 1
    assert "ana@example.com" in rows.first.inner_text()
    page.click("text=ana@example.com")
    assert page.locator("h1").inner_text().startswith("Ana")
    page.goto("/")
    screenshot(page, "dashboard")
    assert page.locator(".tile .num").first.inner_text() == "2"
    page.click("text=Log out")
    page.wait_for_url("**/login")
