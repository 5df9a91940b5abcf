"""Tracking benchmarks, each figure beside its floor measured in the same run.

1. Click redirect under gunicorn (2 sync workers, loopback, wrk): the real click endpoint
   (token verified, destination from the compiled version, hit appended to the queue)
   against a bare Flask route answering the same 302, same gunicorn settings. Three ways
   of queueing the hit: one Redis RPUSH per hit (NURTURE_HIT_QUEUE_PUSH=redis), the
   production default spool+forward (an append to the local spool per hit, with `nurture
   tracking forward` running beside gunicorn and moving batches into Redis), and the
   embedded spool alone. After each run the queue is compared with the requests wrk
   completed (spool+forward: once the forwarder emptied the spool, every completed
   request's hit must be in Redis). ``--rounds N`` interleaves N runs of each and reports
   the median ratio (the machine is shared: neighbours' load moves single runs).
2. Ingestion of queued hits into PostgreSQL with engagement write-back (events, message
   counters, contact engagement), through the real drainer. Floors: the same event rows
   stored by hand with nothing else, each way measured in the same run (executemany
   INSERT, INSERT … SELECT from one JSON document per batch, COPY); the fastest is the
   floor. ``--rounds N`` repeats it on fresh data and reports the median ratio.

    .venv/bin/python bench/tracking.py --url postgresql+psycopg://root@127.0.0.1:5432/x
    .venv/bin/python bench/tracking.py --smoke --url …      # seconds (CI)
    NURTURE_BENCH_PORTS=8100-8199 .venv/bin/python bench/tracking.py --rounds 3 --click-only …

wrk comes from Debian (``apt-get install wrk``); without it a small Python load generator
is used (its figures are far lower and only fit for the smoke run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automation import wiring  # noqa: E402
from automation.config import load_settings  # noqa: E402
from automation.contacts.models import Contact, ContactStatus, Event  # noqa: E402
from automation.db import Base, make_engine, make_session_factory  # noqa: E402
from automation.email.models import (  # noqa: E402
    Message,
    MessageStatus,
    Template,
    TemplateKind,
    TemplateVersion,
)
from automation.signing import TokenKind, TokenSigner  # noqa: E402
from automation.tracking.hits import Hit, RedisHitQueue, SpoolHitQueue  # noqa: E402
from automation.tracking.service import drain_hits  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
REDIS_URL = os.environ.get("NURTURE_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
SECRET = "bench-secret-" + "k" * 40
LINKS = [
    {"index": 0, "url": "https://shop.example/start?x=1", "text": "Start"},
    {"index": 1, "url": "https://shop.example/about", "text": "About"},
    {"index": 2, "url": "https://shop.example/sale", "text": "Sale"},
]
HUMAN_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"


# --- the apps gunicorn serves (factories: `bench.tracking:bare_app()`) -------------------


def bare_app() -> Any:
    from flask import Flask, redirect

    app = Flask("bare")

    @app.get("/t/c/<token>")
    def click(token: str) -> Any:
        return redirect(LINKS[0]["url"], code=302)

    return app


def tracking_app() -> Any:
    from web import create_tracking_app

    return create_tracking_app(load_settings())


def redis_available() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except Exception:  # any failure means: run without Redis
        return False


# --- setup -------------------------------------------------------------------------------


def prepare(url: str, messages: int) -> tuple[int, list[tuple[int, int]]]:
    """A template version with three links, and ``messages`` sent messages (one contact
    each). Returns the version id and (message id, nonce) pairs."""
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    now = datetime.now(UTC)
    sessions = make_session_factory(engine)
    with sessions() as s:
        template_id = s.execute(
            insert(Template)
            .values(name="bench", latest_version=1, created_at=now, updated_at=now)
            .returning(Template.id)
        ).scalar_one()
        version_id = s.execute(
            insert(TemplateVersion)
            .values(
                template_id=template_id,
                number=1,
                kind=TemplateKind.MARKETING,
                subject="Hi",
                preheader="",
                mjml="<mjml/>",
                html="<p>hi</p>",
                text="hi",
                links=LINKS,
                html_bytes=10,
                created_at=now,
            )
            .returning(TemplateVersion.id)
        ).scalar_one()
        s.execute(
            insert(Contact),
            [
                {
                    "email": f"c{i}@example.com",
                    "status": ContactStatus.SUBSCRIBED,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(messages)
            ],
        )
        contact_ids = s.scalars(select(Contact.id).order_by(Contact.id)).all()
        sent = now - timedelta(hours=1)
        s.execute(
            insert(Message),
            [
                {
                    "dedupe_key": f"bench:{cid}",
                    "contact_id": cid,
                    "template_version_id": version_id,
                    "status": MessageStatus.SENT,
                    "next_attempt_at": sent,
                    "token_nonce": (cid * 2654435761) & 0xFFFFFFFF,
                    "created_at": sent,
                    "sent_at": sent,
                }
                for cid in contact_ids
            ],
        )
        pairs = [tuple(r) for r in s.execute(select(Message.id, Message.token_nonce))]
        s.commit()
    engine.dispose()
    return version_id, pairs  # type: ignore[return-value]


# --- HTTP --------------------------------------------------------------------------------


def free_port() -> int:
    """A free port; from NURTURE_BENCH_PORTS ("8100-8199") when set (shared machines)."""
    first, _, last = os.environ.get("NURTURE_BENCH_PORTS", "0-0").partition("-")
    for port in range(int(first), int(last) + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return int(sock.getsockname()[1])
            except OSError:
                continue
    raise RuntimeError("no free port")


class Gunicorn:
    def __init__(self, target: str, env: dict[str, str], workers: int) -> None:
        self.port = free_port()
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "--chdir", str(ROOT),
            "-w", str(workers),
            "-k", "sync",
            "--backlog", "2048",
            "--log-level", "warning",
            "-b", f"127.0.0.1:{self.port}",
            target,
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, env={**os.environ, **env})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn {target} did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_wrk(url: str, seconds: int, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, requests completed) from wrk."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_raw = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_raw, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_raw.group(2)]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed responses:\n{out}")
    return rate, float(p99_raw.group(1)) * scale, done


def run_python_load(url: str, count: int, threads: int = 4) -> tuple[float, float, int]:
    """A small fallback load generator (keep-alive off, like gunicorn sync workers)."""
    host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()  # type: ignore[union-attr]
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine = []
        for _ in range(n):
            started = time.perf_counter()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 302, response.status
            conn.close()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(count // threads,)) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return len(latencies) / elapsed, p99, len(latencies)


class Forwarder:
    """`nurture tracking forward` as operators run it: its own process beside gunicorn."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "automation.cli", "tracking", "forward"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
        )
        # Ready once it says so (its imports must not compete with the measured run).
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().startswith(b"forwarding"), "forwarder failed"

    def cpu_seconds(self) -> float:
        """User + system CPU the forwarder used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_http(url: str, token: str, args: argparse.Namespace) -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="nurture-bench-tracking-"))
    base_env = {
        "NURTURE_DATABASE_URL": url,
        "NURTURE_SECRET_KEY": SECRET,
        "NURTURE_VAR_DIR": str(var_dir),
        "NURTURE_BROKER_URL": f"sqla+sqlite:///{var_dir / 'broker.sqlite'}",
    }
    wrk = shutil.which("wrk") if not args.python_load else None

    def load(port: int) -> tuple[float, float, int]:
        target = f"http://127.0.0.1:{port}/t/c/{token}"
        # Warm up (imports, the version's links read once per worker).
        for _ in range(WARMUP):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/t/c/{token}")
            assert conn.getresponse().status == 302
            conn.close()
        if wrk:
            return run_wrk(target, args.seconds, args.connections)
        return run_python_load(target, args.requests)

    # The app pushes to the default key of the bench's Redis db (emptied before and after).
    redis_queue = RedisHitQueue(REDIS_URL) if redis_available() else None
    spool_queue = SpoolHitQueue(var_dir / "hits")
    on_redis = {"NURTURE_HIT_QUEUE_URL": REDIS_URL}
    # (label, gunicorn target, environment, where the hits end up, forwarder running)
    runs: list[tuple[str, str, dict[str, str], Any, bool]] = [
        ("bare Flask 302 (floor)", "bench.tracking:bare_app()", {}, None, False),
        (
            "click, RPUSH per hit",
            "bench.tracking:tracking_app()",
            {**on_redis, "NURTURE_HIT_QUEUE_PUSH": "redis"},
            redis_queue,
            False,
        ),
        ("click, spool+forward", "bench.tracking:tracking_app()", on_redis, redis_queue, True),
        ("click, spool only", "bench.tracking:tracking_app()", {}, spool_queue, False),
    ]
    if redis_queue is None:
        print("  (Redis not reachable: the Redis runs are skipped)")
        runs = [r for r in runs if r[3] is not redis_queue or r[1].endswith("bare_app()")]
    results: dict[str, list[tuple[float, float, int]]] = {r[0]: [] for r in runs}
    tool = f"wrk -t2 -c{args.connections} -d{args.seconds}s" if wrk else "python load generator"
    print(f"click redirect: gunicorn -w {args.workers} -k sync, loopback, {tool}")
    for round_ in range(1, args.rounds + 1):
        print(f" round {round_} (load {os.getloadavg()[0]:.2f})")
        # Each round starts one run later: none always goes first on a drifting machine.
        shift = (round_ - 1) % len(runs)
        for label, target, env, queue, forwarding in runs[shift:] + runs[:shift]:
            if queue is not None and queue is redis_queue:
                redis_queue.redis.delete(redis_queue.key)
            shutil.rmtree(var_dir / "hits", ignore_errors=True)
            forwarder = Forwarder({**base_env, **env}) if forwarding else None
            server = Gunicorn(target, {**base_env, **env}, args.workers)
            cpu_before = forwarder.cpu_seconds() if forwarder is not None else 0.0
            try:
                rate, p99, done = load(server.port)
            finally:
                server.stop()
            results[label].append((rate, p99, done))
            note = ""
            if forwarder is not None:
                note = ", " + wait_forwarded(
                    var_dir, forwarder, cpu_before, redis_queue, done + WARMUP
                )
            elif queue is not None:
                note = f", {queue.depth():,} hits queued for {done + WARMUP:,} requests"
            print(f"  {label:24s} {rate:8,.0f} req/s   p99 {p99:6.2f} ms{note}")
    floors = [rate for rate, _, _ in results["bare Flask 302 (floor)"]]
    for label in [r[0] for r in runs[1:]]:
        pairs = zip(results[label], floors, strict=True)
        ratios = sorted(rate / floor for (rate, _, _), floor in pairs)
        p99s = sorted(p99 for _, p99, _ in results[label])
        print(
            f"  {label}: {ratios[len(ratios) // 2]:.2f} of the bare route "
            f"(median of {len(ratios)}: {', '.join(f'{r:.2f}' for r in ratios)}; "
            f"target >= 0.8), p99 {p99s[len(p99s) // 2]:.2f} ms (target <= 15)"
        )
    if redis_queue is not None:
        redis_queue.redis.delete(redis_queue.key)
    shutil.rmtree(var_dir, ignore_errors=True)


WARMUP = 4


def wait_forwarded(
    var_dir: Path, forwarder: Forwarder, cpu_before: float, redis_queue: Any, requests: int
) -> str:
    """After the load: wait for the forwarder to empty the spool, stop it, and check that
    every completed request's hit is in Redis."""
    started = time.monotonic()
    spool = SpoolHitQueue(var_dir / "hits")
    try:
        while spool.backlog().files:
            if time.monotonic() - started > 60 or forwarder.proc.poll() is not None:
                raise RuntimeError(f"the forwarder left {spool.backlog()} in the spool")
            time.sleep(0.05)
        cpu = forwarder.cpu_seconds() - cpu_before
    finally:
        forwarder.stop()
    in_redis = redis_queue.depth()
    if in_redis < requests:
        raise RuntimeError(f"{in_redis} hits reached Redis for {requests} completed requests")
    return (
        f"{in_redis:,} hits in Redis for {requests:,} requests "
        f"(spool empty {time.monotonic() - started:.1f} s after the run; forwarder CPU "
        f"{cpu:.2f} s, {cpu / max(in_redis, 1) * 1e6:.0f} µs a hit)"
    )


