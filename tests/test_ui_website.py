"""Settings → Website: admins allow site origins (which CORS and visitor identification
obey at once), marketers offer preference topics; bad input is named under its field and
nothing is saved; lower roles see the lists without the forms."""

from __future__ import annotations

from conftest import login
from sqlalchemy import select
from test_ui_forms import Form, field_error

from automation.tracking.models import PreferenceTopic, SiteOrigin

PASSWORD = "correct horse battery"


def _as(client, user_factory, role: str):
    email = f"{role}@example.com"
    user_factory(email, PASSWORD, role)
    login(client, email, PASSWORD)
    return Form(client)


def _origins(app) -> list[str]:
    with app.extensions["nurture"].sessions() as s:
        return list(s.scalars(select(SiteOrigin.origin).order_by(SiteOrigin.origin)))


def _topics(app) -> list[tuple[str, str]]:
    with app.extensions["nurture"].sessions() as s:
        return [(t.tag, t.label) for t in s.scalars(select(PreferenceTopic))]


def _preflight(client, origin: str) -> int:
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    return client.options("/t/collect", headers=headers).status_code


def test_an_admin_allows_an_origin_and_the_collect_endpoint_answers_it(app, client, user_factory):
    form = _as(client, user_factory, "admin")
    assert _preflight(client, "https://shop.example") == 403

    done = form.post("/settings/website/origins", {"origin": "HTTPS://Shop.Example:443/"})
    assert done.status_code == 302
    assert _origins(app) == ["https://shop.example"]  # stored normalised
    page = client.get("/settings/website").get_data(as_text=True)
    assert "<code>https://shop.example</code>" in page
    assert f"{app.extensions['nurture'].settings.base_url}/t/nurture.js" in page  # the snippet
    assert _preflight(client, "https://shop.example") == 204

    origin_id = next(iter(_origin_ids(app)))
    assert form.post(f"/settings/website/origins/{origin_id}/delete").status_code == 302
    assert _origins(app) == [] and _preflight(client, "https://shop.example") == 403
    again = form.post(f"/settings/website/origins/{origin_id}/delete", follow_redirects=True)
    assert "already removed" in again.get_data(as_text=True)


def _origin_ids(app) -> list[int]:
    with app.extensions["nurture"].sessions() as s:
        return list(s.scalars(select(SiteOrigin.id)))


def test_bad_or_duplicate_origins_are_named_and_nothing_is_saved(app, client, user_factory):
    form = _as(client, user_factory, "admin")
    for bad in ("https://shop.example/checkout", "ftp://shop.example", "", "javascript:alert(1)"):
        answer = form.post("/settings/website/origins", {"origin": bad})
        assert answer.status_code == 422, bad
        assert field_error(answer.get_data(as_text=True), "origin")
    assert _origins(app) == []

    form.post("/settings/website/origins", {"origin": "https://shop.example"})
    dup = form.post("/settings/website/origins", {"origin": "https://SHOP.example"})
    assert dup.status_code == 422
    html = dup.get_data(as_text=True)
    assert field_error(html, "origin") == "already allowed"
    assert 'value="https://SHOP.example"' in html  # what was typed stays in the form
    assert _origins(app) == ["https://shop.example"]


def test_a_marketer_edits_topics_but_not_origins(app, client, user_factory):
    form = _as(client, user_factory, "marketer")
    refused = form.post("/settings/website/origins", {"origin": "https://a.example"})
    assert refused.status_code == 403
    assert _origins(app) == []
    page = client.get("/settings/website").get_data(as_text=True)
    assert 'id="origin-form"' not in page and 'id="topic-form"' in page

    bad = form.post("/settings/website/topics", {"tag": "", "label": "x" * 201})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert field_error(html, "tag") and field_error(html, "label")
    assert _topics(app) == []

    assert (
        form.post(
            "/settings/website/topics", {"tag": "product-news", "label": "Product news"}
        ).status_code
        == 302
    )
    assert _topics(app) == [("product-news", "Product news")]
    dup = form.post("/settings/website/topics", {"tag": "product-news", "label": "Again"})
    assert dup.status_code == 422 and field_error(dup.get_data(as_text=True), "tag")

    with app.extensions["nurture"].sessions() as s:
        topic_id = s.scalar(select(PreferenceTopic.id))
    assert form.post(f"/settings/website/topics/{topic_id}/delete").status_code == 302
    assert _topics(app) == []


def test_a_viewer_sees_the_lists_without_forms(app, client, user_factory):
    admin = _as(client, user_factory, "admin")
    admin.post("/settings/website/origins", {"origin": "https://shop.example"})
    admin.post("/settings/website/topics", {"tag": "news", "label": "<b>News</b>"})
    client.post("/logout", data={"csrf_token": admin.token})

    viewer = _as(client, user_factory, "viewer")
    page = client.get("/settings/website")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "https://shop.example" in html and "&lt;b&gt;News&lt;/b&gt;" in html  # escaped
    assert 'id="origin-form"' not in html and 'id="topic-form"' not in html
    assert "Remove" not in html
    assert viewer.post("/settings/website/topics", {"tag": "t", "label": "T"}).status_code == 403
    assert _topics(app) == [("news", "<b>News</b>")]


def test_forms_without_a_csrf_token_are_refused(app, client, user_factory):
    _as(client, user_factory, "admin")
    answer = client.post("/settings/website/origins", data={"origin": "https://shop.example"})
    assert answer.status_code in (400, 403)
    assert _origins(app) == []
