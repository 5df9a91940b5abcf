"""Settings read from NURTURE_* environment variables, with an embedded default.

With nothing set, Nurture runs on a SQLite file and an embedded broker under
``var/`` and sends to a local SMTP catcher, so a newcomer needs no servers.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEFAULT_LANGUAGE = "en"
LANGUAGE_TAG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"  # BCP 47, as <html lang> takes it


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    broker_url: str
    secret_key: str
    base_url: str
    smtp_host: str
    smtp_port: int
    smtp_tls: str  # "none" | "starttls" | "ssl"
    smtp_username: str
    smtp_password: str
    default_sender: str
    catcher_enabled: bool
    metrics_token: str = ""
    secret_key_generated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # Earlier secret keys: public links signed with them still verify (key rotation).
    old_secret_keys: tuple[str, ...] = ()
    # Marketing emails per contact per window, across all workflows and campaigns; 0 = no cap.
    frequency_cap: int = 0
    frequency_cap_days: int = 7
    frequency_cap_action: str = "defer"  # "defer" | "skip"
    send_batch_size: int = 200
    send_lease_seconds: int = 300
    # Address for the List-Unsubscribe mailto; empty = unsubscribe@<sender's domain>.
    unsubscribe_mailto: str = ""
    # The workspace's email language (<html lang>) for templates that name none (BCP 47).
    email_language: str = DEFAULT_LANGUAGE
    # Tracking: the hit queue (a redis:// URL; empty = the broker if it is Redis, else a
    # local spool under var/hits), the engagement score's half-life, the bounce webhook key.
    hit_queue_url: str = ""
    # How a web process queues a hit when the queue is Redis: "spool" (append to var/hits;
    # `nurture tracking forward` moves it to Redis) or "redis" (one RPUSH per hit).
    hit_queue_push: str = "spool"
    engagement_half_life_days: float = 30.0
    webhook_secret: str = ""
    # Sunset: no human engagement over this many sends or days → inactive (0 = off).
    sunset_sends: int = 0
    sunset_days: int = 0
    # Bounces and complaints: soft bounces suppress an address after this many within the
    # window; the complaint guard pauses a sender over 0.3 % with at least this many
    # complaints among its messages sent within its window.
    soft_bounce_limit: int = 3
    soft_bounce_days: int = 30
    complaint_min_count: int = 3
    complaint_window_days: int = 30
    # Lead-capture forms: posts per minute per IP address and form (0 = no limit).
    form_rate_limit: int = 10
    # Site collect (/t/collect): requests per minute per visitor id and per IP address.
    collect_rate_limit_visitor: int = 60
    collect_rate_limit_address: int = 600
    # Template test sends per minute per user or API key (0 = no limit).
    test_send_rate_limit: int = 10
    # Reverse proxies in front of Nurture whose X-Forwarded-* headers are trusted, by header
    # ("for", "proto", "host", "port", "prefix" → how many proxies set it; werkzeug's
    # ProxyFix). Empty: none, the client address is the TCP peer.
    trusted_proxies: dict[str, int] = field(default_factory=dict)
    # Strict-Transport-Security max-age on https responses (0 = never sent).
    hsts_seconds: int = 31536000
    # Beat periods, in seconds (see automation.queueing.beat_schedule).
    send_tick_seconds: float = 5.0
    lease_expiry_seconds: float = 30.0  # expired send leases → `unknown`
    workflow_tick_seconds: float = 2.0
    workflow_date_scan_seconds: float = 60.0
    campaign_tick_seconds: float = 10.0
    segment_reconcile_seconds: float = 600.0
    hit_drain_seconds: float = 2.0  # tracking hits and site events
    sunset_scan_seconds: float = 3600.0
    anonymous_expiry_seconds: float = 86400.0
    import_sweep_seconds: float = 60.0
    # A running import that showed no progress for this long lost its worker: failed.
    import_stale_seconds: float = 900.0
    # The longest a workflow worker may sit idle inside a batch's transaction (PostgreSQL).
    workflow_hold_seconds: float = 300.0
    # Test-only: a file holding the time every process started with it sees (automation.clock).
    clock_file: str = ""

    @property
    def embedded(self) -> bool:
        """True when running on the built-in SQLite database (no servers configured)."""
        return self.database_url.startswith("sqlite")

    @property
    def maildir(self) -> Path:
        return self.var_dir / "maildir"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _secret_key(var_dir: Path, env: dict[str, str]) -> tuple[str, bool]:
    """The configured key, or one generated once and kept in var/ (embedded default only)."""
    if env.get("NURTURE_SECRET_KEY"):
        return env["NURTURE_SECRET_KEY"], False
    key_file = var_dir / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip(), True
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key, True


PROXY_HEADERS = ("for", "proto", "host", "port", "prefix")


def parse_trusted_proxies(value: str) -> dict[str, int]:
    """NURTURE_TRUSTED_PROXIES: a count (that many proxies set X-Forwarded-For and
    X-Forwarded-Proto) or ``for=1,proto=1,host=1``; empty or 0 trusts none."""
    value = value.strip()
    if not value:
        return {}
    if value.isdigit():
        count = int(value)
        return {"for": count, "proto": count} if count else {}
    counts: dict[str, int] = {}
    for part in value.split(","):
        name, _, number = part.strip().partition("=")
        if name not in PROXY_HEADERS or not number.strip().isdigit():
            raise ValueError(
                "NURTURE_TRUSTED_PROXIES must be a count or name=count pairs with names "
                f"from {', '.join(PROXY_HEADERS)} (got {part.strip()!r})"
            )
        counts[name] = int(number)
    return {name: count for name, count in counts.items() if count}


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    var_dir = Path(env.get("NURTURE_VAR_DIR", "var")).resolve()
    database_url = env.get("NURTURE_DATABASE_URL") or f"sqlite:///{var_dir / 'nurture.sqlite'}"
    broker_url = env.get("NURTURE_BROKER_URL") or f"sqla+sqlite:///{var_dir / 'broker.sqlite'}"
    secret_key, generated = _secret_key(var_dir, env)
    smtp_host = env.get("NURTURE_SMTP_HOST", "")
    catcher = not smtp_host
    if env.get("NURTURE_FREQUENCY_CAP_ACTION", "defer") not in ("defer", "skip"):
        raise ValueError("NURTURE_FREQUENCY_CAP_ACTION must be defer or skip")
    if env.get("NURTURE_HIT_QUEUE_PUSH", "spool") not in ("spool", "redis"):
        raise ValueError("NURTURE_HIT_QUEUE_PUSH must be spool or redis")
    language = env.get("NURTURE_EMAIL_LANGUAGE", "").strip() or DEFAULT_LANGUAGE
    if not re.fullmatch(LANGUAGE_TAG, language) or len(language) > 35:
        raise ValueError("NURTURE_EMAIL_LANGUAGE must be a language tag such as en or pt-BR")
    return Settings(
        var_dir=var_dir,
        database_url=database_url,
        broker_url=broker_url,
        secret_key=secret_key,
        secret_key_generated=generated,
        base_url=env.get("NURTURE_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
        smtp_host=smtp_host or "127.0.0.1",
        smtp_port=int(env.get("NURTURE_SMTP_PORT", "1025" if catcher else "587")),
        smtp_tls=env.get("NURTURE_SMTP_TLS", "none" if catcher else "starttls"),
        smtp_username=env.get("NURTURE_SMTP_USERNAME", ""),
        smtp_password=env.get("NURTURE_SMTP_PASSWORD", ""),
        default_sender=env.get("NURTURE_DEFAULT_SENDER", "Nurture <hello@example.com>"),
        catcher_enabled=catcher or _bool(env.get("NURTURE_SMTP_CATCHER", "0")),
        old_secret_keys=tuple(
            k.strip() for k in env.get("NURTURE_OLD_SECRET_KEYS", "").split(",") if k.strip()
        ),
        frequency_cap=int(env.get("NURTURE_FREQUENCY_CAP", "0")),
        frequency_cap_days=int(env.get("NURTURE_FREQUENCY_CAP_DAYS", "7")),
        frequency_cap_action=env.get("NURTURE_FREQUENCY_CAP_ACTION", "defer"),
        send_batch_size=int(env.get("NURTURE_SEND_BATCH_SIZE", "200")),
        send_lease_seconds=int(env.get("NURTURE_SEND_LEASE_SECONDS", "300")),
        unsubscribe_mailto=env.get("NURTURE_UNSUBSCRIBE_MAILTO", ""),
        email_language=language,
        metrics_token=env.get("NURTURE_METRICS_TOKEN", ""),
        hit_queue_url=env.get("NURTURE_HIT_QUEUE_URL", ""),
        hit_queue_push=env.get("NURTURE_HIT_QUEUE_PUSH", "spool"),
        engagement_half_life_days=float(env.get("NURTURE_ENGAGEMENT_HALF_LIFE_DAYS", "30")),
        webhook_secret=env.get("NURTURE_WEBHOOK_SECRET", ""),
        sunset_sends=int(env.get("NURTURE_SUNSET_SENDS", "0")),
        sunset_days=int(env.get("NURTURE_SUNSET_DAYS", "0")),
        soft_bounce_limit=int(env.get("NURTURE_SOFT_BOUNCE_LIMIT", "3")),
        soft_bounce_days=int(env.get("NURTURE_SOFT_BOUNCE_DAYS", "30")),
        complaint_min_count=int(env.get("NURTURE_COMPLAINT_MIN_COUNT", "3")),
        complaint_window_days=int(env.get("NURTURE_COMPLAINT_WINDOW_DAYS", "30")),
        form_rate_limit=int(env.get("NURTURE_FORM_RATE_LIMIT", "10")),
        collect_rate_limit_visitor=int(env.get("NURTURE_COLLECT_RATE_LIMIT_VISITOR", "60")),
        collect_rate_limit_address=int(env.get("NURTURE_COLLECT_RATE_LIMIT_ADDRESS", "600")),
        test_send_rate_limit=int(env.get("NURTURE_TEST_SEND_RATE_LIMIT", "10")),
        trusted_proxies=parse_trusted_proxies(env.get("NURTURE_TRUSTED_PROXIES", "")),
        hsts_seconds=int(env.get("NURTURE_HSTS_SECONDS", "31536000")),
        send_tick_seconds=float(env.get("NURTURE_SEND_TICK_SECONDS", "5")),
        lease_expiry_seconds=float(env.get("NURTURE_LEASE_EXPIRY_SECONDS", "30")),
        workflow_tick_seconds=float(env.get("NURTURE_WORKFLOW_TICK_SECONDS", "2")),
        workflow_date_scan_seconds=float(env.get("NURTURE_WORKFLOW_DATE_SCAN_SECONDS", "60")),
        campaign_tick_seconds=float(env.get("NURTURE_CAMPAIGN_TICK_SECONDS", "10")),
        segment_reconcile_seconds=float(env.get("NURTURE_SEGMENT_RECONCILE_SECONDS", "600")),
        hit_drain_seconds=float(env.get("NURTURE_HIT_DRAIN_SECONDS", "2")),
        sunset_scan_seconds=float(env.get("NURTURE_SUNSET_SCAN_SECONDS", "3600")),
        anonymous_expiry_seconds=float(env.get("NURTURE_ANONYMOUS_EXPIRY_SECONDS", "86400")),
        import_sweep_seconds=float(env.get("NURTURE_IMPORT_SWEEP_SECONDS", "60")),
        import_stale_seconds=float(env.get("NURTURE_IMPORT_STALE_SECONDS", "900")),
        workflow_hold_seconds=float(env.get("NURTURE_WORKFLOW_HOLD_SECONDS", "300")),
        clock_file=env.get("NURTURE_CLOCK_FILE", ""),
    )
