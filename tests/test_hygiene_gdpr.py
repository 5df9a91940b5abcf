from __future__ import annotations

import io

from sqlalchemy import func, select

from automation.contacts.importer import ImportPermission, import_contacts
from automation.contacts.models import Contact, Event, ImportBasis
from automation.contacts.suppressions import Suppression


def test_merge_moves_events_tags_and_attributes_to_the_survivor(api):
    api.post("/fields", {"name": "plan", "label": "Plan", "type": "text"})
    api.post("/fields", {"name": "city", "label": "City", "type": "text"})
    a = api.post(
        "/contacts",
        {"email": "ana@example.com", "attributes": {"plan": "pro"}, "tags": ["vip", "shared"]},
    ).json
    b = api.post(
        "/contacts",
        {
            "email": "ana.work@example.com",
            "first_name": "Ana",
            "attributes": {"plan": "free", "city": "Lyon"},
            "tags": ["shared", "webinar"],
        },
    ).json
    api.post(
        "/events",
        {
            "events": [
                {"name": "page_viewed", "email": "ana.work@example.com"},
                {"name": "page_viewed", "email": "ana@example.com"},
            ]
        },
    )
    merged = api.post(f"/contacts/{a['id']}/merge", {"duplicate_id": b["id"]})
    assert merged.status_code == 200, merged.json
    body = merged.json
    assert body["attributes"] == {"plan": "pro", "city": "Lyon"}  # survivor wins, gaps filled
    assert body["tags"] == ["shared", "vip", "webinar"]
    assert body["first_name"] == "Ana"
    assert api.get(f"/contacts/{b['id']}").status_code == 404
    assert len(api.get(f"/contacts/{a['id']}/events").json) == 2
    assert api.post(f"/contacts/{a['id']}/merge", {"duplicate_id": a["id"]}).status_code == 422
    assert api.post(f"/contacts/{a['id']}/merge", {"duplicate_id": 99999}).status_code == 404


def test_find_duplicates_groups_same_inbox_and_same_name(api):
    for body in (
        {"email": "ana.perez@gmail.com"},
        {"email": "anaperez+news@googlemail.com"},
        {"email": "jo@acme.example", "first_name": "Jo", "last_name": "Smith"},
        {"email": "j.smith@acme.example", "first_name": "jo", "last_name": "SMITH"},
        {"email": "unique@example.com", "first_name": "Jo", "last_name": "Smith"},
    ):
        api.post("/contacts", body)
    groups = api.get("/contacts/duplicates").json
    as_sets = {(g["reason"], frozenset(g["emails"])) for g in groups}
    assert (
        "same inbox",
        frozenset({"ana.perez@gmail.com", "anaperez+news@googlemail.com"}),
    ) in as_sets
    assert (
        "same name and domain",
        frozenset({"jo@acme.example", "j.smith@acme.example"}),
    ) in as_sets
    assert len(groups) == 2


def test_delete_unused_tags(api):
    api.post("/contacts", {"email": "a@example.com", "tags": ["keep", "drop"]})
    contact_id = api.get("/contacts").json["items"][0]["id"]
    api.patch(f"/contacts/{contact_id}", {"remove_tags": ["drop"]})
    assert api.delete("/tags/unused").json == {"deleted": ["drop"]}
    assert api.get("/tags").json == [{"name": "keep", "contacts": 1}]


def test_gdpr_export_holds_profile_consents_and_events(api):
    c = api.post(
        "/contacts", {"email": "g@example.com", "consent_text": "Yes please", "tags": ["t"]}
    ).json
    api.post(
        "/events",
        {
            "events": [
                {"name": "order_completed", "email": "g@example.com", "properties": {"total": 9}}
            ]
        },
    )
    export = api.get(f"/contacts/{c['id']}/export").json
    assert export["profile"]["email"] == "g@example.com"
    assert export["tags"] == ["t"]
    assert export["events"][0]["properties"] == {"total": 9}
    assert export["consent_records"][0]["consent_text"] == "Yes please"


def test_erase_removes_everything_and_blocks_reimport_mailing(api, app):
    c = api.post("/contacts", {"email": "erase.me@example.com", "tags": ["t"]}).json
    api.post("/events", {"events": [{"name": "x", "email": "erase.me@example.com"}]})
    assert api.as_role("marketer").post(f"/contacts/{c['id']}/erase").status_code == 403
    assert api.post(f"/contacts/{c['id']}/erase").status_code == 204
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 0
        assert s.scalar(select(func.count()).select_from(Contact)) == 0
        suppression = s.scalar(select(Suppression))
        assert suppression.email is None and suppression.reason.value == "erased"
        from automation.addresses import email_hash

        assert suppression.email_hash == email_hash("erase.me@example.com")
        # Re-importing the address creates no contact, and the hashed suppression stays.
        report = import_contacts(
            s,
            io.BufferedReader(io.BytesIO(b"Email\nErase.Me@example.com\n")),
            permission=ImportPermission(ImportBasis.CONSENT),
        )
        s.commit()
        assert (report.created, report.failed) == (0, 1)
        assert s.scalar(select(func.count()).select_from(Contact)) == 0
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1
