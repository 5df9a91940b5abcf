"""The Alembic migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from conftest import PG_URL, require_service
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
    require_service("postgres")
    name = f"nurture_migr_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        _check(PG_URL.rsplit("/", 1)[0] + f"/{name}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
