"""Spool-then-forward: web processes append hits to this machine's spool, the forwarder
(`nurture tracking forward`, a real process here) moves them into the real Redis, and the
drainer ingests them. Every hit arrives, and is counted once, whatever crashes."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sitekit
from conftest import METRICS_AUTH, REDIS_URL, free_port, login, make_settings
from emailkit import make_contact
from sqlalchemy import func, select
from test_tracking import HUMAN_UA, sent_message

from automation.accounts.models import Role
from automation.accounts.service import create_user
from automation.contacts.models import Event
from automation.ops.backlog import spool_backlogs
from automation.runtime import use_runtime
from automation.signing import TokenKind
from automation.tracking.forwarding import Forwarder
from automation.tracking.hits import Hit, SpoolHitQueue, decode_all, make_hit_queue
from automation.tracking.service import drain_hits

ROOT = Path(__file__).resolve().parent.parent


def _hit(hit_id: str, user_agent: str = HUMAN_UA) -> Hit:
    return Hit(hit_id, "open", 1, 2, 3, None, time.time(), "10.0.0.1", user_agent)


# --- the spool file on its own (no services) ----------------------------------------------


def test_a_torn_write_never_takes_a_good_hit_with_it(tmp_path):
    spool = SpoolHitQueue(tmp_path / "hits")
    spool.push(_hit("a"))
    with open(spool.current, "ab") as raw:  # a writer killed in the middle of its write
        raw.write(b'\n["torn-in-the-mid')
    spool.push(_hit("b"))
    with open(spool.current, "ab") as raw:  # and one at the very end
        raw.write(b'\n["torn-at-the-e')
    lines, receipt = spool.take(100)
    assert [h.id for h in decode_all(lines)] == ["a", "b"]
    spool.ack(receipt)
    assert spool.depth() == 0 and spool.backlog().files == 0


def test_a_line_without_the_optional_trailing_fields_still_decodes(caplog):
    """A line written by a release with fewer fields (queued across a deploy) keeps its
    hit; the fields it lacks take their defaults. Lines that are not hits are counted."""
    full = _hit("full")._replace(head=True, referer="https://mail.example/", prefetch=True)
    values = json.loads(full.encode())
    shorter = [json.dumps(values[:n]).encode() for n in (9, 10, 11)]
    not_hits = [json.dumps(values[:8]).encode(), b'["torn']
    with caplog.at_level(logging.WARNING, logger="automation.tracking.hits"):
        hits = decode_all([full.encode(), *shorter, *not_hits])
    assert hits[0] == full
    assert [(h.head, h.referer, h.prefetch) for h in hits[1:]] == [
        (False, "", False),
        (True, "", False),
        (True, "https://mail.example/", False),
    ]
    assert [h._replace(head=False, referer="", prefetch=False) for h in hits[1:]] == [
        full._replace(head=False, referer="", prefetch=False)
    ] * 3
    assert "2 of 6 queued tracking lines were not hits" in caplog.text


def test_a_hit_longer_than_an_atomic_write_stays_whole(tmp_path):
    spool = SpoolHitQueue(tmp_path / "hits")
    # 512 characters outside the BMP: 12 bytes each once JSON-escaped, the longest a hit gets.
    huge = _hit("big", user_agent="\U0001f600" * 600)
    assert len(huge.encode()) > SpoolHitQueue.ATOMIC_BYTES
    small = _hit("small")
    spool.push(huge)
    spool.push(small)
    lines, _ = spool.take(100)
    assert lines == [huge.encode(), small.encode()]
    assert decode_all(lines)[0].user_agent == "\U0001f600" * 512


def test_a_large_batch_is_read_in_chunks_of_whole_lines(tmp_path):
    spool = SpoolHitQueue(tmp_path / "hits")
    hits = [_hit(f"h{i}", user_agent="x" * (i * 37 % 900)) for i in range(300)]
    for hit in hits:
        spool.push(hit)
    with open(spool.current, "ab") as raw:
        raw.write(b'\n["torn-at-the-e')
    spool.seal()
    [batch] = spool.sealed()
    chunks = list(spool.read_chunks(batch, chunk_bytes=1000))
    assert len(chunks) > 10
    assert [line for chunk in chunks for line in chunk] == [h.encode() for h in hits]


# --- real processes, real Redis -----------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from automation.tracking.hits import Hit, SpoolHitQueue
spool = SpoolHitQueue(Path(sys.argv[1]))
name, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    ua = "\\U0001f600" * 600 if i % 50 == 0 else "Mozilla/5.0"  # some over 4 KB
    spool.push(Hit(f"{name}-{i}", "open", 1, 2, 3, None, time.time(), "10.0.0.1", ua))
"""


