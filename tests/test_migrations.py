"""The Alembic migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

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
