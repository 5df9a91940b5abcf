"""Spool-then-forward: the web process appends each hit to this machine's spool (no
network on the hot path); ``nurture tracking forward``, one per web machine, moves the
spool into the Redis hit queues in batches and the tracking drainer reads Redis.

A batch file leaves the spool only after Redis accepted all of its lines: a forwarder
killed between the push and the unlink pushes the batch again when it restarts, which is
harmless because every line carries the idempotency key of the event it becomes (the
ingesters insert with ``ON CONFLICT (idempotency_key) DO NOTHING`` and count only what
they inserted). While Redis is unreachable the spool grows in bounded batch files and the
forwarder retries with a growing pause; ``automation/ops/backlog.py`` shows the backlog.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis

from automation.tracking.hits import (
    QUEUES,
    RedisHitQueue,
    SpoolHitQueue,
    hit_spool,
    tracking_redis_url,
)

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 5.0  # seconds: a Redis that hangs is retried like one that refuses
MAX_BACKOFF = 10.0


def forward_batches(spool: SpoolHitQueue, target: RedisHitQueue) -> int:
    """Seal what ``spool`` holds now and move every sealed batch into ``target``; the lines
    moved. A Redis error propagates and leaves the batch in the spool."""
    spool.seal()
    moved = 0
    for batch in spool.sealed():
        try:
            for lines in spool.read_chunks(batch):
                target.push_lines(lines)
                moved += len(lines)
        except FileNotFoundError:
            continue  # a second forwarder on this machine took it (harmless, if wasteful)
        spool.ack(batch)  # only now: a crash before this line pushes the batch again
    return moved


@dataclass
class Forwarder:
    """The spool → Redis pairs of this machine (hits and site events) and the retry loop."""

    pairs: list[tuple[SpoolHitQueue, RedisHitQueue]]
    poll_seconds: float = 0.2

    @classmethod
    def from_settings(cls, settings: object, *, poll_seconds: float = 0.2) -> Forwarder:
        url = tracking_redis_url(settings)
        if not url:
            raise ValueError("no Redis hit queue configured (NURTURE_HIT_QUEUE_URL)")
        return cls(
            [
                (hit_spool(settings, name), RedisHitQueue(url, f"nurture:{name}", REDIS_TIMEOUT))
                for name in QUEUES
            ],
            poll_seconds,
        )

    def forward_all(self) -> int:
        """Everything spooled now, queue by queue; raises on a Redis error."""
        return sum(forward_batches(spool, target) for spool, target in self.pairs)

    def run(self, stop: threading.Event) -> None:
        """Forward until ``stop`` is set, pausing 0.5 s, 1 s … up to 10 s after each failure
        (the spool keeps every hit meanwhile, in batches of bounded size)."""
        backoff = 0.0
        retry_at = 0.0
        while not stop.is_set():
            if time.monotonic() >= retry_at:
                try:
                    self.forward_all()
                    if backoff:
                        log.info("hit forwarder: Redis reachable again")
                    backoff = 0.0
                except (redis.RedisError, OSError) as exc:
                    backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF)
                    retry_at = time.monotonic() + backoff
                    log.warning("hit forwarder: Redis failed (%s); retry in %.1f s", exc, backoff)
            else:
                for spool, _ in self.pairs:
                    spool.seal()
            # A pause even after a busy round: batches of a poll's worth of hits cost one
            # round trip each, where a tight loop would push a handful of hits at a time.
            stop.wait(self.poll_seconds)


__all__ = ["Forwarder", "forward_batches"]