def _env(var_dir: Path, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "NURTURE_VAR_DIR": str(var_dir),
        "NURTURE_HIT_QUEUE_URL": redis_url,
        "NURTURE_SECRET_KEY": "test-secret-key-" + "x" * 32,
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def _forwarder(var_dir: Path, redis_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # our own command line
        [sys.executable, "-m", "automation.cli", "tracking", "forward"],
        env=_env(var_dir, redis_url),
        cwd=ROOT,
        stdout=(var_dir.parent / "forward.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_until_spool_empty(var_dir: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    spool = SpoolHitQueue(var_dir / "hits")
    while spool.backlog().files:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"spool never emptied\n{log.read_text()}"
        time.sleep(0.1)


@pytest.fixture
def own_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()  # this worker's own database
    yield client
    client.flushdb()


@pytest.mark.redis
def test_hits_from_several_writer_processes_arrive_in_redis_exactly_once(tmp_path, own_redis):
    var_dir = tmp_path / "var"
    forwarder = _forwarder(var_dir, REDIS_URL)  # forwards while the writers write
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(var_dir / "hits"), f"w{n}", "1500"],
            env=_env(var_dir, REDIS_URL),
            cwd=ROOT,
        )
        for n in range(4)
    ]
    try:
        assert [w.wait(120) for w in writers] == [0, 0, 0, 0]
        _wait_until_spool_empty(var_dir, forwarder, tmp_path / "forward.log")
    finally:
        _stop(forwarder)
    hits = decode_all(own_redis.lrange("nurture:hits", 0, -1))
    counts = Counter(h.id for h in hits)
    assert set(counts) == {f"w{n}-{i}" for n in range(4) for i in range(1500)}
    assert set(counts.values()) == {1}
    assert all(h.user_agent == "\U0001f600" * 512 for h in hits if h.id.endswith("-0"))


@pytest.fixture
def tracking_app(tmp_path: Path, postgres_url: str, own_redis: redis.Redis) -> Iterator[Any]:
    from web import create_app

    settings = make_settings(tmp_path, postgres_url, NURTURE_HIT_QUEUE_URL=REDIS_URL)
    app = create_app(settings, {"TESTING": True})
    use_runtime(app.extensions["nurture"])
    yield app
    app.extensions["nurture"].engine.dispose()
    use_runtime(None)


def _click(app: Any, path: str, times: int) -> None:
    client = app.test_client()
    for _ in range(times):
        assert client.get(path, headers={"User-Agent": HUMAN_UA}).status_code == 302


