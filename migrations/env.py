"""Alembic environment: the URL comes from the caller (nurture migrate) or NURTURE_* settings."""

from alembic import context

import automation.models  # noqa: F401  # registers every table on the metadata
from automation.config import load_settings
from automation.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """Skip indexes declared for another database (automation.db.postgres_only)."""
    only_on = getattr(obj, "info", {}).get("only_on")
    return only_on is None or only_on == context.get_bind().dialect.name


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `nurture migrate`")
run_migrations_online()