# --- ingestion ---------------------------------------------------------------------------


def bench_ingest(
    url: str, version_id: int, pairs: list[tuple[int, int]], count: int
) -> tuple[float, dict[str, float]]:
    """(Nurture's hits/s, each floor's rows/s), printed as they are measured."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    spool_dir = Path(tempfile.mkdtemp(prefix="nurture-bench-ingest-"))
    queue: Any
    if redis_available():
        queue = RedisHitQueue(REDIS_URL, key="nurture:bench:ingest")
        queue.redis.delete(queue.key)
    else:
        queue = SpoolHitQueue(spool_dir)
    now = time.time()
    hits = []
    for i in range(count):
        message_id, nonce = pairs[i % len(pairs)]
        click = i % 3 == 0
        hits.append(
            Hit(
                id=f"{i:016x}",
                kind="click" if click else "open",
                message_id=message_id,
                nonce=nonce & 0xFFFFFFFF,
                template_version_id=version_id,
                link_index=(i // 3) % 2 if click else None,
                at=now - (count - i) * 0.001,
                ip=f"10.{i % 250}.{(i // 250) % 250}.1",
                user_agent=HUMAN_UA,
            )
        )
    if isinstance(queue, RedisHitQueue):
        pipe = queue.redis.pipeline(transaction=False)
        for hit in hits:
            pipe.rpush(queue.key, hit.encode())
        pipe.execute()
    else:
        (spool_dir / "batch-0.spool").write_bytes(b"".join(h.encode() + b"\n" for h in hits))
    # A worker has imported what react_to_events imports on first use (0.3 s, once).
    import automation.segments.membership
    import automation.workflows.triggers  # noqa: F401

    started = time.perf_counter()
    report = drain_hits(sessions, queue, batch_size=5000, max_batches=10_000)
    elapsed = time.perf_counter() - started
    assert report.stored == count, report
    with sessions() as s:
        opens = s.scalar(text("select sum(opens) from contacts"))
        clicks = s.scalar(text("select sum(clicks) from contacts"))
        message_opens = s.scalar(text("select sum(opens) from messages"))
    kind = "Redis" if isinstance(queue, RedisHitQueue) else "spool"
    print(f"ingestion, {count:,} queued hits ({kind} → PostgreSQL, {len(pairs):,} messages):")
    print(
        f"  drain with events + message + contact write-back: {count / elapsed:9,.0f} hits/s "
        f"(target ≥ 20,000); message opens {message_opens:,}, contacts: "
        f"{opens:,} messages opened, {clicks:,} clicked"
    )
    # Floors: the very event rows the drain stored, read back and stored again by hand
    # (same table, indexes and foreign key; nothing else), batches of 5,000, each way
    # from an empty table.
    with sessions() as s:
        stored = s.execute(
            select(
                Event.contact_id,
                Event.name,
                Event.properties,
                Event.occurred_at,
                Event.received_at,
                Event.source,
                Event.idempotency_key,
            ).order_by(Event.id)
        ).all()
    rates = {label: count / seconds for label, seconds in store_by_hand(engine, stored).items()}
    rate = count / elapsed
    best = max(rates, key=lambda label: rates[label])
    for label, floor in rates.items():
        mark = "  <- floor" if label == best else ""
        print(f"  {label:50s} {floor:9,.0f} rows/s   Nurture {rate / floor:.2f}x{mark}")
    print(f"  load average after the run: {os.getloadavg()[0]:.2f}")
    if isinstance(queue, RedisHitQueue):
        queue.redis.delete(queue.key)
    shutil.rmtree(spool_dir, ignore_errors=True)
    engine.dispose()
    return rate, rates


FLOOR_BATCH = 5000
_EVENT_COLUMNS = "contact_id, name, properties, occurred_at, received_at, source, idempotency_key"
# One JSON document per batch, one array per event: what the drain's statement reads.
_INSERT_FROM_DOCUMENT = text(
    f"""
    INSERT INTO events ({_EVENT_COLUMNS})
    SELECT CAST(e->>0 AS bigint), e->>1, e->2, CAST(e->>3 AS timestamp),
           CAST(e->>4 AS timestamp), e->>5, e->>6
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e
    """
)


def store_by_hand(engine: Any, rows: list[Any]) -> dict[str, float]:
    """Seconds each hand-written way takes to store ``rows`` (event tuples) into the empty
    events table, in one transaction: the old executemany floor, one INSERT … SELECT from
    a JSON document per batch, and COPY."""

    def naive(value: datetime) -> str:
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()

    def executemany(conn: Any) -> None:
        names = _EVENT_COLUMNS.split(", ")
        dicts = [dict(zip(names, r, strict=True)) for r in rows]
        for start in range(0, len(dicts), FLOOR_BATCH):
            conn.execute(insert(Event), dicts[start : start + FLOOR_BATCH])

    def document(conn: Any) -> None:
        for start in range(0, len(rows), FLOOR_BATCH):
            doc = [
                [c, n, p, naive(o), naive(r), s, k]
                for c, n, p, o, r, s, k in rows[start : start + FLOOR_BATCH]
            ]
            conn.execute(_INSERT_FROM_DOCUMENT, {"rows": json.dumps(doc)})

    def copy(conn: Any) -> None:
        cursor = conn.connection.driver_connection.cursor()
        for start in range(0, len(rows), FLOOR_BATCH):
            with cursor.copy(f"COPY events ({_EVENT_COLUMNS}) FROM STDIN") as out:
                for c, n, p, o, r, s, k in rows[start : start + FLOOR_BATCH]:
                    out.write_row((c, n, json.dumps(p), naive(o), naive(r), s, k))

    ways = {
        "floor: executemany INSERT (the old floor)": executemany,
        "floor: INSERT … SELECT from one JSON document": document,
        "floor: COPY": copy,
    }
    seconds = {}
    for label, way in ways.items():
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE events"))
        with engine.begin() as conn:
            started = time.perf_counter()
            way(conn)
        seconds[label] = time.perf_counter() - started
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM events")) == len(rows), label
    return seconds


def bench_ingest_rounds(
    args: argparse.Namespace, version_id: int, pairs: list[tuple[int, int]]
) -> None:
    """``--rounds`` ingestion measurements, each on fresh data, and their medians."""
    results = [bench_ingest(args.url, version_id, pairs, args.hits)]
    for _ in range(args.rounds - 1):
        results.append(bench_ingest(args.url, *prepare(args.url, args.messages), args.hits))
    if len(results) > 1:
        # On a shared machine one round's figures swing: the median ratio is the figure.
        best = [max(rates.values()) for _, rates in results]
        ratios = sorted(rate / floor for (rate, _), floor in zip(results, best, strict=True))
        nurture = statistics.median(rate for rate, _ in results)
        print(
            f"ingestion, {len(results)} rounds: Nurture {nurture:,.0f}"
            f" hits/s, floor {statistics.median(best):,.0f} rows/s (medians); ratio to the"
            f" floor per round {', '.join(f'{r:.2f}' for r in ratios)}, median"
            f" {statistics.median(ratios):.2f}"
        )


def main() -> None:
    wiring.install()  # reactions, references and every model, as build_runtime does
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--hits", type=int, default=200_000, help="hits to ingest")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000, help="python load generator")
    parser.add_argument("--python-load", action="store_true", help="do not use wrk")
    parser.add_argument(
        "--rounds", type=int, default=1, help="click runs interleaved, ingestion repeated"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    parser.add_argument("--ingest-only", action="store_true", help="skip the HTTP part")
    parser.add_argument("--click-only", action="store_true", help="skip the ingestion part")
    args = parser.parse_args()
    if args.smoke:
        args.hits, args.messages, args.seconds, args.requests = 2000, 200, 1, 200
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )
    version_id, pairs = prepare(args.url, args.messages)
    signer = TokenSigner(SECRET)
    message_id, nonce = pairs[0]
    token = signer.make(TokenKind.CLICK, message_id, nonce, version_id, link_index=0)
    if not args.ingest_only:
        bench_http(args.url, token, args)
    if not args.click_only:
        bench_ingest_rounds(args, version_id, pairs)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