@pytest.mark.postgres
@pytest.mark.redis
def test_a_forwarder_killed_mid_batch_loses_no_hit_and_none_counts_twice(tracking_app, own_redis):
    app = tracking_app
    settings = app.extensions["nurture"].settings
    msg = sent_message(app)
    path = "/t/c/" + msg["tokens"].token(TokenKind.CLICK, link_index=0)
    _click(app, path, 300)
    # The crash window, exactly: a batch pushed to Redis, the forwarder dead before unlink.
    spool, redis_queue = Forwarder.from_settings(settings).pairs[0]
    lines, _receipt = spool.take(0)
    redis_queue.push_lines(lines)
    # Then a real forwarder, killed with SIGKILL once it is at work, three times over.
    forwarder = _forwarder(settings.var_dir, REDIS_URL)
    for _ in range(3):
        before = own_redis.llen("nurture:hits")
        _click(app, path, 300)
        deadline = time.monotonic() + 60
        while own_redis.llen("nurture:hits") == before:
            assert time.monotonic() < deadline, "the forwarder forwarded nothing"
            time.sleep(0.01)
        forwarder.send_signal(signal.SIGKILL)
        forwarder.wait()
        forwarder = _forwarder(settings.var_dir, REDIS_URL)
    try:
        log = settings.var_dir.parent / "forward.log"
        _wait_until_spool_empty(settings.var_dir, forwarder, log)
    finally:
        _stop(forwarder)
    assert own_redis.llen("nurture:hits") >= 1200 + len(lines)  # the batch came twice
    report = drain_hits(app.extensions["nurture"].sessions, make_hit_queue(settings))
    assert report.stored == 1200
    with app.extensions["nurture"].sessions() as s:
        clicks = s.scalar(
            select(func.count()).select_from(Event).where(Event.name == "email.clicked")
        )
    assert clicks == 1200


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _redis_server(port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


@pytest.mark.redis
def test_while_redis_is_down_hits_wait_in_the_spool_and_arrive_when_it_is_back(tmp_path):
    port = free_port()
    assert _free(port), f"port {port} is taken"
    url = f"redis://127.0.0.1:{port}/0"
    var_dir = tmp_path / "var"
    settings = make_settings(tmp_path, "sqlite://", NURTURE_HIT_QUEUE_URL=url)
    spool = SpoolHitQueue(var_dir / "hits")
    forwarder = _forwarder(var_dir, url)  # started with no Redis at all
    server = None
    try:
        for i in range(500):
            spool.push(_hit(f"h{i}"))
        deadline = time.monotonic() + 30
        log = tmp_path / "forward.log"
        while "Redis failed" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the forwarder never tried"
            time.sleep(0.1)
        backlog = spool_backlogs(settings)["hits"]
        assert backlog.files >= 1 and backlog.bytes > 500 * 50
        assert spool.depth() == 500  # nothing lost, nothing forwarded
        server = _redis_server(port, tmp_path)
        _wait_until_spool_empty(var_dir, forwarder, log)
        arrived = decode_all(redis.Redis(port=port).lrange("nurture:hits", 0, -1))
        assert sorted(h.id for h in arrived) == sorted(f"h{i}" for i in range(500))
        assert spool_backlogs(settings)["hits"].files == 0
    finally:
        _stop(forwarder)
        if server is not None:
            server.terminate()
            server.wait(20)


@pytest.mark.postgres
@pytest.mark.redis
def test_the_spool_backlog_shows_in_metrics_readyz_and_the_operations_page(tracking_app, own_redis):
    app = tracking_app
    msg = sent_message(app)
    client = app.test_client()
    path = "/t/o/" + msg["tokens"].token(TokenKind.OPEN)
    for _ in range(3):
        client.get(path, headers={"User-Agent": HUMAN_UA})
    assert own_redis.llen("nurture:hits") == 0  # the hot path did not touch Redis
    metrics = client.get("/metrics", headers=METRICS_AUTH).get_data(as_text=True)
    assert 'nurture_spool_files{queue="hits"} 1.0' in metrics
    assert 'nurture_spool_bytes{queue="hits"} 0.0' not in metrics
    assert 'nurture_spool_files{queue="site"} 0.0' in metrics
    checks = {c["name"]: c for c in client.get("/readyz").get_json()["checks"]}
    assert checks["hit_spool"]["ok"] and "hits: 1 files" in checks["hit_spool"]["detail"]
    with app.extensions["nurture"].sessions() as s:
        create_user(s, "admin@example.com", "correct horse battery", role=Role.ADMIN)
        s.commit()
    login(client, "admin@example.com", "correct horse battery")
    page = client.get("/outbox").get_data(as_text=True)
    assert 'id="spool-hits"' in page and "hits spooled on this host" in page
    Forwarder.from_settings(app.extensions["nurture"].settings).forward_all()
    assert own_redis.llen("nurture:hits") == 3
    scraped = client.get("/metrics", headers=METRICS_AUTH).get_data(as_text=True)
    assert 'nurture_spool_files{queue="hits"} 0.0' in scraped


@pytest.mark.postgres
@pytest.mark.redis
def test_operators_may_push_each_hit_to_redis_directly(tmp_path, postgres_url, own_redis):
    from web import create_app

    settings = make_settings(
        tmp_path, postgres_url, NURTURE_HIT_QUEUE_URL=REDIS_URL, NURTURE_HIT_QUEUE_PUSH="redis"
    )
    app = create_app(settings, {"TESTING": True})
    use_runtime(app.extensions["nurture"])
    try:
        msg = sent_message(app)
        app.test_client().get("/t/o/" + msg["tokens"].token(TokenKind.OPEN))
        assert own_redis.llen("nurture:hits") == 1
        assert spool_backlogs(settings)["hits"].files == 0
    finally:
        app.extensions["nurture"].engine.dispose()
        use_runtime(None)


site_app = sitekit.site_app


def _replayed_batch(settings: Any, queue: int) -> int:
    """The forwarder's crash window: a batch pushed to Redis, not yet unlinked (it will be
    pushed again). Returns its size."""
    spool, target = Forwarder.from_settings(settings).pairs[queue]
    spool.seal()
    [batch] = spool.sealed()
    lines = spool.read(batch)
    target.push_lines(lines)
    return len(lines)


@pytest.mark.postgres
@pytest.mark.redis
def test_replayed_site_batches_store_each_event_once(site_app):
    from test_site_tracking import VISITOR, drain, events_of, post

    from automation.tracking.models import AnonymousEvent

    settings = site_app.extensions["nurture"].settings
    client = site_app.test_client()
    with site_app.extensions["nurture"].sessions() as s:
        make_contact(s, "ada@example.com")
        s.commit()
    post(client, {"visitor_id": VISITOR, "events": [{"name": "page.viewed"}, {"name": "a"}]})
    assert _replayed_batch(settings, 1) == 2
    drain(site_app)  # forwards the same batch again, then ingests both copies
    with site_app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(func.count()).select_from(AnonymousEvent)) == 2
    post(client, {"visitor_id": VISITOR, "identify": sitekit.verified(site_app, "ada@example.com")})
    post(client, {"visitor_id": VISITOR, "events": [{"name": "b"}]})
    assert _replayed_batch(settings, 1) == 2
    drain(site_app)
    drain(site_app)
    names = sorted(n for n, _ in events_of(site_app, "ada@example.com"))
    assert names == ["a", "b", "page.viewed", "site.identified"]


def test_a_spool_nobody_forwards_is_flagged_by_doctor_and_readyz(tmp_path, sqlite_url):
    from automation.ops.doctor import diagnose
    from web import create_app

    settings = make_settings(tmp_path, sqlite_url, NURTURE_HIT_QUEUE_URL="redis://127.0.0.1:1/0")
    spool = SpoolHitQueue(settings.var_dir / "hits")
    ten_minutes_ago = time.time_ns() - 600 * 10**9
    (spool.directory / f"batch-{ten_minutes_ago:020d}.spool").write_bytes(
        b"\n" + _hit("old").encode() + b"\n"
    )
    app = create_app(settings, {"TESTING": True})
    use_runtime(app.extensions["nurture"])
    try:
        finding = {f.topic: f for f in diagnose(app.extensions["nurture"])}["hit queue"]
        assert finding.level == "warn" and "nurture tracking forward" in finding.message
        checks = {c["name"]: c for c in app.test_client().get("/readyz").get_json()["checks"]}
        assert not checks["hit_spool"]["ok"]
        assert "is `nurture tracking forward` running here" in checks["hit_spool"]["detail"]
    finally:
        app.extensions["nurture"].engine.dispose()
        use_runtime(None)
