"""The segments, templates and outbox pages through the Flask test client: each form's bad
input answered at its field, viewers reading without edit controls, the draft preview's
errors carrying their line."""

from __future__ import annotations

import io
import re

import pytest
from conftest import login

PASSWORD = "correct horse battery"


@pytest.fixture
def marketer(app, user_factory):
    user_factory("marketer@example.com", PASSWORD, "marketer")
    client = app.test_client()
    assert login(client, "marketer@example.com", PASSWORD).status_code == 302
    return client


def token_of(client, path: str = "/segments") -> str:
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


@pytest.fixture
def lists(api):
    for email in ("a@example.com", "b@example.com"):
        assert api.post("/contacts", {"email": email}).status_code == 201
    static = api.post("/segments", {"name": "Friends", "kind": "static"}).get_json()
    dynamic = api.post(
        "/segments",
        {
            "name": "Subscribed",
            "conditions": [{"field": "status", "operator": "equals", "value": "subscribed"}],
        },
    ).get_json()
    return static["id"], dynamic["id"]


def upload(client, segment_id: int, body: bytes | None, mode: str = "add"):
    data: dict = {"csrf_token": token_of(client), "mode": mode}
    if body is not None:
        data["file"] = (io.BytesIO(body), "members.csv")
    return client.post(
        f"/segments/{segment_id}/members", data=data, content_type="multipart/form-data"
    )


def test_segment_list_shows_each_segment_with_its_member_count(marketer, lists):
    html = marketer.get("/segments").get_data(as_text=True)
    assert "Friends" in html and "Subscribed" in html and "static" in html


def test_member_upload_without_a_file_is_refused_at_the_file_field(marketer, lists):
    response = upload(marketer, lists[0], None)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "choose a CSV file" in html and 'class="field invalid"' in html


def test_member_upload_with_an_unknown_mode_is_refused_at_the_mode_field(marketer, lists):
    response = upload(marketer, lists[0], b"email\na@example.com\n", mode="merge")
    assert response.status_code == 422
    assert "expected add, remove or replace" in response.get_data(as_text=True)


def test_member_upload_to_a_dynamic_segment_is_refused(marketer, lists):
    response = upload(marketer, lists[1], b"email\na@example.com\n")
    assert response.status_code == 422
    assert "dynamic" in response.get_data(as_text=True)


def test_member_upload_without_an_email_or_id_column_names_the_problem(marketer, lists):
    response = upload(marketer, lists[0], b"name\nAna\n")
    assert response.status_code == 422
    assert "email" in response.get_data(as_text=True)


def test_member_upload_adds_contacts_and_reports_the_rows_matching_none(marketer, lists, api):
    response = upload(marketer, lists[0], b"email\na@example.com\nnobody@example.com\n")
    assert response.status_code == 302
    page = marketer.get(response.headers["Location"]).get_data(as_text=True)
    assert "1 added" in page and "nobody@example.com" in page
    assert api.get(f"/segments/{lists[0]}").get_json()["member_count"] == 1
    removed = upload(marketer, lists[0], b"email\na@example.com\n", mode="remove")
    assert removed.status_code == 302
    assert api.get(f"/segments/{lists[0]}").get_json()["member_count"] == 0


def test_viewers_read_the_builder_without_save_or_member_controls(app, user_factory, lists):
    user_factory("viewer@example.com", PASSWORD, "viewer")
    client = app.test_client()
    login(client, "viewer@example.com", PASSWORD)
    html = client.get(f"/segments/{lists[0]}").get_data(as_text=True)
    assert 'id="save-segment"' not in html and 'name="file"' not in html
    assert 'data-readonly="true"' in html
    assert client.get("/segments/new").status_code == 403
    assert upload(client, lists[0], b"email\na@example.com\n").status_code == 403


def test_deleting_a_segment_another_one_uses_is_refused_with_a_message(marketer, lists, api):
    api.post("/segments", {"name": "Uses friends", "conditions": [{"segment": lists[0]}]})
    response = marketer.post(
        f"/segments/{lists[0]}/delete", data={"csrf_token": token_of(marketer)}
    )
    assert response.status_code == 302
    page = marketer.get(response.headers["Location"]).get_data(as_text=True)
    assert "Uses friends" in page and 'class="flash error"' in page
    assert api.get(f"/segments/{lists[0]}").status_code == 200


