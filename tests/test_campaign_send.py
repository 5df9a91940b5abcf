"""The binding end-to-end test: an A/B campaign to 10,000 contacts on PostgreSQL through
the outbox and a real SMTP server on loopback (aiosmtpd), with simulated human and bot
engagement, a pause and resume mid-send. The sender is driven through its domain
function ``send_due`` (what the Celery task runs) with the SMTP transport."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from campaignkit import bulk_contacts, engage, make_list, write_events
from conftest import make_settings
from emailkit import make_identity, make_template, start_smtp
from sqlalchemy import func, select

from automation import clock
from automation.campaigns import reports, service
from automation.campaigns.models import CampaignStatus, WinnerFallback, WinnerMetric
from automation.campaigns.schema import AbTestIn, CampaignIn, ScheduleIn, VariantIn
from automation.db import make_engine, make_session_factory, transaction
from automation.email.models import Message, MessageStatus
from automation.email.outbox import send_due
from automation.email.sender import Sending
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.signing import TokenSigner

AUDIENCE = 10_000
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _hand_z_test(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p of a pooled two-proportion z-test, written out by hand."""
    p1, p2 = s1 / n1, s2 / n2
    pooled = (s1 + s2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2))))


def test_ten_thousand_contacts_ab_winner_on_human_numbers_pause_resume_once_each(
    tmp_path, postgres_url
):
    now = [START]
    clock.set_source(lambda: now[0])
    server = start_smtp()
    server.behaviour.pipelining = True
    settings = make_settings(tmp_path, postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    transport = SmtpTransport(SmtpSettings(server.host, server.port))
    sending = Sending(settings, transport, TokenSigner.from_settings(settings))
    try:
        with transaction(sessions) as s:
            identity = make_identity(s)
            version = make_template(s, sender_identity_id=identity).version.id
            ids = bulk_contacts(s, "r", AUDIENCE)
            # Two overlapping lists: 2,000 contacts are in both and must get one email.
            first = make_list(s, "First half+", ids[:6000])
            second = make_list(s, "Second half+", ids[4000:])
            assert service.audience_count(s, [first, second]) == AUDIENCE
            campaign_id = service.create_campaign(
                s,
                CampaignIn(
                    name="Big test",
                    include_segment_ids=[first, second],
                    variants=[
                        VariantIn(template_version_id=version),
                        VariantIn(template_version_id=version, subject="A better subject"),
                    ],
                    ab_test=AbTestIn(
                        test_percent=20,
                        test_minutes=120,
                        winner_metric=WinnerMetric.OPEN_RATE,
                        min_sample=500,
                        fallback=WinnerFallback.MANUAL,
                    ),
                ),
            ).id
            service.schedule_campaign(s, campaign_id, ScheduleIn())
        with transaction(sessions) as s:
            assert service.run_due(s)["started"] == 1

        # The test group goes out, with a pause and resume in the middle.
        send_due(sessions, sending, max_batches=1)
        with transaction(sessions) as s:
            service.pause_campaign(s, campaign_id)
        assert send_due(sessions, sending).claimed == 0  # parked: nothing goes
        with transaction(sessions) as s:
            service.resume_campaign(s, campaign_id)
        send_due(sessions, sending)

        with transaction(sessions) as s:
            campaign = service.get_campaign(s, campaign_id)
            assert campaign.status is CampaignStatus.TESTING
            a, b = service.variants_of(s, campaign_id)
            test_messages = list(
                s.scalars(
                    select(Message).where(Message.campaign_id == campaign_id).order_by(Message.id)
                )
            )
            assert {m.status for m in test_messages} == {MessageStatus.SENT}
            by_variant = {
                v.id: [m for m in test_messages if m.campaign_variant_id == v.id] for v in (a, b)
            }
            n_a, n_b = len(by_variant[a.id]), len(by_variant[b.id])
            assert abs(n_a - n_b) <= 1 and 1800 < n_a + n_b < 2200
            # Humans: 20 % of A opens, 26 % of B. Bots (link scanners) open every A
            # message and click every link in it: counted, A would win.
            human_a, human_b = round(0.20 * n_a), round(0.26 * n_b)
            events = [
                engage(s, m, "email.opened", machine=False) for m in by_variant[a.id][:human_a]
            ]
            events += [
                engage(s, m, "email.opened", machine=False) for m in by_variant[b.id][:human_b]
            ]
            events += [engage(s, m, "email.opened", machine=True) for m in by_variant[a.id]]
            events += [
                engage(s, m, "email.clicked", machine=True, link=0) for m in by_variant[a.id]
            ]
            events += [
                engage(s, m, "email.clicked", machine=False, link=0) for m in by_variant[b.id][:50]
            ]
            write_events(s, events)

        now[0] = START + timedelta(minutes=121)
        with transaction(sessions) as s:
            assert service.run_due(s)["decided"] == 1
        with transaction(sessions) as s:
            campaign = service.get_campaign(s, campaign_id)
            result = campaign.test_result
            assert result is not None
            expected_p = _hand_z_test(human_b, n_b, human_a, n_a)
            assert expected_p < 0.05
            assert result["p_value"] == pytest.approx(expected_p, rel=1e-9)
            assert result["significant"] is True
            assert campaign.winner_variant_id == b.id and campaign.winner_source == "test"
            rates = {v["name"]: v["rate"] for v in result["variants"]}
            assert rates == {"A": human_a / n_a, "B": human_b / n_b}
            assert campaign.status is CampaignStatus.SENDING

        # The rest goes out with the winner, paused and resumed mid-send again.
        send_due(sessions, sending, max_batches=3)
        with transaction(sessions) as s:
            service.pause_campaign(s, campaign_id)
        with transaction(sessions) as s:
            queued_while_paused = s.scalar(
                select(func.count()).where(
                    Message.campaign_id == campaign_id, Message.status == MessageStatus.QUEUED
                )
            )
        assert queued_while_paused and queued_while_paused > 0
        assert send_due(sessions, sending).claimed == 0
        with transaction(sessions) as s:
            service.resume_campaign(s, campaign_id)
        while send_due(sessions, sending).claimed:
            pass
        with transaction(sessions) as s:
            assert service.run_due(s)["finished"] == 1

        received = Counter(r for item in server.received for r in item.recipients)
        assert len(received) == AUDIENCE and set(received.values()) == {1}
        with transaction(sessions) as s:
            campaign = service.get_campaign(s, campaign_id)
            assert campaign.status is CampaignStatus.FINISHED
            per_contact = s.execute(
                select(Message.contact_id, func.count())
                .where(Message.campaign_id == campaign_id)
                .group_by(Message.contact_id)
            ).all()
            assert len(per_contact) == AUDIENCE and {n for _, n in per_contact} == {1}
            totals = reports.campaign_report(s, campaign_id)["totals"]
            assert totals["audience"] == totals["sent"] == totals["delivered"] == AUDIENCE
            assert totals["queued"] == totals["failed"] == totals["unknown"] == 0
            assert totals["human_unique_opens"] == human_a + human_b
            assert totals["machine_unique_opens"] == n_a
            winners = s.scalar(
                select(func.count()).where(
                    Message.campaign_id == campaign_id, Message.campaign_variant_id == b.id
                )
            )
            assert winners == AUDIENCE - n_a
    finally:
        transport.close()
        server.controller.stop()
        engine.dispose()
        clock.set_source(None)
