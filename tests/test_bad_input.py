"""Ordinary bad input gets a 4xx naming the field, never a 500 (issue 17, items 8 and 9):
ids out of range in paths, bodies and pagination; NUL characters and lone surrogates in
text; NaN in JSON; deeply nested bodies; event properties too deep or too large, and
reads of such properties stored before they were bounded."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import login, make_settings
from emailkit import MJML

from automation.contacts.models import Event
from automation.tracking.bounces import signature
from web.api.routing import OPERATIONS

SECRET = "webhook-secret-" + "s" * 20
OUT_OF_RANGE = [str(2**31), str(2**63), "1" + "0" * 30, "9" * 5000]


@pytest.fixture
def settings(tmp_path, postgres_url):
    """PostgreSQL: it is the database that refuses what SQLite lets through."""
    return make_settings(tmp_path, postgres_url, NURTURE_WEBHOOK_SECRET=SECRET)


def _raw(api: Any, method: str, path: str, body: bytes, **headers: str) -> Any:
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}
    return api.client.open("/api/v1" + path, method=method, data=body, headers=headers)


def _paths(op_path: str, value: str) -> str:
    return re.sub(r"<(?:int|bigid):\w+>", value, re.sub(r"<(\w+)>", "x", op_path))


def test_ids_out_of_range_in_api_paths_are_404_on_every_operation(api):
    answered: set[int] = set()
    for op in OPERATIONS:
        if "<int:" not in op.path and "<bigid:" not in op.path:
            continue
        for value in OUT_OF_RANGE:
            response = api.client.open(
                "/api/v1" + _paths(op.path, value),
                method=op.method,
                json={},
                headers={"Authorization": f"Bearer {api.token}"},
            )
            answered.add(response.status_code)
            # A body is read before the row is looked up: an empty one may be a 422 first.
            allowed = {404} if op.body is None and op.upload is None else {404, 422}
            assert response.status_code in allowed, (op.method, op.path, value, response.json)
            assert response.is_json
    assert 404 in answered


def test_negative_ids_in_api_paths_are_404(api):
    assert api.get("/contacts/-1").status_code == 404
    assert api.delete("/templates/-5").status_code == 404


def test_ids_out_of_range_in_pages_are_404(app, client, user_factory):
    email, password = user_factory(role="admin", email="admin@example.com")
    login(client, email, password)
    rules = [
        r
        for r in app.url_map.iter_rules()
        if not r.rule.startswith("/api/")
        and "GET" in r.methods
        and any(type(c).__name__.endswith("IdConverter") for c in r._converters.values())
    ]
    assert len(rules) > 10
    for rule in rules:
        for value in (2**31, 2**63, 10**30):
            path = re.sub(r"<(?:int|bigid):\w+>", str(value), re.sub(r"<(\w+)>", "x", rule.rule))
            response = client.get(path)
            assert response.status_code == 404, (rule.rule, value, response.status_code)


def test_ids_out_of_range_in_bodies_are_refused_naming_the_field(api):
    contact = api.post("/contacts", {"email": "ada@example.com"}).json
    response = api.post(f"/contacts/{contact['id']}/merge", {"duplicate_id": 2**63})
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "duplicate_id"

    response = api.post("/campaigns/audience", {"include_segment_ids": [2**31]})
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "include_segment_ids[0]"

    response = api.post("/workflows/1/enrollments", {"contact_ids": [1, -3]})
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "contact_ids[1]"


@pytest.mark.parametrize("path", ["/messages", "/contacts", "/workflows/1/enrollments"])
def test_pages_out_of_range_are_refused_naming_the_parameter(api, path):
    response = api.get(f"{path}?page={2**62}")
    assert response.status_code == 422, response.json
    assert response.json["error"]["details"][0]["path"] == "query.page"


def test_query_ids_out_of_range_are_refused(api):
    response = api.get(f"/messages?contact_id={2**63}&template_id={2**31}")
    assert response.status_code == 422
    paths = {d["path"] for d in response.json["error"]["details"]}
    assert paths == {"query.contact_id", "query.template_id"}


@pytest.mark.parametrize(
    "bad, message",
    [("a\x00b", "NUL"), ("a\ud800b", "surrogate"), ("\udfff", "surrogate")],
)
def test_nul_and_lone_surrogates_in_json_text_are_refused_naming_the_field(api, bad, message):
    body = json.dumps({"email": "ada@example.com", "first_name": bad, "tags": ["ok", bad]})
    response = _raw(api, "POST", "/contacts", body.encode())
    assert response.status_code == 422
    details = {d["path"]: d["message"] for d in response.json["error"]["details"]}
    assert set(details) == {"first_name", "tags[1]"}
    assert message in details["first_name"]
    assert api.get("/contacts").json["total"] == 0

    body = json.dumps({"events": [{"name": "x", "email": "a@example.com", "properties": {bad: 1}}]})
    response = _raw(api, "POST", "/events", body.encode())
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"].startswith("events[0].properties.")


def test_nul_in_query_strings_form_fields_and_file_names_is_refused(api, client):
    response = api.get("/contacts?q=a%00b")
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "query.q"

    response = api.delete("/fields/a%00b")  # names no field, as a too-large id names no row
    assert response.status_code == 404

    response = api.client.post(
        "/api/v1/imports",
        data={"file": (__import__("io").BytesIO(b"email\na@example.com\n"), "a\x00.csv")},
        headers={"Authorization": f"Bearer {api.token}"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "file.filename"

    form = api.post(
        "/forms", {"name": "Newsletter", "fields": [{"name": "email", "label": "Email"}]}
    ).json
    response = client.post(f"/f/{form['public_id']}", data={"email": "x\x00@example.com"})
    assert response.status_code == 422
    assert "email" in response.get_data(as_text=True)
    response = client.post(
        f"/f/{form['public_id']}",
        data={"email": "x@example.com", "first_name": "\x00"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "first_name"
    assert api.get("/contacts").json["total"] == 0


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_event_properties_are_refused(api, constant):
    body = (
        '{"events": [{"name": "viewed", "email": "a@example.com", "properties": {"v": '
        + constant
        + "}}]}"
    )
    response = _raw(api, "POST", "/events", body.encode())
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "body"
    assert constant.lstrip("-") in response.json["error"]["message"]
    assert api.get("/contacts").json["total"] == 0


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
def test_deeply_nested_bodies_get_a_json_4xx_on_the_api_and_the_webhook(api, client, depth):
    body = ("[" * depth + "]" * depth).encode()
    response = _raw(api, "POST", "/contacts", body)
    assert response.status_code == 422
    assert response.is_json and "nested" in response.json["error"]["message"]

    response = client.post(
        "/webhooks/feedback",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Nurture-Signature": signature(SECRET, body),
        },
    )
    assert response.status_code == 422
    assert response.is_json and response.json["error"]["details"][0]["path"] == "body"


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def _event(properties: Any) -> dict[str, Any]:
    return {"name": "viewed", "email": "ada@example.com", "properties": properties}


def test_event_properties_deeper_than_32_levels_are_refused_and_32_accepted(api):
    result = api.post("/events", {"events": [_event(_nested(32)), _event(_nested(33))]}).json
    assert [r["status"] for r in result["results"]] == ["created", "error"]
    error = result["results"][1]["errors"][0]
    assert error["path"] == "events[1].properties"
    assert "32 levels" in error["message"]


def test_event_properties_over_32_kb_are_refused_naming_the_field(api):
    result = api.post("/events", {"events": [_event({"blob": "x" * 33_000})]}).json
    assert result["results"][0]["status"] == "error"
    assert result["results"][0]["errors"][0]["path"] == "events[0].properties"
    assert "32 KB" in result["results"][0]["errors"][0]["message"]
    assert api.get("/contacts").json["total"] == 0


def test_a_batch_over_500_kb_is_413_and_stores_nothing(api):
    events = [_event({"blob": "x" * 30_000}) for _ in range(20)]
    response = api.post("/events", {"events": events})
    assert response.status_code == 413
    assert response.json["error"]["details"][0]["path"] == "body"
    assert "500 KB" in response.json["error"]["message"]
    assert api.get("/contacts").json["total"] == 0


def test_too_deep_properties_stored_earlier_do_not_break_the_events_api_or_export(api, app):
    contact = api.post("/contacts", {"email": "ada@example.com"}).json
    # Written as an older release did, before properties were bounded at write.
    with app.extensions["nurture"].sessions() as s:
        s.add(
            Event(
                contact_id=contact["id"],
                name="legacy",
                properties={"deep": _nested(400)},
                occurred_at=datetime.now(UTC),
                received_at=datetime.now(UTC),
                source="api",
            )
        )
        s.commit()
    events = api.get(f"/contacts/{contact['id']}/events")
    assert events.status_code == 200
    assert events.json[0]["name"] == "legacy"
    export = api.get(f"/contacts/{contact['id']}/export")
    assert export.status_code == 200
    assert export.json["events"][0]["name"] == "legacy"


def test_ids_and_pages_out_of_range_in_page_queries_and_forms_are_no_500(
    api, app, client, user_factory
):
    email, password = user_factory(role="admin", email="admin@example.com")
    login(client, email, password)
    contact = api.post("/contacts", {"email": "ada@example.com"}).json
    mjml = MJML.replace('{{ contact.attributes.plan | default("free") }}', "free")
    template = api.post("/templates", {"name": "Hello", "subject": "Hi", "mjml": mjml}).json
    assert "id" in template, template
    huge = str(2**63)
    assert client.get(f"/contacts/{contact['id']}?page={huge}").status_code == 200
    assert client.get(f"/outbox?page={huge}").status_code == 200
    assert client.get(f"/templates/{template['id']}?version={2**31}").status_code == 404

    page = client.get(f"/contacts/{contact['id']}/merge").get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    response = client.post(
        f"/contacts/{contact['id']}/merge", data={"duplicate_id": huge, "csrf_token": token}
    )
    assert response.status_code == 422
    assert "no longer exists" in response.get_data(as_text=True)
    assert api.get(f"/contacts/{contact['id']}").status_code == 200
