"""A Celery send worker killed with SIGKILL in the middle of a 10,000-message send, then
restarted: the SMTP server received each message at most once, every row ends sent or
`unknown`, and none stays `sending`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import REDIS_URL, make_settings
from emailkit import make_template, start_smtp
from sqlalchemy import func, insert, select

from automation import clock
from automation.contacts.models import Contact
from automation.db import make_engine, make_session_factory
from automation.email.models import Message, MessageStatus
from automation.email.outbox import expire_leases, queue_for_contacts
from automation.queueing import enqueue, make_celery
from automation.signing import TokenKind, TokenSigner

MESSAGES = 10_000
LEASE_SECONDS = 6
MESSAGE_ID = re.compile(rb"^Message-ID: <([A-Za-z0-9_\-]+)@", re.MULTILINE)


def _worker(settings, log):
    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": settings.database_url,
        "NURTURE_BROKER_URL": REDIS_URL,
        "NURTURE_VAR_DIR": str(settings.var_dir),
        "NURTURE_SECRET_KEY": settings.secret_key,
        "NURTURE_SMTP_HOST": settings.smtp_host,
        "NURTURE_SMTP_PORT": str(settings.smtp_port),
        "NURTURE_SMTP_TLS": "none",
        "NURTURE_SEND_LEASE_SECONDS": str(LEASE_SECONDS),
        "NURTURE_SEND_BATCH_SIZE": "200",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "automation.tasks",
            "worker",
            "-Q",
            "send",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _counts(sessions):
    with sessions() as s:
        return dict(s.execute(select(Message.status, func.count()).group_by(Message.status)).all())


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_killed_mid_send_never_sends_a_message_twice(tmp_path, postgres_url):
    import redis

    redis.Redis.from_url(REDIS_URL).delete("send")
    server = start_smtp()
    settings = make_settings(
        tmp_path,
        postgres_url,
        NURTURE_BROKER_URL=REDIS_URL,
        NURTURE_SMTP_HOST=server.host,
        NURTURE_SMTP_PORT=str(server.port),
        NURTURE_SMTP_TLS="none",
    )
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    with sessions() as s:
        version = make_template(s, kind="transactional").version.id
        now = clock.now()
        s.execute(
            insert(Contact),
            [
                {
                    "email": f"c{i}@example.com",
                    "first_name": f"C{i}",
                    "created_at": now,
                    "updated_at": now,
                    "attributes": {},
                }
                for i in range(MESSAGES)
            ],
        )
        queued = queue_for_contacts(
            s, select(Contact.id), template_version_id=version, dedupe_prefix="crash:"
        )
        s.commit()
    assert queued == MESSAGES

    celery = make_celery(settings)
    log = (tmp_path / "worker.log").open("wb")
    worker = _worker(settings, log)
    try:
        for _ in range(3):
            enqueue(celery, "email.send_due")
        deadline = time.monotonic() + 120
        while len(server.received) < 2_500:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker sent too little"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)  # mid-batch: no cleanup of any kind
        worker.wait(10)
        killed_at = len(server.received)
        in_flight = _counts(sessions).get(MessageStatus.SENDING, 0)  # leased, never recorded

        worker = _worker(settings, log)
        deadline = time.monotonic() + 240
        while True:
            counts = _counts(sessions)
            if not counts.get(MessageStatus.QUEUED) and not counts.get(MessageStatus.DEFERRED):
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, counts
            enqueue(celery, "email.send_due")
            time.sleep(1)
        time.sleep(LEASE_SECONDS + 1)  # the dead worker's leases run out
        with sessions() as s:
            expire_leases(s)
            s.commit()
    finally:
        worker.kill()
        worker.wait(10)
        log.close()
        server.controller.stop()

    counts = _counts(sessions)
    print(f"killed after {killed_at} received, {in_flight} in flight; final {counts}")
    assert set(counts) <= {MessageStatus.SENT, MessageStatus.UNKNOWN}, counts
    assert sum(counts.values()) == MESSAGES
    # Exactly the dead worker's batch in flight is unknown; nothing else.
    assert counts.get(MessageStatus.UNKNOWN, 0) == in_flight <= 200

    signer = TokenSigner.from_settings(settings)
    received = Counter()
    for mail in server.received:
        token = MESSAGE_ID.search(mail.data).group(1).decode()
        received[signer.verify(token, TokenKind.VIEW).message_id] += 1
    assert max(received.values()) == 1  # nothing arrived twice
    with sessions() as s:
        sent = set(s.scalars(select(Message.id).where(Message.status == MessageStatus.SENT)))
        unknown = set(s.scalars(select(Message.id).where(Message.status == MessageStatus.UNKNOWN)))
    assert sent <= set(received)  # every "sent" really arrived
    assert set(received) <= sent | unknown  # anything else that arrived is flagged unknown
    assert len(server.received) >= killed_at
    engine.dispose()
