"""The Alembic migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from alembic import command
from conftest import scratch_postgres_database
from sqlalchemy import text

from automation.db import make_engine
from automation.migrate import alembic_config, is_current, upgrade


def _check(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    assert is_current(engine)
    engine.dispose()
    command.check(alembic_config(url))  # raises if models and migrations differ


def test_migrations_match_models_on_sqlite(tmp_path):
    _check(f"sqlite:///{tmp_path / 'm.sqlite'}")


@pytest.mark.postgres
def test_migrations_match_models_on_postgres():
    with scratch_postgres_database("nurture_migr") as url:
        _check(url)


def _fill(conn, table: str, values: dict) -> int:
    """Insert a row into ``table`` as the schema stands, giving every other required
    column a plain value of its type; the new row's id."""
    from sqlalchemy import MetaData, Table, insert

    t = Table(table, MetaData(), autoload_with=conn)
    row = dict(values)
    for column in t.columns:
        if column.name in row or column.nullable or column.primary_key:
            continue
        if column.server_default is not None:
            continue
        try:
            python_type = column.type.python_type
        except NotImplementedError:  # a type without one (JSON on some dialects)
            python_type = str
        if python_type is datetime:
            row[column.name] = datetime(2026, 1, 1)
        elif python_type in (int, float, bool):
            row[column.name] = python_type(0)
        elif python_type in (dict, list):
            row[column.name] = python_type()
        else:
            row[column.name] = f"{table}-{column.name}"
    return conn.execute(insert(t).values(row).returning(t.c.id)).scalar_one()


def _journal_written_once(url: str) -> None:
    """0700: the open journal rows of waiting enrolments go (the enrolment is the open
    visit now); closed rows stay; a downgrade writes the open rows back."""
    config = alembic_config(url)
    command.upgrade(config, "0690")
    engine = make_engine(url)
    with engine.begin() as conn:
        contact = _fill(conn, "contacts", {"email": "m@example.com"})
        workflow = _fill(conn, "workflows", {"name": "w"})
        version = _fill(conn, "workflow_versions", {"workflow_id": workflow, "number": 1})
        waiting = _fill(
            conn,
            "enrollments",
            {
                "workflow_id": workflow,
                "workflow_version_id": version,
                "contact_id": contact,
                "status": "active",
                "current_node": "wait",
                "waiting_since": datetime(2026, 1, 2),
            },
        )
        journal = [
            (waiting, "send", datetime(2026, 1, 2), datetime(2026, 1, 2), "next"),
            (waiting, "wait", datetime(2026, 1, 2), None, None),
        ]
        for enrollment_id, node, entered, left, label in journal:
            _fill(
                conn,
                "enrollment_steps",
                {
                    "enrollment_id": enrollment_id,
                    "workflow_version_id": version,
                    "node_id": node,
                    "entered_at": entered,
                    "left_at": left,
                    "exit": label,
                },
            )
    query = text("SELECT node_id, left_at IS NULL FROM enrollment_steps ORDER BY id")
    command.upgrade(config, "0700")
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(query)] == [("send", False)]
    command.downgrade(config, "0690")
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(query)] == [("send", False), ("wait", True)]
    engine.dispose()


def test_journal_migration_on_sqlite(tmp_path):
    _journal_written_once(f"sqlite:///{tmp_path / 'm.sqlite'}")


@pytest.mark.postgres
def test_journal_migration_on_postgres():
    with scratch_postgres_database("nurture_migr") as url:
        _journal_written_once(url)


def _sent_events_backfilled(url: str) -> None:
    """0750: each message sent before it gets its `email.sent` event (its origin in the
    properties, when it was sent as the time); nothing for messages not sent; running it
    again adds nothing."""
    config = alembic_config(url)
    command.upgrade(config, "0740")
    engine = make_engine(url)
    with engine.begin() as conn:
        contact = _fill(conn, "contacts", {"email": "m@example.com"})
        template = _fill(conn, "templates", {"name": "t"})
        version = _fill(conn, "template_versions", {"template_id": template, "number": 1})
        sent_at = datetime(2026, 3, 4, 5, 6, 7)
        ids = {}
        for name, status, origin in [
            ("campaign", "sent", {"campaign_id": 3, "campaign_variant_id": 4}),
            ("workflow", "sent", {"workflow_id": 5, "workflow_node_id": "send-1"}),
            ("queued", "queued", {}),
            ("failed", "failed", {}),
        ]:
            ids[name] = _fill(
                conn,
                "messages",
                {
                    "dedupe_key": name,
                    "contact_id": contact,
                    "template_version_id": version,
                    "status": status,
                    "sent_at": sent_at if status == "sent" else None,
                    **origin,
                },
            )
    command.upgrade(config, "0750")
    command.downgrade(config, "0740")
    command.upgrade(config, "0750")
    from sqlalchemy import MetaData, Table, select

    with engine.connect() as conn:
        events = Table("events", MetaData(), autoload_with=conn)
        rows = conn.execute(select(events).order_by(events.c.idempotency_key)).mappings().all()
    engine.dispose()
    assert [r["idempotency_key"] for r in rows] == [
        f"sent:{ids['campaign']}",
        f"sent:{ids['workflow']}",
    ]
    assert {r["name"] for r in rows} == {"email.sent"}
    assert {r["contact_id"] for r in rows} == {contact}
    assert [r["occurred_at"].replace(tzinfo=None) for r in rows] == [sent_at, sent_at]
    properties = [r["properties"] for r in rows]
    properties = [p if isinstance(p, dict) else json.loads(p) for p in properties]
    base = {"template_id": template, "template_version_id": version}
    assert properties == [
        {**base, "message_id": ids["campaign"], "campaign_id": 3, "campaign_variant_id": 4},
        {**base, "message_id": ids["workflow"], "workflow_id": 5, "workflow_node_id": "send-1"},
    ]


def test_sent_events_backfill_on_sqlite(tmp_path):
    _sent_events_backfilled(f"sqlite:///{tmp_path / 'm.sqlite'}")


@pytest.mark.postgres
def test_sent_events_backfill_on_postgres():
    with scratch_postgres_database("nurture_migr") as url:
        _sent_events_backfilled(url)
