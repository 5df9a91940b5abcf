"""The hit queue between the public tracking endpoints and the tracking worker.

A hit is one JSON line. The web process only appends it (no database write, principle 7);
the `tracking` worker takes batches, ingests them and only then removes them, so a crash
of the worker replays a batch (harmless: each hit has an idempotency key).

What "durably queued" means here, honestly:

- ``SpoolHitQueue``: one ``write()`` with O_APPEND to a file on the web machine's disk
  before the response. It survives a crash of any process (the page cache holds it) but
  not a power loss of the machine (no fsync per hit: an fsync costs milliseconds). The
  embedded default drains it directly; with a Redis hit queue (production) it is the
  first hop, and ``nurture tracking forward`` (automation/tracking/forwarding.py), one per
  web machine, moves it into Redis in batches: no network call on the hot path.
- ``RedisHitQueue``: the list the drainer reads in production; with
  NURTURE_HIT_QUEUE_PUSH=redis also what the web process pushes to, one RPUSH per hit
  before the response. It survives a crash of the web process or the worker, NOT a Redis
  restart on these machines, which keep nothing on disk (no AOF/RDB); with
  ``appendonly yes`` and ``appendfsync everysec`` it is at most one second of hits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, NamedTuple, Protocol

log = logging.getLogger(__name__)

REDIS_KEY = "nurture:hits"
MAX_UA = 512
MAX_REFERER = 512


_JSON_TRUE = {False: "false", True: "true"}


class Hit(NamedTuple):
    """One request to a tracking URL, as the public endpoint saw it (a named tuple: made on
    every open and click, and a tuple is several times cheaper to build than a frozen
    dataclass)."""

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
        """The JSON array ``json.dumps`` gives (compact separators), written out: this runs
        on every open and click, and the json module's own encoder is set up per call.
        Strings go through its C escaper; ``repr`` of a float is what it writes too."""
        s = encode_basestring_ascii
        link_index = "null" if self.link_index is None else int(self.link_index)
        return (
            f"[{s(self.id)},{s(self.kind)},{int(self.message_id)},{int(self.nonce)},"
            f"{int(self.template_version_id)},{link_index},{float(self.at)!r},{s(self.ip)},"
            f"{s(self.user_agent[:MAX_UA])},{_JSON_TRUE[bool(self.head)]},"
            f"{s(self.referer[:MAX_REFERER])},{_JSON_TRUE[bool(self.prefetch)]}]"
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Hit | None:
        """The hit in ``raw``; None for a line that is not one (a torn write)."""
        try:
            return cls.of(json.loads(raw))
        except ValueError:
            return None

    @classmethod
    def of(cls, v: Any) -> Hit | None:
        """The hit of a decoded line; None for a value that is not one."""
        try:
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
        except IndexError:
            # Fewer fields than this version writes (a line queued by another release
            # during a deploy): the optional trailing fields take their defaults.
            if isinstance(v, list) and REQUIRED_FIELDS <= len(v) < len(cls._fields):
                return cls.of(v + OPTIONAL_DEFAULTS[len(v) - REQUIRED_FIELDS :])
            return None
        except (ValueError, TypeError, KeyError):
            return None


# id … user_agent: every line ever written has them; the fields after have defaults.
REQUIRED_FIELDS = 9
OPTIONAL_DEFAULTS = list(Hit._field_defaults.values())


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

    def __init__(self, url: str, key: str = REDIS_KEY, timeout: float | None = None) -> None:
        import redis

        self.redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.key = key

    def push(self, hit: Hit) -> None:
        self.redis.rpush(self.key, hit.encode())

    def push_line(self, line: bytes) -> None:
        self.redis.rpush(self.key, line)

    def push_lines(self, lines: Sequence[bytes], chunk: int = 1000) -> None:
        """Append many lines in one round trip (multi-value RPUSH commands, pipelined)."""
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(lines), chunk):
            pipe.rpush(self.key, *lines[start : start + chunk])
        pipe.execute()

    def take(self, limit: int) -> tuple[list[bytes], Any]:
        items = self.redis.lrange(self.key, 0, limit - 1)
        return [i if isinstance(i, bytes) else i.encode() for i in items], len(items)

    def ack(self, receipt: Any) -> None:
        if receipt:
            self.redis.ltrim(self.key, int(receipt), -1)

    def depth(self) -> int:
        return int(self.redis.llen(self.key))


class SpoolHitQueue:
    """Append-only files under ``directory``: writers append to ``current.spool``; a reader
    (the embedded drainer, or the forwarder in front of Redis) seals it into a
    ``batch-<ns>.spool``, reads the oldest batch and deletes it only after its lines are
    safe elsewhere (``ack``).

    The handshake between writers and the reader needs no clock: a writer holds a shared
    ``flock`` on its file descriptor while it writes, and checks under that lock that
    ``current.spool`` is still the file it holds (else it reopens). The reader renames
    ``current.spool`` away and takes the exclusive lock on the batch before reading it, so
    every write that went to that file has finished, and every later one goes to the new
    ``current.spool``.

    Each record is written as ``\n<line>\n`` in one ``write()``: a writer killed in the
    middle of a write leaves a torn fragment that the next record's leading newline ends,
    so it never glues onto a good line (decoders reject the fragment). Concurrent
    ``O_APPEND`` writes of up to ``ATOMIC_BYTES`` never interleave; a longer record (a
    site event with large properties) is written under the exclusive lock instead.
    """

    # PIPE_BUF. POSIX promises atomic writes of this size to pipes only; for O_APPEND to a
    # local Linux file system a whole write() runs under the inode lock. Beyond this size
    # we do not lean on that: the writer takes the exclusive lock.
    ATOMIC_BYTES = 4096
    SEAL_BYTES = 4 << 20  # while a batch waits (Redis down), seal current past this size

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.current = directory / "current.spool"
        # A descriptor per thread and process: a flock belongs to an open file description,
        # so two threads (or a forked child) sharing one would release each other's lock.
        self._local = threading.local()

    def _descriptor(self, *, reopen: bool = False) -> tuple[int, int]:
        held: tuple[int, int, int] | None = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid() and not reopen:
            return held[1], held[2]
        if held is not None and held[0] == os.getpid():
            os.close(held[1])
        fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        ino = os.fstat(fd).st_ino
        self._local.held = (os.getpid(), fd, ino)
        return fd, ino

    def push(self, hit: Hit) -> None:
        self.push_line(hit.encode())

    def push_line(self, line: bytes) -> None:
        record = b"\n" + line + b"\n"
        mode = fcntl.LOCK_SH if len(record) <= self.ATOMIC_BYTES else fcntl.LOCK_EX
        fd, ino = self._descriptor()
        while True:
            fcntl.flock(fd, mode)
            try:
                try:
                    current = os.stat(self.current).st_ino
                except FileNotFoundError:
                    current = None
                if current == ino:
                    os.write(fd, record)  # one write(): see the class docstring
                    return
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            fd, ino = self._descriptor(reopen=True)  # the reader sealed ours: use the new one

    def _batches(self) -> list[Path]:
        return sorted(self.directory.glob("batch-*.spool"))

    def seal(self) -> None:
        """Rename ``current.spool`` into a batch when there is no batch waiting, or when it
        has grown past ``SEAL_BYTES`` behind one that waits (bounded batches)."""
        try:
            size = self.current.stat().st_size
        except FileNotFoundError:
            return
        if size and (size >= self.SEAL_BYTES or not self._batches()):
            with contextlib.suppress(FileNotFoundError):  # another reader sealed it just now
                os.rename(self.current, self.directory / f"batch-{time.time_ns():020d}.spool")

    def take(self, limit: int) -> tuple[list[bytes], Any]:
        """The oldest batch, whole (``limit`` is not applied: a file leaves only whole)."""
        self.seal()
        batches = self.sealed()
        if not batches:
            return [], None
        return self.read(batches[0]), batches[0]

    def sealed(self) -> list[Path]:
        """The batch files waiting, oldest first."""
        return self._batches()

    def read(self, batch: Path) -> list[bytes]:
        """The complete lines of a sealed batch (acknowledge it with ``ack(batch)``)."""
        return [line for lines in self.read_chunks(batch) for line in lines]

    def read_chunks(self, batch: Path, chunk_bytes: int = SEAL_BYTES) -> Iterator[list[bytes]]:
        """The complete lines of a sealed batch, about ``chunk_bytes`` at a time (a spool
        nobody forwarded for a day is one large file: it is never read whole)."""
        fd = os.open(batch, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # writers that still hold it finish first
            with os.fdopen(os.dup(fd), "rb") as stream:
                rest = b""
                while data := stream.read(chunk_bytes):
                    data = rest + data
                    end = data.rfind(b"\n") + 1
                    rest = data[end:]
                    lines = [line for line in data[:end].split(b"\n") if line]
                    if lines:
                        yield lines
                # Every write ends with a newline: a tail without one is a write torn by a
                # crash, and dropped.
        finally:
            os.close(fd)

    def ack(self, receipt: Any) -> None:
        if receipt is not None:
            Path(receipt).unlink(missing_ok=True)

    def depth(self) -> int:
        total = 0
        for path in [*self._batches(), self.current]:
            try:
                total += sum(1 for line in path.read_bytes().split(b"\n") if line)
            except FileNotFoundError:
                continue
        return total

    def backlog(self) -> SpoolBacklog:
        """Files, bytes and the oldest record's age (a lower bound), from ``stat`` alone."""
        files = size = 0
        oldest: float | None = None
        for path in [*self._batches(), self.current]:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if not st.st_size:
                continue
            files += 1
            size += st.st_size
            if path == self.current:
                # current.spool is at least as old as the directory's last change (its
                # creation, or a later seal or unlink): exact when no reader is running.
                since = self.directory.stat().st_mtime
            else:
                since = int(path.name[len("batch-") : -len(".spool")]) / 1e9  # sealed
            oldest = since if oldest is None else min(oldest, since)
        age = max(time.time() - oldest, 0.0) if oldest is not None else 0.0
        return SpoolBacklog(files, size, age)


@dataclass(frozen=True)
class SpoolBacklog:
    """What a spool holds on this machine: not yet drained or forwarded."""

    files: int
    bytes: int
    oldest_seconds: float  # at least this old (0: empty)


def tracking_redis_url(settings: Any) -> str:
    """NURTURE_HIT_QUEUE_URL, else the broker when it is Redis, else "" (no Redis)."""
    url = settings.hit_queue_url or (
        settings.broker_url if settings.broker_url.startswith("redis") else ""
    )
    return str(url) if url.startswith("redis") else ""


QUEUES = ("hits", "site")  # email opens and clicks; site events


def make_hit_queue(settings: Any, name: str = "hits") -> HitQueue:
    """The queue the drainer reads: Redis when NURTURE_HIT_QUEUE_URL (or a redis broker) is
    set, else the local spool. ``name`` picks the queue: "hits" (email opens and clicks) or
    "site" (site events)."""
    url = tracking_redis_url(settings)
    if url:
        return RedisHitQueue(url, f"nurture:{name}")
    return hit_spool(settings, name)


def hit_spool(settings: Any, name: str = "hits") -> SpoolHitQueue:
    """This machine's spool of queue ``name`` (under NURTURE_VAR_DIR)."""
    return SpoolHitQueue(Path(settings.var_dir) / name)


