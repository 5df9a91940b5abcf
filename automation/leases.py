"""Named leases in the database: at most one holder at a time, taken over once expired."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import String, delete, or_, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from automation import clock
from automation.db import Base, UTCDateTime, dialect_insert

T = TypeVar("T")


class Lease(Base):
    """A named, expiring claim: which process runs a singleton job (a periodic tick).

    Several beat schedulers may fire the same periodic task; the task body runs only in
    the process holding the lease, so losing a scheduler host never stops the work and
    two schedulers never double it.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)


def process_holder() -> str:
    """An id for this process, readable in the operator views."""
    return f"{socket.gethostname()}:{os.getpid()}"


def acquire_lease(session: Session, name: str, holder: str, ttl: timedelta) -> bool:
    """Take or renew ``name`` for ``holder`` until now + ttl; False if someone else holds it.

    One statement each way, so two processes racing cannot both win: the INSERT … ON
    CONFLICT DO NOTHING creates it, the conditional UPDATE renews our own or takes over
    an expired one. Commit right after, so the lease is visible to others.
    """
    now = clock.now()
    expires = now + ttl
    created = session.execute(
        dialect_insert(session, Lease)
        .values(name=name, holder=holder, expires_at=expires, acquired_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(Lease.name)
    ).first()
    if created is not None:
        return True
    taken = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=expires)
        .returning(Lease.name)
    ).first()
    return taken is not None


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def lease_holder(session: Session, name: str) -> Lease | None:
    return session.get(Lease, name)


def run_exclusively(
    sessions: sessionmaker[Session],
    name: str,
    ttl: timedelta,
    work: Callable[[], T],
    *,
    holder: str | None = None,
) -> T | None:
    """Run ``work`` only if this process holds (or takes) lease ``name``; None otherwise.

    For periodic jobs that must not run twice at once however many schedulers fire them
    and however many workers take their ticks. The lease is released when the work ends,
    so the next tick runs on whichever worker takes it; ``ttl`` only bounds how long a
    worker that died mid-run blocks the others, so it must outlast one run.
    """
    holder = holder or process_holder()
    with sessions() as session:
        won = acquire_lease(session, name, holder, ttl)
        session.commit()
    if not won:
        return None
    try:
        return work()
    finally:
        with sessions() as session:
            release_lease(session, name, holder)
            session.commit()
