"""The campaign page's progress poll (every 2 s while a campaign runs) and cancel, on
PostgreSQL, with the ``ix_messages_campaign_status`` index and without it (the baseline,
measured in the same run on the same rows: the index dropped, then created again).

The outbox holds ``--messages`` rows of 20 campaigns; the one measured holds 1 % of them
(a 10,000-recipient campaign in an outbox of a million rows). Its progress is read
(``service.campaign_progress``) and its waiting messages withdrawn
(``outbox.withdraw``, what cancel runs; inside a rolled-back transaction, the
table vacuumed after each phase so neither phase inherits the other's dead rows).

    .venv/bin/python bench/campaign_progress.py --messages 1000000 --url postgresql+psycopg://…
    .venv/bin/python bench/campaign_progress.py --smoke --url …     # seconds (CI)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import UTC, datetime

from sqlalchemy import text

from automation import clock, wiring
from automation.campaigns import service
from automation.campaigns.models import Campaign, CampaignStatus
from automation.db import Base, make_engine, make_session_factory
from automation.email.models import Message
from automation.email.outbox import withdraw as withdraw_messages

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
CAMPAIGNS = 20

FILL = """
INSERT INTO contacts (email, first_name, last_name, status, time_zone, lifecycle_stage, score,
                      attributes, source, emails_sent, opens, clicks, engagement_score,
                      created_at, updated_at)
SELECT 'c' || i || '@example.com', '', '', 'subscribed', 'UTC', 'subscriber', 0, '{}',
       'bench', 0, 0, 0, 0, now(), now()
FROM generate_series(1, :contacts) AS i;
INSERT INTO templates (name, latest_version, created_at, updated_at)
VALUES ('Bench', 1, now(), now());
INSERT INTO template_versions (template_id, number, kind, subject, preheader, mjml, html, text,
                               links, html_bytes, created_at)
VALUES (1, 1, 'marketing', 's', '', '', '', '', '[]', 0, now());
INSERT INTO campaigns (name, status, include_segment_ids, exclude_segment_ids, schedule_mode,
    fallback_time_zone, test_percent, test_minutes, winner_metric, winner_method, min_sample,
    confidence, fallback, audience_count, utm, created_at, updated_at)
SELECT 'Campaign ' || k, 'sending', '[]', '[]', 'now', 'UTC', 0, 0, 'open_rate', 'z_test',
       0, 0.95, 'leader', :per, '{}', now(), now()
FROM generate_series(1, :campaigns) AS k;
INSERT INTO messages (dedupe_key, contact_id, template_version_id, marketing, status, attempts,
    next_attempt_at, token_nonce, created_at, opens, clicks, campaign_id)
SELECT 'm:' || i, 1 + i % :contacts, 1, true,
       (ARRAY['sent', 'sent', 'sent', 'queued', 'deferred', 'failed'])[1 + i % 6],
       CASE WHEN i % 6 = 4 THEN 1 ELSE 0 END, now(), i, now(), 0, 0,
       CASE WHEN i % 100 = 0 THEN :campaigns ELSE 1 + i % (:campaigns - 1) END
FROM generate_series(1, :messages) AS i
"""
MEASURED = CAMPAIGNS  # the campaign with 1 % of the rows


def _median(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    wiring.install()  # reactions, references and every model, as build_runtime does
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--smoke", action="store_true", help="a few thousand rows, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.messages = 6_000
    runs = 3 if args.smoke else 15
    clock.set_source(lambda: datetime.now(UTC))
    engine = make_engine(args.url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    values = {
        "contacts": max(args.messages // CAMPAIGNS, 1),
        "messages": args.messages,
        "campaigns": CAMPAIGNS,
        "per": args.messages // CAMPAIGNS,
    }
    with engine.begin() as conn:
        for statement in FILL.split(";"):
            if statement.strip():
                conn.execute(text(statement), values)
    vacuum = make_engine(args.url, isolation_level="AUTOCOMMIT")

    def clean() -> None:
        with vacuum.connect() as conn:
            conn.execute(text("VACUUM ANALYZE messages"))

    clean()
    sessions = make_session_factory(engine)
    print(
        f"{platform.node()} · {args.messages:,} messages over {CAMPAIGNS} campaigns, "
        f"median of {runs}"
    )

    def progress() -> None:
        with sessions() as s:
            campaign = s.get(Campaign, MEASURED)
            assert campaign is not None and campaign.status is CampaignStatus.SENDING
            service.campaign_progress(s, campaign)

    def withdraw() -> None:
        with sessions() as s:
            withdraw_messages(s, Message.campaign_id == MEASURED)
            s.rollback()

    figures = {}
    for label in ("without index", "with index"):
        if label == "without index":
            with engine.begin() as conn:
                conn.execute(text("DROP INDEX ix_messages_campaign_status"))
        else:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "CREATE INDEX ix_messages_campaign_status ON messages (campaign_id, status)"
                    )
                )
        clean()
        figures[label] = (_median(progress, runs), _median(withdraw, runs))
        clean()
        p, w = figures[label]
        print(
            f"{label:14s}  progress poll {p * 1000:9.2f} ms   cancel (withdraw) {w * 1000:9.2f} ms"
        )
    (p0, w0), (p1, w1) = figures["without index"], figures["with index"]
    print(f"speed-up: progress {p0 / p1:.1f}x, cancel {w0 / w1:.1f}x")
    engine.dispose()
    vacuum.dispose()


if __name__ == "__main__":
    main()