def spool_forwarded(settings: Any) -> bool:
    """True when the web process appends to the local spool and a forwarder on each web
    machine moves it into Redis (a Redis queue with NURTURE_HIT_QUEUE_PUSH=spool)."""
    return bool(tracking_redis_url(settings)) and settings.hit_queue_push == "spool"


def make_hit_writer(settings: Any, name: str = "hits") -> HitQueue:
    """What a web process appends a hit to: the local spool (no network on the hot path),
    or Redis directly, one RPUSH per hit, with NURTURE_HIT_QUEUE_PUSH=redis."""
    if tracking_redis_url(settings) and settings.hit_queue_push == "redis":
        return make_hit_queue(settings, name)
    return hit_spool(settings, name)


def decode_all(lines: Sequence[bytes]) -> list[Hit]:
    """The hits of ``lines``, torn lines left out. The lines are parsed as one JSON array
    (one parser call for the batch, not one per line); when that fails, or a torn line
    swallowed its neighbours (fewer values than lines), line by line."""
    try:
        values = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        values = None
    if values is None or len(values) != len(lines):
        hits = [h for h in map(Hit.decode, lines) if h is not None]
    else:
        hits = [h for h in map(Hit.of, values) if h is not None]
    if len(hits) < len(lines):
        log.warning(
            "%d of %d queued tracking lines were not hits", len(lines) - len(hits), len(lines)
        )
    return hits
