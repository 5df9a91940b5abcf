"""Draining a queue of tracking records (hits, site events) into the database: batch by
batch, each in its own transaction, a batch leaving the queue only after its commit (a
crash replays it; every record carries an idempotency key), one drainer at a time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from automation.ops.leases import run_exclusively
from automation.tracking.hits import HitQueue

LEASE_FOR = timedelta(minutes=2)


def drain_in_batches(
    sessions: sessionmaker[Session],
    queue: HitQueue,
    ingest: Callable[[Session, list[bytes]], None],
    *,
    lease: str,
    batch_size: int,
    max_batches: int,
) -> bool:
    """Hand up to ``max_batches`` batches of queued lines to ``ingest``; False when another
    process holds the lease (it is draining right now)."""

    def work() -> bool:
        for _ in range(max_batches):
            lines, receipt = queue.take(batch_size)
            if not lines:
                break
            with sessions() as session:
                ingest(session, lines)
                session.commit()
            queue.ack(receipt)
        return True

    return run_exclusively(sessions, lease, LEASE_FOR, work) is not None
