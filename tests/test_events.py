from __future__ import annotations

import threading

import pytest


def test_batch_stores_good_items_and_reports_bad_ones_by_index(api):
    api.post("/contacts", {"email": "known@example.com", "external_id": "u-1"})
    response = api.post(
        "/events",
        {
            "events": [
                {
                    "name": "order_completed",
                    "email": "known@example.com",
                    "properties": {"total": 30},
                    "occurred_at": "2026-11-01T10:00:00Z",
                },
                {"name": "page_viewed", "email": "not-an-email"},
                {"name": "page_viewed"},
                {"name": "signed_up", "email": "NEW@example.com"},
                {"name": "page_viewed", "external_id": "u-1"},
                {"name": "page_viewed", "external_id": "nobody"},
                "not an object",
                {"name": "bad name!", "email": "known@example.com"},
                {"name": "x", "email": "known@example.com", "occurred_at": "2026-11-01T10:00:00"},
            ]
        },
    )
    assert response.status_code == 200
    body = response.json
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [
        "created",
        "error",
        "error",
        "created",
        "created",
        "error",
        "error",
        "error",
        "error",
    ]
    paths = {r["index"]: r["errors"][0]["path"] for r in body["results"] if r["errors"]}
    assert paths == {
        1: "events[1].email",
        2: "events[2].email",
        5: "events[5].external_id",
        6: "events[6]",
        7: "events[7].name",
        8: "events[8].occurred_at",
    }
    # the unknown contact identified by email was created
    new = api.get("/contacts?q=new@example.com").json["items"]
    assert len(new) == 1 and new[0]["email"] == "new@example.com"
    known_id = body["results"][0]["contact_id"]
    events = api.get(f"/contacts/{known_id}/events").json
    assert {e["name"] for e in events} == {"order_completed", "page_viewed"}
    assert next(e for e in events if e["name"] == "order_completed")["properties"] == {"total": 30}


def test_same_idempotency_key_stores_one_event(api):
    item = {"name": "order_completed", "email": "a@example.com", "idempotency_key": "order-1"}
    first = api.post("/events", {"events": [item, item]}).json
    assert [r["status"] for r in first["results"]] == ["created", "duplicate"]
    second = api.post("/events", {"events": [item]}).json
    assert second["results"][0]["status"] == "duplicate"
    assert second["results"][0]["id"] == first["results"][0]["id"]
    contact_id = first["results"][0]["contact_id"]
    assert len(api.get(f"/contacts/{contact_id}/events").json) == 1


def test_oversized_and_empty_batches_are_refused(api):
    too_many = {"events": [{"name": "x", "email": "a@example.com"}] * 1001}
    response = api.post("/events", too_many)
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "events"
    assert api.post("/events", {"events": []}).status_code == 422
    assert api.get("/contacts").json["total"] == 0


@pytest.mark.postgres
def test_concurrent_posts_of_one_event_store_one_row(tmp_path, postgres_url):
    """Fifty clients racing with the same idempotency key and a brand-new contact."""
    from sqlalchemy import func, select

    from automation.contacts.events import ingest_events
    from automation.contacts.models import Contact, Event
    from automation.db import make_engine, make_session_factory

    engine = make_engine(postgres_url, pool_size=20, max_overflow=40)
    sessions = make_session_factory(engine)
    item = {"name": "order_completed", "email": "race@example.com", "idempotency_key": "k-1"}
    outcomes: list[str] = []
    barrier = threading.Barrier(50)

    def post() -> None:
        with sessions() as s:
            barrier.wait()
            result = ingest_events(s, [item], source="api")
            s.commit()
            outcomes.append(result.results[0].status)

    threads = [threading.Thread(target=post) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 1
        assert s.scalar(select(func.count()).select_from(Contact)) == 1
    assert outcomes.count("created") == 1 and outcomes.count("duplicate") == 49
    engine.dispose()
