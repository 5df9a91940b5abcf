"""Indexed custom fields: the flag over the API and the settings page, the expression index
PostgreSQL gets for it (built, used by segment conditions, dropped), and a failed build."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text

from automation.contacts.models import Contact
from automation.segments.compiler import condition
from automation.segments.field_indexes import PREFIX, sync_field_indexes

FIELDS = [
    {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro", "team"]},
    {"name": "seats", "label": "Seats", "type": "number"},
    {"name": "renewal", "label": "Renewal", "type": "date"},
]
PEOPLE = [
    ("ana", {"plan": "pro", "seats": 12, "renewal": "2026-05-01"}),
    ("ben", {"plan": "free", "seats": 3, "renewal": "2026-09-30"}),
    ("chloe", {"plan": "pro", "seats": 2.5}),
    ("dan", {"plan": "team"}),
    ("eve", {}),
]
CONDITIONS = [
    ({"field": "attributes.plan", "operator": "equals", "value": "pro"}, 2),
    ({"field": "attributes.plan", "operator": "in", "value": ["pro", "team"]}, 3),
    ({"field": "attributes.plan", "operator": "not_equals", "value": "pro"}, 3),
    ({"field": "attributes.seats", "operator": "greater_than", "value": 2.5}, 2),
    ({"field": "attributes.seats", "operator": "between", "value": [2.5, 3]}, 2),
    ({"field": "attributes.renewal", "operator": "less_than", "value": "2026-06-01"}, 1),
    ({"field": "attributes.renewal", "operator": "equals", "value": "2026-09-30"}, 1),
]


@pytest.fixture
def people(api):
    for body in FIELDS:
        assert api.post("/fields", body).status_code == 201
    for name, attributes in PEOPLE:
        body = {"email": f"{name}@example.com", "attributes": attributes}
        assert api.post("/contacts", body).status_code == 201


def engine_of(app: Any) -> Engine:
    return app.extensions["nurture"].engine


def our_indexes(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'contacts'")
        )
        return {name: ddl for name, ddl in rows if name.startswith(PREFIX)}


@pytest.fixture
def clean_indexes(postgres_url):
    """Truncation between tests keeps indexes: drop ours before and after."""
    from automation.db import make_engine

    engine = make_engine(postgres_url)

    def drop() -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in our_indexes(engine):
                conn.execute(text(f'DROP INDEX IF EXISTS "{name}"'))

    drop()
    yield
    drop()
    engine.dispose()


def counts(api) -> list[int]:
    return [
        api.post("/segments/count", {"conditions": [c]}).get_json()["count"] for c, _ in CONDITIONS
    ]


def plan_of(engine: Engine, tree: dict[str, Any]) -> str:
    """EXPLAIN of a segment count, with sequential scans discouraged (the table is tiny)."""
    from automation.db import make_session_factory

    with make_session_factory(engine)() as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))
        query = select(func.count()).select_from(Contact.__table__).where(condition(s, tree))
        lines: list[str] = []

        def explain(_c: Any, cursor: Any, sql: str, params: Any, _x: Any, _m: Any) -> Any:
            return "EXPLAIN " + sql, params

        event.listen(engine, "before_cursor_execute", explain, retval=True)
        try:
            lines = [row[0] for row in s.execute(query)]
        finally:
            event.remove(engine, "before_cursor_execute", explain)
        s.rollback()
    return "\n".join(lines)


@pytest.mark.postgres
@pytest.mark.usefixtures("clean_indexes")
def test_indexed_fields_get_an_index_that_segment_conditions_use(app, api, people, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("expression indexes are built on PostgreSQL")
    engine = engine_of(app)
    expected = [n for _, n in CONDITIONS]
    assert counts(api) == expected
    for name in ("plan", "seats", "renewal"):
        patched = api.patch(f"/fields/{name}", {"indexed": True})
        assert patched.status_code == 200, patched.get_json()
        assert patched.get_json()["index_status"] == "building"
    # What the queued segments.sync_field_indexes task runs, outside any transaction.
    report = sync_field_indexes(engine)
    assert sorted(report.built) == sorted(our_indexes(engine)) and len(report.built) == 3
    fields = {f["name"]: f for f in api.get("/fields").get_json()}
    assert {n: (f["indexed"], f["index_status"]) for n, f in fields.items()} == {
        "plan": (True, "ready"),
        "seats": (True, "ready"),
        "renewal": (True, "ready"),
    }
    assert counts(api) == expected  # same answers through the indexed expressions
    for tree, index_of in (
        ({"conditions": [CONDITIONS[0][0]]}, "plan"),
        ({"conditions": [CONDITIONS[3][0]]}, "seats"),
        ({"conditions": [CONDITIONS[5][0]]}, "renewal"),
    ):
        assert f"{PREFIX}{fields[index_of]['id']}" in plan_of(engine, tree), index_of

    # Unflagged: the status says so at once, the next sync drops the index.
    assert api.patch("/fields/seats", {"indexed": False}).get_json()["index_status"] == "none"
    assert counts(api) == expected
    assert sync_field_indexes(engine).dropped == [f"{PREFIX}{fields['seats']['id']}"]
    # A deleted field's index goes with it.
    assert api.delete("/fields/renewal").status_code == 204
    sync_field_indexes(engine)
    assert list(our_indexes(engine)) == [f"{PREFIX}{fields['plan']['id']}"]
    assert sync_field_indexes(engine).as_dict() == {"built": [], "dropped": [], "failed": {}}


@pytest.mark.postgres
@pytest.mark.usefixtures("clean_indexes")
def test_a_failed_build_is_reported_and_retried_on_request(app, api, people, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("expression indexes are built on PostgreSQL")
    engine = engine_of(app)
    plan = next(f for f in api.get("/fields").get_json() if f["name"] == "plan")
    blocker = f"{PREFIX}{plan['id']}"
    with engine.begin() as conn:  # something else already holds the index's name
        conn.execute(text(f'CREATE TABLE "{blocker}" (x int)'))
    try:
        api.patch("/fields/plan", {"indexed": True})
        report = sync_field_indexes(engine)
        assert list(report.failed) == [blocker]
        failed = next(f for f in api.get("/fields").get_json() if f["name"] == "plan")
        assert failed["index_status"] == "failed"
        assert "already exists" in failed["index_error"]
        assert our_indexes(engine) == {}
        assert counts(api) == [n for _, n in CONDITIONS]  # conditions work without it
        # The periodic sync does not retry by itself; asking again does.
        assert sync_field_indexes(engine).failed == {}
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP TABLE "{blocker}"'))
    retried = api.patch("/fields/plan", {"indexed": True}).get_json()
    assert (retried["index_status"], retried["index_error"]) == ("building", None)
    assert sync_field_indexes(engine).built == [blocker]


def test_sqlite_keeps_the_flag_and_says_no_index_is_built(app, api, people, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the SQLite behaviour")
    patched = api.patch("/fields/plan", {"indexed": True})
    assert patched.status_code == 200
    assert (patched.get_json()["indexed"], patched.get_json()["index_status"]) == (
        True,
        "unsupported",
    )
    assert sync_field_indexes(engine_of(app)).as_dict() == {
        "built": [],
        "dropped": [],
        "failed": {},
    }
    assert counts(api) == [n for _, n in CONDITIONS]


def test_indexing_needs_an_admin_and_a_known_field(api, people):
    marketer = api.as_role("marketer")
    assert marketer.patch("/fields/plan", {"indexed": True}).status_code == 403
    assert api.patch("/fields/nope", {"indexed": True}).status_code == 404
    bad = api.patch("/fields/plan", {"indexed": "yes please"})
    assert bad.status_code == 422
    declared = api.post(
        "/fields", {"name": "region", "label": "Region", "type": "text", "indexed": True}
    ).get_json()
    assert declared["indexed"] is True
    assert declared["index_status"] in ("building", "unsupported")
