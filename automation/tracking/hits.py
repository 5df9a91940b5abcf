"""The hit queue between the public tracking endpoints and the tracking worker.

A hit is one JSON line. The web process only appends it (no database write, principle 7);
the `tracking` worker takes batches, ingests them and only then removes them, so a crash
of the worker replays a batch (harmless: each hit has an idempotency key).

What "durably queued" means here, honestly:

- ``RedisHitQueue`` (production): one RPUSH per hit before the response is sent. The hit
  survives a crash of the web process or the worker. It does NOT survive a Redis restart
  on these machines, which keep nothing on disk (no AOF/RDB); with ``appendonly yes`` and
  ``appendfsync everysec`` it is at most one second of hits.
- ``SpoolHitQueue`` (embedded default, no Redis): one ``write()`` with O_APPEND to a local
  file before the response. It survives a crash of any process (the page cache holds it)
  but not a power loss of the machine (no fsync per hit: an fsync costs milliseconds).
  A spool is per machine, so every machine that serves tracking URLs must run a drainer.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REDIS_KEY = "nurture:hits"
MAX_UA = 512
MAX_REFERER = 512


@dataclass(frozen=True)
class Hit:
    """One request to a tracking URL, as the public endpoint saw it."""

    id: str  # random; the idempotency key of the event it becomes
    kind: str  # "open" | "click"
    message_id: int
    nonce: int
    template_version_id: int
    link_index: int | None
    at: float  # epoch seconds
    ip: str
    user_agent: str
    head: bool = False
    referer: str = ""
    prefetch: bool = False  # a Purpose/Sec-Purpose/X-Moz: prefetch header

    def encode(self) -> bytes:
        return json.dumps(
            [
                self.id,
                self.kind,
                self.message_id,
                self.nonce,
                self.template_version_id,
                self.link_index,
                self.at,
                self.ip,
                self.user_agent[:MAX_UA],
                self.head,
                self.referer[:MAX_REFERER],
                self.prefetch,
            ],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Hit | None:
        """The hit in ``raw``; None for a line that is not one (a torn write)."""
        try:
            v = json.loads(raw)
            return cls(
                str(v[0]),
                str(v[1]),
                int(v[2]),
                int(v[3]),
                int(v[4]),
                None if v[5] is None else int(v[5]),
                float(v[6]),
                str(v[7]),
                str(v[8]),
                bool(v[9]),
                str(v[10]),
                bool(v[11]),
            )
        except (ValueError, TypeError, IndexError, KeyError):
            return None


def new_hit_id() -> str:
    return secrets.token_hex(8)


def now_epoch() -> float:
    return time.time()


class HitQueue(Protocol):
    def push(self, hit: Hit) -> None: ...

    def push_line(self, line: bytes) -> None:
        """Append one encoded line (the site events queue shares this machinery)."""
        ...

    def take(self, limit: int) -> tuple[list[bytes], Any]:
        """Up to ``limit`` queued hits and a receipt; they stay queued until ``ack``."""
        ...

    def ack(self, receipt: Any) -> None: ...

    def depth(self) -> int: ...


class RedisHitQueue:
    """A Redis list. Only one drainer at a time may take (the worker holds a lease)."""

    def __init__(self, url: str, key: str = REDIS_KEY) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.key = key

    def push(self, hit: Hit) -> None:
        self.redis.rpush(self.key, hit.encode())

    def push_line(self, line: bytes) -> None:
        self.redis.rpush(self.key, line)

    def take(self, limit: int) -> tuple[list[bytes], Any]:
        items = self.redis.lrange(self.key, 0, limit - 1)
        return [i if isinstance(i, bytes) else i.encode() for i in items], len(items)

    def ack(self, receipt: Any) -> None:
        if receipt:
            self.redis.ltrim(self.key, int(receipt), -1)

    def depth(self) -> int:
        return int(self.redis.llen(self.key))


class SpoolHitQueue:
    """Append-only files under ``directory``. Writers append to ``current.spool``; the
    drainer renames it aside, waits out writers that opened it just before, reads it and
    deletes it after the batch committed."""

    GRACE_SECONDS = 1.0

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.current = directory / "current.spool"
        self._fd: int | None = None
        self._ino: int | None = None
        self._checked = 0.0

    def _open(self) -> int:
        now = time.monotonic()
        if self._fd is not None and now - self._checked < 0.2:
            return self._fd
        # Reopen when the drainer renamed the file away (checked at most 5 times a second).
        try:
            ino = os.stat(self.current).st_ino
        except FileNotFoundError:
            ino = None
        if self._fd is None or ino != self._ino:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._ino = os.fstat(self._fd).st_ino
        self._checked = now
        return self._fd

    def push(self, hit: Hit) -> None:
        self.push_line(hit.encode())

    def push_line(self, line: bytes) -> None:
        os.write(self._open(), line + b"\n")  # one write(): never interleaved

    def _batches(self) -> list[Path]:
        return sorted(self.directory.glob("batch-*.spool"))

    def take(self, limit: int) -> tuple[list[bytes], Any]:
        if not self._batches() and self.current.exists() and self.current.stat().st_size:
            os.rename(self.current, self.directory / f"batch-{time.time_ns():020d}.spool")
        ready = [
            p for p in self._batches() if time.time() - p.stat().st_mtime >= self.GRACE_SECONDS
        ]
        if not ready:
            return [], None
        path = ready[0]
        lines = [line for line in path.read_bytes().split(b"\n") if line]
        return lines, path  # a file is taken whole, whatever the limit

    def ack(self, receipt: Any) -> None:
        if receipt is not None:
            Path(receipt).unlink(missing_ok=True)

    def depth(self) -> int:
        total = 0
        for path in [*self._batches(), self.current]:
            try:
                total += path.read_bytes().count(b"\n")
            except FileNotFoundError:
                continue
        return total


def tracking_redis_url(settings: Any) -> str:
    """NURTURE_HIT_QUEUE_URL, else the broker when it is Redis, else "" (no Redis)."""
    url = settings.hit_queue_url or (
        settings.broker_url if settings.broker_url.startswith("redis") else ""
    )
    return str(url) if url.startswith("redis") else ""


def make_hit_queue(settings: Any, name: str = "hits") -> HitQueue:
    """Redis when NURTURE_HIT_QUEUE_URL (or a redis broker) is set, else the local spool.
    ``name`` picks the queue: "hits" (email opens and clicks) or "site" (site events)."""
    url = tracking_redis_url(settings)
    if url:
        return RedisHitQueue(url, f"nurture:{name}")
    return SpoolHitQueue(Path(settings.var_dir) / name)


def decode_all(lines: Sequence[bytes]) -> list[Hit]:
    return [h for h in (Hit.decode(line) for line in lines) if h is not None]