def test_the_builder_carries_the_field_catalog_with_custom_fields(marketer, api):
    api.post(
        "/fields", {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]}
    )
    html = marketer.get("/segments/new").get_data(as_text=True)
    data = re.search(r'id="segment-data">(.*?)</script>', html, flags=re.S).group(1)
    assert '"attributes.plan"' in data and '"pro"' in data and "within_last_days" in data


def test_draft_preview_reports_errors_with_their_line_and_renders_valid_drafts(marketer):
    headers = {"X-CSRFToken": token_of(marketer, "/templates")}
    bad = "<mjml><mj-body>\n<mj-section><mj-column>\n<mj-text>{{ contact.nope }}</mj-text>"
    bad += "</mj-column></mj-section></mj-body></mjml>"
    answer = marketer.post(
        "/api/v1/templates/preview-draft",
        json={"subject": "Hi", "mjml": bad, "kind": "transactional"},
        headers=headers,
    ).get_json()
    assert answer["valid"] is False and answer["html"] is None
    assert answer["errors"][0]["path"] == "mjml" and answer["errors"][0]["line"] == 3
    good = bad.replace("contact.nope", "contact.first_name")
    answer = marketer.post(
        "/api/v1/templates/preview-draft",
        json={"subject": "Hi {{ contact.first_name }}", "mjml": good, "kind": "transactional"},
        headers=headers,
    ).get_json()
    assert answer["valid"] is True and answer["subject"] == "Hi Ada" and "Ada" in answer["html"]


def test_draft_preview_for_a_missing_contact_names_contact_id(marketer):
    response = marketer.post(
        "/api/v1/templates/preview-draft",
        json={
            "subject": "Hi",
            "mjml": "<mjml><mj-body></mj-body></mjml>",
            "contact_id": 999,
            "kind": "transactional",
        },
        headers={"X-CSRFToken": token_of(marketer, "/templates")},
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["path"] == "contact_id"


def test_draft_preview_needs_the_csrf_header_from_a_browser_session(marketer):
    response = marketer.post(
        "/api/v1/templates/preview-draft", json={"subject": "Hi", "mjml": "<mjml></mjml>"}
    )
    assert response.status_code in (400, 401, 403)  # a cookie without the token is no login


def test_template_editor_lists_versions_and_offers_variables(marketer, api):
    mjml = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi</mj-text></mj-column>"
    mjml += "</mj-section></mj-body></mjml>"
    created = api.post(
        "/templates",
        {"name": "Receipt", "subject": "Thanks", "mjml": mjml, "kind": "transactional"},
    )
    assert created.status_code == 201, created.get_json()
    template_id = created.get_json()["id"]
    api.post(
        f"/templates/{template_id}/versions",
        {"subject": "Thanks again", "mjml": mjml, "kind": "transactional"},
    )
    html = marketer.get(f"/templates/{template_id}").get_data(as_text=True)
    assert "Thanks again" in html and 'id="versions"' in html
    assert "contact.first_name" in html and 'sandbox=""' in html
    first = re.search(r'\?version=(\d+)">1<', html).group(1)
    older = marketer.get(f"/templates/{template_id}?version={first}").get_data(as_text=True)
    assert "(older; saving makes it the latest)" in older
    assert marketer.get(f"/templates/{template_id}?version=99999").status_code == 404
    assert "Receipt" in marketer.get("/templates").get_data(as_text=True)


def test_outbox_ignores_an_unknown_status_filter_and_resend_of_a_missing_message_is_404(
    marketer,
):
    html = marketer.get("/outbox?status=bogus").get_data(as_text=True)
    assert "Unknown status filter ignored" in html
    assert marketer.get("/outbox?status=unknown").status_code == 200
    response = marketer.post(
        "/outbox/12345/resend", data={"csrf_token": token_of(marketer, "/outbox")}
    )
    assert response.status_code == 404
