from __future__ import annotations

import pytest


@pytest.fixture
def fields(api):
    for body in (
        {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]},
        {"name": "seats", "label": "Seats", "type": "number"},
        {"name": "renewal_date", "label": "Renewal", "type": "date"},
        {"name": "vip", "label": "VIP", "type": "boolean"},
    ):
        assert api.post("/fields", body).status_code == 201


def test_create_read_update_delete_contact(api, fields):
    created = api.post(
        "/contacts",
        {
            "email": "  Ana.Perez@Example.COM ",
            "first_name": "Ana",
            "time_zone": "Europe/Madrid",
            "attributes": {"plan": "pro", "seats": 12, "renewal_date": "2027-01-31", "vip": True},
            "tags": ["trial", "vip"],
            "lifecycle_stage": "lead",
        },
    )
    assert created.status_code == 201, created.json
    contact = created.json
    assert contact["email"] == "ana.perez@example.com"
    assert contact["tags"] == ["trial", "vip"]
    assert contact["attributes"]["seats"] == 12

    got = api.get(f"/contacts/{contact['id']}").json
    assert got["time_zone"] == "Europe/Madrid"

    patched = api.patch(
        f"/contacts/{contact['id']}",
        {
            "attributes": {"seats": 15, "vip": None},
            "add_tags": ["customer"],
            "remove_tags": ["trial"],
            "score": 40,
        },
    )
    assert patched.status_code == 200, patched.json
    assert patched.json["attributes"] == {"plan": "pro", "seats": 15, "renewal_date": "2027-01-31"}
    assert patched.json["tags"] == ["customer", "vip"]
    assert patched.json["score"] == 40

    assert api.delete(f"/contacts/{contact['id']}").status_code == 204
    assert api.get(f"/contacts/{contact['id']}").status_code == 404


def test_email_is_unique_after_normalisation(api):
    assert api.post("/contacts", {"email": "bob@example.com"}).status_code == 201
    dup = api.post("/contacts", {"email": "BOB@example.com"})
    assert dup.status_code == 409
    assert dup.json["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        ({"email": "not-an-email"}, "email", "not a valid email"),
        ({"email": "a@example.com", "time_zone": "Mars/Olympus"}, "time_zone", "unknown time zone"),
        (
            {"email": "a@example.com", "attributes": {"seats": "many"}},
            "attributes.seats",
            "expected a number",
        ),
        (
            {"email": "a@example.com", "attributes": {"plan": "gold"}},
            "attributes.plan",
            "expected one of free, pro",
        ),
        (
            {"email": "a@example.com", "attributes": {"renewal_date": "31/01/2027"}},
            "attributes.renewal_date",
            "YYYY-MM-DD",
        ),
        (
            {"email": "a@example.com", "attributes": {"shoe_size": 42}},
            "attributes.shoe_size",
            "undeclared attribute",
        ),
        ({"email": "a@example.com", "lifecycle_stage": "prospect"}, "lifecycle_stage", "Input"),
        ({"email": "a@example.com", "unknown": 1}, "unknown", "Extra inputs"),
    ],
)
def test_bad_contact_input_names_the_field(api, fields, body, path, fragment):
    response = api.post("/contacts", body)
    assert response.status_code == 422
    details = response.json["error"]["details"]
    assert any(d["path"] == path and fragment in d["message"] for d in details), details
    assert api.get("/contacts").json["total"] == 0  # nothing half-written


