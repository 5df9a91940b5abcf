"""Draining a queue of tracking records (hits, site events) into the database: batch by
batch, each in its own transaction, a batch leaving the queue only after its commit (a
crash replays it; every record carries an idempotency key), one drainer at a time."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from automation.leases import run_exclusively
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
            with collector_paused(), sessions() as session:
                ingest(session, lines)
                session.commit()
            queue.ack(receipt)
        return True

    return run_exclusively(sessions, lease, LEASE_FOR, work) is not None


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is ingested. A batch allocates tens of
    thousands of objects that all live until it ends and form no reference cycles, and
    their allocation kept triggering full collections, each walking every object of the
    process: a fifth of a drain's time. Reference counting frees the batch as before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
