"""Engine, session factory, declarative base and the column types every model shares."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Enum,
    Index,
    Integer,
    MetaData,
    any_,
    cast,
    create_engine,
    event,
    extract,
    func,
    literal,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import NullType, TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; SQLite only autoincrements a column declared INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# The ids a request may name: a value outside its column's range can name no row, and
# PostgreSQL refuses to compare it ("integer out of range"), so the schemas and the URL
# converters (web/ids.py) bound every id to its column's type and the request gets a 4xx.
ID_MAX = 2**31 - 1  # an Integer key
BIG_ID_MAX = 2**63 - 1  # a BigId key (contacts, messages, events, enrollments)
RowId = Annotated[int, Field(ge=1, le=ID_MAX)]
BigRowId = Annotated[int, Field(ge=1, le=BIG_ID_MAX)]
# A page of a listing: page times per_page becomes an OFFSET, which must stay a BIGINT.
PAGE_MAX = 1_000_000
PageNumber = Annotated[int, Field(ge=1, le=PAGE_MAX)]
# JSONB on PostgreSQL so attribute lookups can use GIN / expression indexes.
JSONDoc = JSON().with_variant(postgresql.JSONB(), "postgresql")


def json_objects(document: Any) -> Iterator[dict[str, Any]]:
    """Every object of a stored JSON document (a workflow, a segment's conditions), at any
    depth: for finding what a document names without parsing it."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            yield value
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def json_depth(document: Any) -> int:
    """How deep objects and arrays nest in a JSON value (a scalar is 0), found without
    recursion, so a value nested thousands deep is measured, not a RecursionError."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return deepest


TOO_DEEP_TO_SHOW = "(nested too deeply to show)"


def clip_json(document: Any, limit: int) -> Any:
    """A copy of a stored JSON value whose parts nested deeper than ``limit`` are replaced
    by their JSON text (or TOO_DEEP_TO_SHOW when even that cannot be made): data stored
    before a bound existed can still be read and exported whole by every serializer."""

    def clip(value: Any, depth: int) -> Any:
        if not isinstance(value, dict | list):
            return value
        if depth >= limit:
            try:
                return json.dumps(value, ensure_ascii=False)
            except (RecursionError, TypeError, ValueError):
                return TOO_DEEP_TO_SHOW
        if isinstance(value, dict):
            return {k: clip(v, depth + 1) for k, v in value.items()}
        return [clip(v, depth + 1) for v in value]

    return clip(document, 0)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Nurture stores UTC and needs aware values")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


# Table options of the rows updated in bulk without touching an index (messages' and
# contacts' engagement counters, ``automation/tracking/ingest.py``): pages are filled to
# 80 %, so an update that
# changes no indexed column can put the new row version on the same page (a HOT update:
# no entry in any of the table's indexes). On full pages every such update inserted into
# all six or seven indexes; a batch's two UPDATEs took 3-4 times longer.
HOT_UPDATES = {"postgresql_with": {"fillfactor": 80}}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web process read while a worker writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 10}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dialect_insert(session: Session, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ON CONFLICT and RETURNING on both supported databases."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect: {name}")


def postgres_only(index: Index) -> Index:
    """An index that exists only on PostgreSQL (GIN, expression, partial indexes).
    create_all honours ``ddl_if``; migrations/env.py reads ``info`` for autogenerate."""
    index.info["only_on"] = "postgresql"
    return index.ddl_if(dialect="postgresql")


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# Counting "per day" or "per hour" in a time zone: rows are grouped per quarter hour of UTC
# in SQL and the quarters placed in the zone in Python. Every zone's offset is a whole
# number of quarter hours (India +5:30, Nepal +5:45), DST included, and SQLite knows no
# time zones; 90 days are at most 8,640 groups per series, whatever the number of rows.
QUARTER_SECONDS = 900


def quarter_hour(session: Session, column: Any) -> Any:
    """The UTC quarter hour of a stored (naive UTC) timestamp, as a number."""
    if is_postgres(session):
        return func.floor(extract("epoch", column) / QUARTER_SECONDS)
    return cast(func.strftime("%s", column), Integer) / QUARTER_SECONDS


def quarter_start(bucket: Any) -> datetime:
    """The UTC instant a ``quarter_hour`` value begins."""
    return datetime.fromtimestamp(int(bucket) * QUARTER_SECONDS, UTC)


def one_of(session: Session, column: Any, values: Iterable[Any]) -> Any:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``: one parameter, so
    the statement text is the same for any number of values (cached, prepared) instead of
    hundreds of placeholders parsed on every call."""
    items = list(values)
    if is_postgres(session):
        if items and all(type(v) is int for v in items):
            return column == any_(id_array(items))
        if items and not isinstance(column.type, Enum) and all(type(v) is str for v in items):
            # Text likewise, as one array literal (see id_array): quoting is two
            # str.replace calls per value, where psycopg dumps a list element by element.
            return column == any_(
                cast(literal(text_array(items), type_=NullType()), postgresql.ARRAY(column.type))
            )
        return column == any_(literal(items, postgresql.ARRAY(column.type)))
    return column.in_(items)


def id_array(ids: Iterable[int]) -> Any:
    """PostgreSQL: integer ids as one ``bigint[]`` parameter.

    The array travels as its text form ("{1,2,3}"), built at C speed: psycopg would dump a
    list element by element in Python (a third of a workflow batch's time). The literal
    goes untyped (NullType renders no ``::VARCHAR``), so PostgreSQL reads it as a bigint[]
    parameter once. A varchar parameter cast to bigint[] is a run-time conversion that a
    sequential scan under a prepared (generic) plan repeats for every row (seconds for
    5,000 ids over 10,000 rows)."""
    return cast(literal(int_array(ids), type_=NullType()), postgresql.ARRAY(BigInteger))


def int_array(values: Iterable[int]) -> str:
    """PostgreSQL's text form of an integer array: ``{1,2,3}``."""
    return "{" + ",".join(map(str, values)) + "}"


def text_array(values: Iterable[str]) -> str:
    """PostgreSQL's text form of a text array, every element quoted: ``{"a","b \\"c\\""}``."""
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )
