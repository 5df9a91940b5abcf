"""Starting a campaign and reading its report, on PostgreSQL.

Start = freeze the audience (INSERT … SELECT from a static list, with the A/B bucket and
an even round-robin variant split), per-zone send times, and queueing one outbox row per
recipient through ``queue_for_contacts``. Its floor, measured in the same run: one
hand-written ``INSERT INTO messages … SELECT`` of the same contacts. The report (human
and machine opens and clicks from events, per variant and group) is set beside a
hand-written GROUP BY over messages joined to events with no human/machine split.

    .venv/bin/python bench/campaigns.py --contacts 200000 --url postgresql+psycopg://…/scratch
    .venv/bin/python bench/campaigns.py --smoke --url …     # seconds (CI)
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime

from sqlalchemy import text

from automation import clock, wiring
from automation.campaigns import reports, service
from automation.campaigns.models import CampaignStatus
from automation.campaigns.schema import AbTestIn, CampaignIn, ScheduleIn, VariantIn
from automation.db import Base, make_engine, make_session_factory

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]

FILL = """
INSERT INTO contacts (email, first_name, last_name, status, time_zone, lifecycle_stage, score,
                      attributes, source, emails_sent, opens, clicks, engagement_score,
                      created_at, updated_at)
SELECT 'c' || i || '@example.com', '', '', 'subscribed',
       (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Tokyo',
              'Australia/Sydney'])[1 + i % 5],
       'subscriber', 0, '{}', 'bench', 0, 0, 0, 0, now(), now()
FROM generate_series(1, :contacts) AS i;
INSERT INTO sender_identities (name, from_name, from_email, max_per_minute, created_at,
                               throttle_factor)
VALUES ('Bench', 'Bench', 'bench@example.com', 100000, now(), 1.0);
INSERT INTO segments (name, description, kind, member_count, created_at, updated_at)
VALUES ('All', '', 'static', 0, now(), now());
INSERT INTO segment_memberships (segment_id, contact_id, entered_at)
SELECT 1, id, now() FROM contacts;
ANALYZE contacts;
ANALYZE segment_memberships;
"""

MJML = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Hello</mj-text><mj-button href="https://shop.example/a">A</mj-button>
<mj-text><a href="https://shop.example/b">B</a> <a href="{{ unsubscribe_url }}">Unsubscribe</a>
</mj-text></mj-column></mj-section></mj-body></mjml>"""

FLOOR_QUEUE = """
INSERT INTO messages (dedupe_key, contact_id, template_version_id, sender_identity_id,
    marketing, status, attempts, next_attempt_at, token_nonce, created_at, opens, clicks)
SELECT 'floor:' || contact_id, contact_id, :version, 1, true, 'queued', 0, now(),
       floor(random() * 4294967296)::bigint, now(), 0, 0
FROM segment_memberships WHERE segment_id = 1
"""

ENGAGE = """
INSERT INTO events (contact_id, name, properties, occurred_at, received_at, source)
SELECT m.contact_id, CASE WHEN g % 3 = 0 THEN 'email.clicked' ELSE 'email.opened' END,
       jsonb_build_object('message_id', m.id, 'machine', g % 4 = 0, 'link_index', g % 2),
       now(), now(), 'bench'
FROM messages m, generate_series(1, 2) AS g
WHERE m.campaign_id = :campaign AND m.id % 3 = 0;
ANALYZE events;
ANALYZE messages;
"""

FLOOR_REPORT = """
SELECT m.campaign_variant_id, m.status, count(DISTINCT m.id), count(e.id)
FROM messages m LEFT JOIN events e
  ON e.contact_id = m.contact_id AND e.name IN ('email.opened', 'email.clicked')
 AND (e.properties ->> 'message_id')::bigint = m.id
WHERE m.campaign_id = :campaign
GROUP BY m.campaign_variant_id, m.status
"""


def main() -> None:
    wiring.install()  # reactions, references and every model, as build_runtime does
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--smoke", action="store_true", help="a few hundred rows, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.contacts = 300
    engine = make_engine(args.url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        for statement in FILL.split(";"):
            if statement.strip():
                conn.execute(text(statement), {"contacts": args.contacts})
    print(f"{platform.node()} · {args.contacts:,} contacts in a static list, 5 time zones")
    clock.set_source(lambda: datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    sessions = make_session_factory(engine)
    from automation.email.schema import TemplateIn
    from automation.email.templates import create_template

    with sessions() as s:
        version = create_template(
            s, TemplateIn(name="Bench", subject="Hi", mjml=MJML, sender_identity_id=1)
        ).version.id
        campaign = service.create_campaign(
            s,
            CampaignIn(
                name="Bench",
                include_segment_ids=[1],
                variants=[
                    VariantIn(template_version_id=version),
                    VariantIn(template_version_id=version, subject="Other"),
                ],
                ab_test=AbTestIn(test_percent=100, test_minutes=60),
            ),
        )
        service.schedule_campaign(
            s, campaign.id, ScheduleIn(quiet_start=21, quiet_end=8, fallback_time_zone="UTC")
        )
        campaign_id = campaign.id
        s.commit()

    with sessions() as s:
        started = time.perf_counter()
        s.execute(text(FLOOR_QUEUE), {"version": version})
        floor_queue = time.perf_counter() - started
        s.rollback()
    with sessions() as s:
        started = time.perf_counter()
        service.run_due(s)
        s.commit()
        start_time = time.perf_counter() - started
        assert service.get_campaign(s, campaign_id).status is CampaignStatus.TESTING
    with engine.begin() as conn:
        for statement in ENGAGE.split(";"):
            if statement.strip():
                conn.execute(text(statement), {"campaign": campaign_id})
    with sessions() as s:
        started = time.perf_counter()
        s.execute(text(FLOOR_REPORT), {"campaign": campaign_id}).all()
        floor_report = time.perf_counter() - started
        started = time.perf_counter()
        report = reports.campaign_report(s, campaign_id)
        report_time = time.perf_counter() - started
        started = time.perf_counter()
        reports.test_result(s, service.get_campaign(s, campaign_id))
        test_time = time.perf_counter() - started
    n = args.contacts
    print(f"floor: hand-written INSERT … SELECT of {n:,} messages   {floor_queue:8.3f} s")
    print(
        f"start campaign (freeze, split, zones, queue) {n:,}   {start_time:8.3f} s  "
        f"{start_time / floor_queue:5.2f}x floor  {n / start_time:,.0f} recipients/s"
    )
    print(f"floor: hand-written report GROUP BY             {floor_report:8.3f} s")
    print(
        f"campaign_report (totals, variants, links, time) {report_time:8.3f} s  "
        f"{report_time / floor_report:5.2f}x floor"
    )
    print(f"test_result (winner decision)                   {test_time:8.3f} s")
    print(
        f"check: audience {report['totals']['audience']:,}, queued {report['totals']['queued']:,}"
    )
    clock.set_source(None)
    engine.dispose()


if __name__ == "__main__":
    main()
