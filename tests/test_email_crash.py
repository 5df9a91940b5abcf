"""A Celery send worker killed with SIGKILL in the middle of a 10,000-message send, then
restarted: the SMTP server received each message at most once, every row ends sent or
`unknown`, none stays `sending`, and only the messages each sender process had in flight
(at most IN_FLIGHT per process: outcomes are recorded as they come) are `unknown`."""

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
from automation.email.outbox.claiming import IN_FLIGHT
from automation.queueing import enqueue, make_celery
from automation.signing import TokenKind, TokenSigner

MESSAGES = 10_000
LEASE_SECONDS = 6
MESSAGE_ID = re.compile(rb"^Message-ID: <([A-Za-z0-9_\-]+)@", re.MULTILINE)


def _worker(settings, log, pool):
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
            pool[0],
            "--concurrency",
            str(pool[1]),
            "--loglevel",
            "WARNING",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the pool's processes die with it
    )


def _counts(sessions):
    with sessions() as s:
        return dict(s.execute(select(Message.status, func.count()).group_by(Message.status)).all())


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("pool", [("solo", 1), ("prefork", 2)], ids=["solo", "prefork2"])
def test_a_worker_killed_mid_send_never_sends_a_message_twice(tmp_path, postgres_url, pool):
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
    worker = _worker(settings, log, pool)
    try:
        for _ in range(3):
            enqueue(celery, "email.send_due")
        deadline = time.monotonic() + 300  # a bound for a hang, not a timing
        while len(server.received) < 2_500:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, (
                f"the worker sent too little: {len(server.received)} received; "
                + (tmp_path / "worker.log").read_text()[-3000:]
            )
            time.sleep(0.05)
        # Every process of the worker at once, mid-batch: no cleanup of any kind.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        time.sleep(0.5)  # the relay finishes reading what was written before the kill
        killed_at = len(server.received)
        with sessions() as s:  # claimed, not recorded: per lease (batch)
            by_lease = dict(
                s.execute(
                    select(Message.lease_owner, func.count())
                    .where(Message.status == MessageStatus.SENDING)
                    .group_by(Message.lease_owner)
                ).all()
            )
        leased = sum(by_lease.values())
        arrived_unrecorded = _arrived(server, settings) - _with_status(
            sessions, MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.DEFERRED
        )

        # The dead worker's leases run out: what it may have handed to the relay becomes
        # unknown, the rest of its batches go back to the queue.
        time.sleep(LEASE_SECONDS + 1)
        with sessions() as s:
            expire_leases(s)
            s.commit()

        worker = _worker(settings, log, pool)
        deadline = time.monotonic() + 240
        while True:
            counts = _counts(sessions)
            waiting = (MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING)
            if not any(counts.get(k) for k in waiting):
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, counts
            enqueue(celery, "email.send_due")
            time.sleep(1)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        log.close()
        server.controller.stop()

    counts = _counts(sessions)
    unknown = _with_status(sessions, MessageStatus.UNKNOWN)
    print(
        f"{pool}: killed after {killed_at} received, {leased} leased, "
        f"{len(arrived_unrecorded)} arrived but unrecorded; final {counts}; leases {by_lease}"
    )
    assert set(counts) <= {MessageStatus.SENT, MessageStatus.UNKNOWN}, counts
    assert sum(counts.values()) == MESSAGES
    # What reached the relay without its outcome recorded is unknown, and little else:
    # at most the IN_FLIGHT messages each sender process may hold; the rest of the dead
    # batches (never handed to the relay) were sent after the restart.
    assert arrived_unrecorded <= unknown
    assert len(unknown) <= IN_FLIGHT * pool[1]
    assert len(unknown) <= leased

    received = Counter(_received_ids(server, settings))
    assert max(received.values()) == 1  # nothing arrived twice
    sent = _with_status(sessions, MessageStatus.SENT)
    assert sent <= set(received)  # every "sent" really arrived
    assert set(received) <= sent | unknown  # anything else that arrived is flagged unknown
    assert len(server.received) >= killed_at
    with sessions() as s:  # each unknown can be looked up in the relay's log
        assert all(s.scalars(select(Message.internet_message_id).where(Message.id.in_(unknown))))
    engine.dispose()


def _received_ids(server, settings) -> list[int]:
    signer = TokenSigner.from_settings(settings)
    return [
        signer.verify(MESSAGE_ID.search(mail.data).group(1).decode(), TokenKind.VIEW).message_id
        for mail in list(server.received)
    ]


def _arrived(server, settings) -> set[int]:
    return set(_received_ids(server, settings))


def _with_status(sessions, *statuses) -> set[int]:
    with sessions() as s:
        return set(s.scalars(select(Message.id).where(Message.status.in_(statuses))))
