"""Migration 0760: the opens that human clicks proved before ingestion recorded them (a
message clicked with images blocked had no open) are recorded, once."""

from __future__ import annotations

from datetime import datetime

import pytest
from alembic import command
from conftest import scratch_postgres_database
from sqlalchemy import text
from test_migrations import _fill

from automation.db import make_engine
from automation.migrate import alembic_config

CLICKED = datetime(2026, 1, 5, 10, 0)
OPENED = datetime(2026, 1, 4, 9, 0)


def _opens_proved_by_clicks(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "0740")
    engine = make_engine(url)
    with engine.begin() as conn:
        contact = _fill(conn, "contacts", {"email": "m@example.com", "opens": 1, "clicks": 2})
        template = _fill(conn, "templates", {"name": "t"})
        version = _fill(conn, "template_versions", {"template_id": template, "number": 1})
        common = {"contact_id": contact, "template_version_id": version, "status": "sent"}
        clicked_only = _fill(
            conn,
            "messages",
            {**common, "dedupe_key": "a", "first_click_at": CLICKED, "clicks": 1, "opens": 0},
        )
        _fill(
            conn,
            "messages",
            {
                **common,
                "dedupe_key": "b",
                "first_click_at": CLICKED,
                "first_open_at": OPENED,
                "last_open_at": OPENED,
                "opens": 1,
            },
        )
        conn.execute(
            text("UPDATE contacts SET last_open_at = :at WHERE id = :id"),
            {"at": OPENED, "id": contact},
        )
    command.upgrade(config, "0760")
    with engine.connect() as conn:
        events = conn.execute(
            text("SELECT contact_id, name, occurred_at FROM events ORDER BY id")
        ).all()
        assert [(c, n) for c, n, _ in events] == [(contact, "email.opened")]
        assert str(events[0][2])[:16] == "2026-01-05 10:00"
        message = conn.execute(
            text("SELECT opens, first_open_at FROM messages WHERE id = :id"), {"id": clicked_only}
        ).one()
        assert message[0] == 1 and str(message[1])[:16] == "2026-01-05 10:00"
        person = conn.execute(
            text("SELECT opens, last_open_at FROM contacts WHERE id = :id"), {"id": contact}
        ).one()
        assert person[0] == 2 and str(person[1])[:16] == "2026-01-05 10:00"
    command.upgrade(config, "head")
    command.downgrade(config, "0740")
    command.upgrade(config, "head")  # nothing recorded twice
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == 1
    engine.dispose()


def test_opens_proved_by_clicks_on_sqlite(tmp_path):
    _opens_proved_by_clicks(f"sqlite:///{tmp_path / 'm.sqlite'}")


@pytest.mark.postgres
def test_opens_proved_by_clicks_on_postgres():
    with scratch_postgres_database("nurture_migr") as url:
        _opens_proved_by_clicks(url)
