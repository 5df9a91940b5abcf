"""Sending benchmarks, each figure beside its floor measured in the same run.

1. Per-recipient render + MIME of a compiled ~30 KB template (tokens, sandboxed Jinja
   render of subject, HTML and text, quoted-printable, headers), one core. Floor: the same
   content assembled with ``email.message.EmailMessage``. Also checks that both parse back
   to the same headers and parts.
2. End to end on PostgreSQL: claim → render → SMTP → mark sent, into postfix's
   ``smtp-sink`` (a fast C SMTP server). Floor: a raw smtplib loop sending one prebuilt
   message to the same sink over one connection.
3. Sender memory over a long send: RSS sampled while the same sender works through the
   queue; it must stay flat (bounded by a batch, not by the size of the send).

``smtp-sink`` is taken from Debian's postfix package without installing the mail server
(``apt-get download postfix`` and ``dpkg -x`` into /tmp/nurture-smtp-sink), or from
``--sink``. Without it (no apt), the smoke run falls back to an in-process aiosmtpd sink.

    .venv/bin/python bench/send.py --url postgresql+psycopg://root@127.0.0.1:5432/nurture_email
    .venv/bin/python bench/send.py --smoke --url …      # seconds (CI)
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import func, insert, select, text

from automation import clock, wiring
from automation.config import load_settings
from automation.contacts.models import Contact
from automation.db import Base, make_engine, make_session_factory
from automation.email.catcher import free_port
from automation.email.compiler import Draft, compile_template
from automation.email.context import template_context
from automation.email.mime import Mail, build_mime
from automation.email.models import (
    Message,
    MessageStatus,
    SenderIdentity,
    Template,
    TemplateKind,
    TemplateVersion,
)
from automation.email.outbox import queue_for_contacts, send_due
from automation.email.render import compile_version, render_email, render_for_send, tracking_urls
from automation.email.samples import _FOOTER, _HEAD, _HEADER
from automation.email.sender import Sending
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.signing import TokenSigner, message_id_header

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
SINK_DIR = Path(tempfile.gettempdir()) / "nurture-smtp-sink"
BASE_URL = "https://mail.example.com"


# --- the template -----------------------------------------------------------------------


def bench_mjml(articles: int = 6) -> str:
    sections = "".join(
        f"""
    <mj-section background-color="#ffffff" padding="12px 24px">
      <mj-column width="40%">
        <mj-image src="https://img.example.com/{i}.png" alt="Story {i}"
                  href="https://shop.example.com/story/{i}" border-radius="6px" />
      </mj-column>
      <mj-column width="60%">
        <mj-text font-weight="600" font-size="18px">Story {i}: the trail, the weather
          and {{{{ contact.first_name | default("you") }}}}</mj-text>
        <mj-text font-size="14px" padding-top="0px">Lorem ipsum dolor sit amet,
          consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.
          <a href="https://shop.example.com/story/{i}?more=1">Read the story →</a></mj-text>
      </mj-column>
    </mj-section>"""
        for i in range(articles)
    )
    return (
        "<mjml>"
        + _HEAD.format(title="The Trail Letter")
        + '\n  <mj-body background-color="#eef3f0">'
        + _HEADER
        + """
    <mj-section background-color="#ffffff" padding="28px 24px 4px">
      <mj-column>
        <mj-text font-size="26px" font-weight="700">
          Spring is here, {{ contact.first_name | default("friend") }}</mj-text>
        {% if "vip" in contact.tags %}<mj-text>VIP: code TRAIL10 saves 10%.</mj-text>{% endif %}
      </mj-column>
    </mj-section>"""
        + sections
        + _FOOTER
        + "\n  </mj-body>\n</mjml>\n"
    )


SUBJECT = "{{ contact.first_name | default('Hi') }}, the Trail Letter is here"


def compiled_template() -> TemplateVersion:
    sample = template_context(
        contact(0), unsubscribe_url="u", preferences_url="p", view_in_browser_url="v"
    )
    result = compile_template(
        Draft(SUBJECT, "Sunrise hikes and trail snacks", bench_mjml(), True),
        known_fields={"plan"},
        sample=sample,
    )
    assert result.compiled is not None, result.errors
    c = result.compiled
    return TemplateVersion(
        id=1,
        template_id=1,
        number=1,
        kind=TemplateKind.MARKETING,
        sender_identity_id=None,
        subject=SUBJECT,
        preheader="Sunrise hikes and trail snacks",
        mjml=bench_mjml(),
        html=c.html,
        text=c.text,
        links=c.links,
        html_bytes=c.html_bytes,
    )


FIRST = ["Ana", "Zoë", "Ben", "Chloé", "Hiro", "Kemi", "Olga", ""]


def contact(i: int) -> dict:
    first = FIRST[i % len(FIRST)]
    return {
        "email": f"user{i}@example.com",
        "first_name": first,
        "last_name": "Müller",
        "full_name": f"{first} Müller".strip(),
        "external_id": None,
        "lifecycle_stage": "lead",
        "score": i % 100,
        "time_zone": "UTC",
        "tags": ["vip"] if i % 5 == 0 else [],
        "attributes": {"plan": "pro"},
    }


# --- 1. render + MIME -------------------------------------------------------------------


def bench_render(n: int) -> None:
    row = compiled_template()
    version = compile_version(row)
    signer = TokenSigner("bench-" + "k" * 40)
    contacts = [contact(i) for i in range(200)]
    now = datetime.now(UTC)

    def ours(i: int) -> bytes:
        tokens = signer.for_message(i + 1, 0x5EED + i, version.id)
        urls = tracking_urls(tokens, BASE_URL, len(version.links))
        c = contacts[i % 200]
        email = render_for_send(version, c, urls, workflow_name="Spring")
        return build_mime(
            Mail(
                from_name="Nurture Outdoor",
                from_email="hello@example.com",
                to_name=c["full_name"],
                to_email=c["email"],
                subject=email.subject,
                html_qp=email.html_qp,
                text_qp=email.text_qp,
                message_id=message_id_header(tokens, "example.com"),
                date=now,
                list_unsubscribe=(urls.unsubscribe, "mailto:unsubscribe@example.com"),
                feedback_id="w1:1:m:nurture",
            )
        )

    def floor(i: int) -> bytes:
        tokens = signer.for_message(i + 1, 0x5EED + i, version.id)
        urls = tracking_urls(tokens, BASE_URL, len(version.links))
        c = contacts[i % 200]
        email = render_email(version, c, urls, workflow_name="Spring")
        msg = EmailMessage(policy=policy.SMTP)
        msg["From"] = "Nurture Outdoor <hello@example.com>"
        msg["To"] = f"{c['full_name']} <{c['email']}>"
        msg["Subject"] = email.subject
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = message_id_header(tokens, "example.com")
        msg["List-Unsubscribe"] = f"<{urls.unsubscribe}>, <mailto:unsubscribe@example.com>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Feedback-ID"] = "w1:1:m:nurture"
        msg.set_content(email.text, cte="quoted-printable")
        msg.add_alternative(email.html, subtype="html", cte="quoted-printable")
        return msg.as_bytes()

    # The two builds of one message parse back to the same headers and parts.
    parse = BytesParser(policy=policy.default).parsebytes
    for i in (0, 1, 5):
        a, b = parse(ours(i)), parse(floor(i))
        for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe-Post"):
            assert str(a[name]) == str(b[name]), name
        for sub in ("plain", "html"):
            x, y = a.get_body((sub,)).get_content(), b.get_body((sub,)).get_content()
            assert x.rstrip("\r\n") == y.rstrip("\r\n"), sub
    size = len(ours(0))

    def timed(fn, count: int) -> tuple[float, float]:
        """(messages per wall second, messages per CPU second of this process)."""
        for i in range(min(200, count)):
            fn(i)
        gc.collect()
        gc.freeze()  # as a sender process does once warmed up (sender.process_sending)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            fn(i)
        return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)

    ours_wall, ours_cpu = max(timed(ours, n) for _ in range(3))
    floor_wall, floor_cpu = max(timed(floor, max(200, n // 10)) for _ in range(2))
    print(
        f"render+MIME: compiled HTML {row.html_bytes / 1024:.1f} KB, {len(row.links)} tracked "
        f"links, message {size / 1024:.1f} KB; one process (one core)"
    )
    print(
        f"  ours:                 {ours_wall:8,.0f} msg/s wall  {ours_cpu:8,.0f} msg/s per CPU "
        f"second  ({1e6 / ours_cpu:5.0f} µs CPU/msg)"
    )
    print(
        f"  floor (EmailMessage): {floor_wall:8,.0f} msg/s wall  {floor_cpu:8,.0f} msg/s per CPU "
        f"second  ({1e6 / floor_cpu:5.0f} µs CPU/msg)"
    )
    print(f"  ratio ours/floor: {ours_cpu / floor_cpu:.1f}x   parsed back identically: yes")


def find_smtp_sink(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    binary = SINK_DIR / "usr/sbin/smtp-sink"
    if binary.exists():
        return binary
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        return None
    SINK_DIR.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        ["apt-get", "download", "postfix"], cwd=SINK_DIR, capture_output=True, timeout=300
    )
    debs = sorted(SINK_DIR.glob("postfix_*.deb"))
    if download.returncode != 0 or not debs:
        return None
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(SINK_DIR)], check=True)
    return binary if binary.exists() else None


class Sink:
    def __init__(self, binary: Path | None) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.controller = None
        if binary is not None:
            env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent.parent / "lib/postfix")}
            command = [str(binary), "-4", "-u", "nobody", f"127.0.0.1:{self.port}", "1024"]
            if os.geteuid() != 0:
                command.remove("-u")
                command.remove("nobody")
            self.process = subprocess.Popen(command, env=env)
            self.kind = "postfix smtp-sink (C)"
        else:
            from aiosmtpd.controller import Controller

            class Discard:
                async def handle_DATA(self, server, session, envelope):
                    return "250 OK"

            self.controller = Controller(Discard(), hostname="127.0.0.1", port=self.port)
            self.controller.start()
            self.kind = "aiosmtpd (fallback: no smtp-sink here)"
        deadline = time.monotonic() + 10
        while True:
            try:
                smtplib.SMTP("127.0.0.1", self.port, timeout=2).quit()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(5)
        if self.controller is not None:
            self.controller.stop()


def bench_raw_smtplib(port: int, data: bytes, n: int) -> float:
    smtp = smtplib.SMTP("127.0.0.1", port)
    smtp.ehlo()
    for _ in range(min(n, 200)):
        smtp.sendmail("hello@example.com", ["someone@example.com"], data)
    started = time.perf_counter()
    for i in range(n):
        smtp.sendmail("hello@example.com", [f"user{i}@example.com"], data)
    elapsed = time.perf_counter() - started
    smtp.quit()
    return n / elapsed


# --- 2 and 3. end to end on PostgreSQL -----------------------------------------------------


def reset(engine) -> None:
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    Base.metadata.create_all(engine)


def prepare(sessions, contacts: int) -> int:
    """A template, a sender identity and `contacts` queued messages; returns the version."""
    now = clock.now()
    row = compiled_template()
    with sessions() as s:
        identity = SenderIdentity(
            name="Bench",
            from_name="Nurture Outdoor",
            from_email="hello@example.com",
            reply_to=None,
            max_per_minute=100_000_000,
            created_at=now,
        )
        template = Template(name="Bench", latest_version=1, created_at=now, updated_at=now)
        s.add_all([identity, template])
        s.flush()
        row.id = None
        row.template_id = template.id
        row.sender_identity_id = identity.id
        row.created_at = now
        s.add(row)
        s.flush()
        for start in range(0, contacts, 10_000):
            s.execute(
                insert(Contact),
                [
                    {
                        "email": f"user{i}@example.com",
                        "first_name": FIRST[i % len(FIRST)],
                        "last_name": "Müller",
                        "attributes": {"plan": "pro"},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(start, min(contacts, start + 10_000))
                ],
            )
        s.commit()
        return row.id


def queue(sessions, version_id: int, prefix: str) -> int:
    with sessions() as s:
        count = queue_for_contacts(
            s, select(Contact.id), template_version_id=version_id, dedupe_prefix=prefix
        )
        s.commit()
    return count


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _settings(url: str, batch: int):
    return load_settings(
        {
            "NURTURE_DATABASE_URL": url,
            "NURTURE_SECRET_KEY": "bench-" + "k" * 40,
            "NURTURE_BASE_URL": BASE_URL,
            "NURTURE_VAR_DIR": tempfile.mkdtemp(),
            "NURTURE_SEND_BATCH_SIZE": str(batch),
        }
    )


def _sender(url: str, port: int, batch: int, version_id: int, start, done) -> None:
    """One sender process: what a Celery worker on the send queue runs, warmed up (its
    compiled-version cache filled, its connection open) as a long-lived worker is."""
    wiring.install()  # a spawned process starts unwired, as build_runtime would wire it
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    settings = _settings(url, batch)
    transport = SmtpTransport(SmtpSettings("127.0.0.1", port))
    sending = Sending(settings, transport, TokenSigner.from_settings(settings))
    with sessions() as session:
        sending.cache.get(session, version_id)
    transport._connection()
    gc.freeze()  # as sender.process_sending does
    start.wait()
    report = send_due(sessions, sending, budget_seconds=24 * 3600)
    transport.close()
    engine.dispose()
    done.put(report.claimed)


def bench_e2e(url: str, sink: Sink, n: int, batch: int, senders: int = 1) -> tuple[float, int]:
    """Messages per second from the first claim to the last outcome recorded."""
    import multiprocessing

    engine = make_engine(url)
    sessions = make_session_factory(engine)
    reset(engine)
    version_id = prepare(sessions, n)
    assert queue(sessions, version_id, f"e2e{senders}:") == n
    engine.dispose()
    context = multiprocessing.get_context("spawn")
    start, done = context.Event(), context.Queue()
    workers = [
        context.Process(target=_sender, args=(url, sink.port, batch, version_id, start, done))
        for _ in range(senders)
    ]
    for worker in workers:
        worker.start()
    time.sleep(3)  # let them import and connect
    started = time.perf_counter()
    start.set()
    claimed = sum(done.get(timeout=1800) for _ in workers)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        sent = s.scalar(select(func.count()).where(Message.status == MessageStatus.SENT))
    engine.dispose()
    assert sent == n == claimed, (sent, claimed)
    return n / elapsed, -(-n // batch)


def bench_memory(url: str, sink: Sink, n: int, batch: int) -> list[tuple[int, float]]:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    reset(engine)
    version_id = prepare(sessions, n)
    queue(sessions, version_id, "mem:")
    settings = _settings(url, batch)
    transport = SmtpTransport(SmtpSettings("127.0.0.1", sink.port))
    sending = Sending(settings, transport, TokenSigner.from_settings(settings))
    gc.freeze()
    samples = [(0, rss_mb())]
    done = 0
    step = max(batch, n // 10)
    while done < n:
        report = send_due(sessions, sending, budget_seconds=3600, max_batches=step // batch)
        if not report.claimed:
            break
        done += report.claimed
        samples.append((done, rss_mb()))
    transport.close()
    engine.dispose()
    return samples


def main() -> None:
    wiring.install()  # reactions, references and every model, as build_runtime does
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--render", type=int, default=20_000, help="messages to render")
    parser.add_argument("--e2e", type=int, default=20_000, help="messages sent end to end")
    parser.add_argument("--memory", type=int, default=200_000, help="messages, memory run")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--senders", type=int, default=2, help="also run N sender processes")
    parser.add_argument("--sink", help="path to smtp-sink")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.render, args.e2e, args.memory, args.batch, args.senders = 300, 300, 600, 100, 1
    random.seed(7)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )

    bench_render(args.render)

    binary = find_smtp_sink(args.sink)
    sink = Sink(binary)
    try:
        version = compile_version(compiled_template())
        signer = TokenSigner("bench-" + "k" * 40)
        tokens = signer.for_message(1, 2, 1)
        email = render_email(
            version, contact(1), tracking_urls(tokens, BASE_URL, len(version.links))
        )
        raw = EmailMessage(policy=policy.SMTP)
        raw["Subject"] = email.subject
        raw.set_content(email.text)
        raw.add_alternative(email.html, subtype="html")
        floor = bench_raw_smtplib(sink.port, raw.as_bytes(), args.e2e)
        print(f"end to end, {args.e2e:,} messages, PostgreSQL, sink: {sink.kind}")
        print(f"  floor (raw smtplib loop, one prebuilt message): {floor:8,.0f} msg/s")
        for senders in sorted({1, args.senders}):
            rate, batches = bench_e2e(args.url, sink, args.e2e, args.batch, senders)
            print(
                f"  claim → render → SMTP → mark sent, {senders} sender process(es): "
                f"{rate:8,.0f} msg/s ({rate / floor:.2f} of the floor; {batches} batches "
                f"of {args.batch})"
            )
        samples = bench_memory(args.url, sink, args.memory, args.batch)
        print(f"sender memory over {args.memory:,} messages (RSS, MB):")
        print("  " + "  ".join(f"{done:,}: {mb:.0f}" for done, mb in samples))
        first = next((mb for done, mb in samples if done > 0), samples[0][1])
        print(
            f"  growth after the first batch: {samples[-1][1] - first:+.1f} MB; "
            f"peak {max(mb for _, mb in samples):.0f} MB (limit 200)"
        )
    finally:
        sink.stop()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
