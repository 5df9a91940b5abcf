"""`nurture doctor`: what is wrong with this installation's configuration, in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import text

from automation.migrate import is_current
from automation.ops.backlog import spool_backlogs
from automation.ops.health import check_broker, check_database, check_smtp
from automation.runtime import Runtime
from automation.tracking.hits import tracking_redis_url


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | error
    topic: str
    message: str


def check_secret_key(runtime: Runtime) -> Finding:
    settings = runtime.settings
    if settings.secret_key_generated and not settings.embedded:
        return Finding(
            "error",
            "secret key",
            "NURTURE_SECRET_KEY is not set; a generated key "
            "in var/ differs per machine, so links signed on one node fail on others",
        )
    if len(settings.secret_key) < 32 or len(set(settings.secret_key)) < 10:
        return Finding(
            "error",
            "secret key",
            "NURTURE_SECRET_KEY is too weak: use at least 32 "
            "random characters (python3 -c 'import secrets; print(secrets.token_urlsafe(48))')",
        )
    return Finding("ok", "secret key", "set and strong")


def check_base_url(runtime: Runtime) -> Finding:
    url = runtime.settings.base_url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Finding("error", "base URL", f"NURTURE_BASE_URL {url!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        return Finding("error", "base URL", "NURTURE_BASE_URL must not have a query or fragment")
    if not runtime.settings.embedded and parts.scheme != "https":
        return Finding(
            "warn",
            "base URL",
            "tracking and unsubscribe links will be plain http; "
            "mail clients and recipients expect https",
        )
    if parts.hostname in ("127.0.0.1", "localhost") and not runtime.settings.embedded:
        return Finding("error", "base URL", "links in sent mail would point at localhost")
    return Finding("ok", "base URL", url)


def check_smtp_settings(runtime: Runtime) -> Finding:
    s = runtime.settings
    if s.catcher_enabled and not s.embedded:
        return Finding(
            "warn",
            "SMTP",
            "no NURTURE_SMTP_HOST: mail goes to the local catcher and is never delivered",
        )
    if bool(s.smtp_username) != bool(s.smtp_password):
        return Finding("error", "SMTP", "set both NURTURE_SMTP_USERNAME and NURTURE_SMTP_PASSWORD")
    if s.smtp_tls not in ("none", "starttls", "ssl"):
        return Finding(
            "error", "SMTP", f"NURTURE_SMTP_TLS={s.smtp_tls!r}: use none, starttls or ssl"
        )
    if s.smtp_username and s.smtp_tls == "none":
        return Finding("warn", "SMTP", "credentials would be sent without TLS")
    reach = check_smtp(runtime)
    if not reach.ok:
        return Finding(
            "error",
            "SMTP",
            f"cannot reach {s.smtp_host}:{s.smtp_port}: {reach.cause or reach.detail}",
        )
    return Finding("ok", "SMTP", f"{s.smtp_host}:{s.smtp_port} answers")


def check_clock(runtime: Runtime) -> Finding:
    with runtime.engine.connect() as conn:
        if runtime.engine.dialect.name != "postgresql":
            return Finding("ok", "clock", "embedded database shares this machine's clock")
        db_now = conn.execute(text("SELECT now()")).scalar_one()
    skew = abs((datetime.now(UTC) - db_now).total_seconds())
    if skew > 5:
        return Finding(
            "error",
            "clock",
            f"this machine and the database differ by {skew:.0f} s; "
            "run NTP: waits and send windows depend on it",
        )
    return Finding("ok", "clock", f"within {skew:.2f} s of the database")


def check_migrations(runtime: Runtime) -> Finding:
    if not is_current(runtime.engine):
        return Finding(
            "error",
            "migrations",
            "the database is not at the latest migration: run `nurture migrate`",
        )
    return Finding("ok", "migrations", "current")


def check_hit_queue(runtime: Runtime) -> Finding:
    """How this machine queues tracking hits, and whether its spool is moving."""

    s = runtime.settings
    if not tracking_redis_url(s):
        return Finding("ok", "hit queue", "local spool, drained by the tracking worker")
    waiting = {n: b for n, b in spool_backlogs(s).items() if b.oldest_seconds > 60}
    if waiting:
        what = ", ".join(
            f"{n}: {b.bytes} bytes for {b.oldest_seconds:.0f} s" for n, b in waiting.items()
        )
        return Finding(
            "warn",
            "hit queue",
            f"spooled on this machine and not forwarded ({what}): run `nurture tracking forward`",
        )
    if s.hit_queue_push == "redis":
        return Finding("ok", "hit queue", "one RPUSH to Redis per hit")
    return Finding(
        "ok",
        "hit queue",
        "spooled on each web machine and moved to Redis by `nurture tracking forward` "
        "(one per web machine)",
    )


def diagnose(runtime: Runtime) -> list[Finding]:
    database = check_database(runtime)
    if not database.ok:
        return [Finding("error", "database", f"unreachable: {database.cause or database.detail}")]
    broker = check_broker(runtime)
    findings = [
        Finding("ok", "database", database.detail),
        Finding("ok", "broker", "reachable")
        if broker.ok
        else Finding("error", "broker", f"unreachable: {broker.cause or broker.detail}"),
    ]
    for check in (
        check_secret_key,
        check_base_url,
        check_smtp_settings,
        check_clock,
        check_migrations,
        check_hit_queue,
    ):
        findings.append(check(runtime))
    return findings