def test_body_that_is_not_a_json_object_is_rejected(api):
    for payload in ("[1, 2]", '"text"', "{not json"):
        response = api.client.post(
            "/api/v1/contacts",
            data=payload,
            headers={**api._headers(), "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json["error"]["details"][0]["path"] == "body"


def test_wrong_or_missing_api_key_gets_401(client, api):
    assert client.get("/api/v1/contacts").status_code == 401
    bad = client.get("/api/v1/contacts", headers={"Authorization": "Bearer nrt_abc_def"})
    assert bad.status_code == 401
    assert bad.json["error"]["code"] == "unauthorized"
    tampered = api.token[:-2] + ("AA" if not api.token.endswith("AA") else "BB")
    assert (
        client.get("/api/v1/contacts", headers={"Authorization": f"Bearer {tampered}"}).status_code
        == 401
    )


def test_revoked_api_key_stops_working(api):
    viewer = api.as_role("viewer")
    assert viewer.get("/contacts").status_code == 200
    key_id = next(k["id"] for k in api.get("/api-keys").json if k["role"] == "viewer")
    assert api.delete(f"/api-keys/{key_id}").status_code == 204
    assert viewer.get("/contacts").status_code == 401


def test_viewer_cannot_write_marketer_cannot_admin(api):
    viewer = api.as_role("viewer")
    assert viewer.get("/contacts").status_code == 200
    denied = viewer.post("/contacts", {"email": "x@example.com"})
    assert denied.status_code == 403
    assert denied.json["error"]["code"] == "forbidden"
    marketer = api.as_role("marketer")
    assert marketer.post("/contacts", {"email": "x@example.com"}).status_code == 201
    assert marketer.post("/fields", {"name": "x", "label": "X", "type": "text"}).status_code == 403
    assert marketer.get("/api-keys").status_code == 403


def test_api_key_is_shown_once_and_stored_hashed(app, api):
    from sqlalchemy import select

    from automation.accounts.models import ApiKey

    created = api.post("/api-keys", {"name": "zapier", "role": "marketer"})
    token = created.json["token"]
    assert token.startswith("nrt_")
    assert "token" not in api.get("/api-keys").json[-1]
    with app.extensions["nurture"].sessions() as s:
        stored = s.scalars(select(ApiKey.key_hash)).all()
    assert token not in stored and all(len(h) == 64 for h in stored)


def test_search_filters_and_paginates(api):
    for i in range(7):
        api.post(
            "/contacts",
            {
                "email": f"p{i}@example.com",
                "first_name": "Pat" if i < 3 else "Sam",
                "tags": ["even"] if i % 2 == 0 else [],
                "status": "unsubscribed" if i == 6 else "subscribed",
            },
        )
    page = api.get("/contacts?q=pat&per_page=2").json
    assert page["total"] == 3 and len(page["items"]) == 2
    assert api.get("/contacts?tag=even").json["total"] == 4
    assert api.get("/contacts?status=unsubscribed").json["total"] == 1
    bad = api.get("/contacts?per_page=100000")
    assert bad.status_code == 422
    assert bad.json["error"]["details"][0]["path"] == "query.per_page"


def test_status_changes_record_consent_and_refuse_illegal_moves(api):
    contact = api.post(
        "/contacts",
        {"email": "c@example.com", "status": "pending", "consent_text": "Send me the newsletter"},
    ).json
    confirmed = api.post(f"/contacts/{contact['id']}/confirm")
    assert confirmed.json["status"] == "subscribed"
    assert confirmed.json["confirmed_at"] is not None
    assert (
        api.post(f"/contacts/{contact['id']}/status", {"status": "complained"}).json["status"]
        == "complained"
    )
    refused = api.post(f"/contacts/{contact['id']}/status", {"status": "subscribed"})
    assert refused.status_code == 422
    assert refused.json["error"]["details"][0]["path"] == "status"
    export = api.get(f"/contacts/{contact['id']}/export").json
    moves = [(r["status_from"], r["status_to"]) for r in export["consent_records"]]
    assert moves == [(None, "pending"), ("pending", "subscribed"), ("subscribed", "complained")]
    assert export["consent_records"][0]["consent_text"] == "Send me the newsletter"


def test_unknown_api_route_is_json_404(api):
    response = api.get("/nope")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_deleting_a_custom_field(api, fields):
    assert api.delete("/fields/seats").status_code == 204
    assert [f["name"] for f in api.get("/fields").json] == ["plan", "renewal_date", "vip"]
    missing = api.delete("/fields/seats")
    assert missing.status_code == 404 and "seats" in missing.json["error"]["message"]
    bad = api.post("/fields", {"name": "Bad Name", "label": "x", "type": "text"})
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "name"
    choice = api.post("/fields", {"name": "tier", "label": "Tier", "type": "choice"})
    assert choice.status_code == 422 and choice.json["error"]["details"][0]["path"] == "options"


def test_a_custom_field_in_use_cannot_be_deleted_and_each_user_is_named(api):
    for name, kind in (("plan", "text"), ("renewal_date", "date"), ("nickname", "text")):
        assert api.post("/fields", {"name": name, "label": name, "type": kind}).status_code == 201
    api.post("/fields", {"name": "unused", "label": "Unused", "type": "text"})
    pro = [{"field": "attributes.plan", "operator": "equals", "value": "pro"}]
    assert api.post("/segments", {"name": "Pro", "conditions": pro}).status_code == 201
    created = api.post(
        "/workflows",
        {
            "name": "Renewals",
            "trigger": {"type": "date", "field": "renewal_date", "offset_days": -7},
            "start": "u",
            "nodes": [{"id": "u", "type": "update_contact", "set": {"attributes.plan": "pro"}}],
        },
    ).get_json()
    assert api.post(f"/workflows/{created['id']}/publish").status_code == 201
    form = {
        "name": "Hello",
        "fields": [{"name": "email", "label": "Email"}, {"name": "nickname", "label": "Nick"}],
    }
    assert api.post("/forms", form).status_code == 201

    def refusal(name: str) -> str:
        response = api.delete(f"/fields/{name}")
        assert response.status_code == 409, response.get_json()
        return str(response.get_json()["error"]["message"])

    assert refusal("plan") == (
        "custom field 'plan' is used by segment 'Pro', workflow 'Renewals'; change those first"
    )
    assert "workflow 'Renewals'" in refusal("renewal_date")
    assert "form 'Hello'" in refusal("nickname")
    assert api.delete("/fields/unused").status_code == 204
    assert {f["name"] for f in api.get("/fields").get_json()} == {
        "plan",
        "renewal_date",
        "nickname",
    }
