"""Campaigns on SQLite and PostgreSQL: audience, scheduling, queueing through the outbox,
pause / resume / cancel, the A/B winner (significance on human numbers only), reports,
and every bad input naming its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from campaignkit import bulk_contacts, engage, make_list, write_events
from emailkit import make_template
from sqlalchemy import func, select

from automation import clock
from automation.campaigns import reports, service
from automation.campaigns.models import (
    CampaignRecipient,
    CampaignStatus,
    ScheduleMode,
    WinnerFallback,
)
from automation.campaigns.schema import AbTestIn, CampaignIn, ScheduleIn, VariantIn
from automation.campaigns.stats import probability_to_beat, two_proportion_p_value, wilson_interval
from automation.contacts.models import Contact
from automation.email.models import Message, MessageStatus, Template
from automation.email.outbox import PARKED
from automation.errors import Conflict, InvalidInput

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def frozen():
    c = Clock()
    clock.set_source(lambda: c.now)
    yield c
    clock.set_source(None)


@pytest.fixture
def setup(session, frozen):
    template = make_template(session)
    ids = bulk_contacts(session, "c", 40)
    a = make_list(session, "A list", ids[:30])
    b = make_list(session, "B list", ids[20:])  # 10 contacts in both lists
    excluded = make_list(session, "Excluded", ids[:5])
    session.flush()
    return {"version": template.version.id, "ids": ids, "a": a, "b": b, "x": excluded}


def _paths(exc: pytest.ExceptionInfo[InvalidInput]) -> set[str]:
    return {e.path for e in exc.value.errors}


def _campaign(session, setup, **overrides):
    data = {
        "name": "Spring sale",
        "include_segment_ids": [setup["a"], setup["b"]],
        "exclude_segment_ids": [setup["x"]],
        "variants": [VariantIn(template_version_id=setup["version"])],
    }
    data.update(overrides)
    return service.create_campaign(session, CampaignIn(**data))


def _messages(session, campaign_id):
    return list(session.scalars(select(Message).where(Message.campaign_id == campaign_id)))


def test_audience_counts_each_contact_once_minus_exclusions(session, setup):
    assert service.audience_count(session, [setup["a"], setup["b"]], [setup["x"]]) == 35


def test_a_campaign_sends_one_message_per_contact_and_finishes(session, setup, frozen):
    campaign = _campaign(session, setup)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    assert service.run_due(session)["started"] == 1
    assert campaign.status is CampaignStatus.SENDING
    assert campaign.audience_count == 35
    messages = _messages(session, campaign.id)
    assert len({m.contact_id for m in messages}) == len(messages) == 35
    assert service.run_due(session)["started"] == 0  # a second tick queues nothing new
    assert len(_messages(session, campaign.id)) == 35
    # Outcomes as the sender records them: finished only once every message has one.
    for n, m in enumerate(messages):
        m.status = MessageStatus.SENT if n else MessageStatus.QUEUED
    session.flush()
    assert service.run_due(session)["finished"] == 0
    messages[0].status = MessageStatus.SUPPRESSED
    session.flush()
    assert service.run_due(session)["finished"] == 1
    assert campaign.status is CampaignStatus.FINISHED


def test_pause_parks_waiting_messages_and_resume_restores_them(session, setup, frozen):
    campaign = _campaign(session, setup)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    service.pause_campaign(session, campaign.id)
    session.flush()
    session.expire_all()
    assert {m.next_attempt_at for m in _messages(session, campaign.id)} == {PARKED}
    with pytest.raises(Conflict):
        service.pause_campaign(session, campaign.id)
    # A message a sender held during the pause comes back deferred: the tick parks it.
    deferred = _messages(session, campaign.id)[0]
    deferred.status, deferred.next_attempt_at = MessageStatus.DEFERRED, frozen.now
    session.flush()
    assert service.run_due(session)["reparked"] == 1
    frozen.advance(minutes=5)
    service.resume_campaign(session, campaign.id)
    session.flush()
    session.expire_all()
    assert {m.next_attempt_at for m in _messages(session, campaign.id)} == {frozen.now}
    assert campaign.status is CampaignStatus.SENDING


def test_cancel_removes_untaken_messages_keeps_sent_and_attempted_ones(session, setup):
    campaign = _campaign(session, setup)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    sent, capped, retried, held = _messages(session, campaign.id)[:4]
    sent.status = MessageStatus.SENT
    # Deferred by the frequency cap: never handed to a relay.
    capped.status, capped.reason = MessageStatus.DEFERRED, "frequency_cap"
    # Deferred after a 4xx: an SMTP conversation happened, its record stays.
    retried.status, retried.attempts = MessageStatus.DEFERRED, 1
    retried.reason, retried.smtp_response = "temporary_failure", "451 try later"
    held.status = MessageStatus.SENDING  # a sender holds it while the campaign is cancelled
    session.flush()
    service.cancel_campaign(session, campaign.id)
    session.expire_all()
    left = {m.id: m for m in _messages(session, campaign.id)}
    assert set(left) == {sent.id, retried.id, held.id}
    assert (left[retried.id].status, left[retried.id].reason) == (MessageStatus.FAILED, "withdrawn")
    assert left[retried.id].smtp_response == "451 try later"
    # The held one comes back deferred after the cancel: the tick withdraws it, never resent.
    left[held.id].status, left[held.id].attempts = MessageStatus.DEFERRED, 1
    session.flush()
    assert service.run_due(session)["withdrawn"] == 1
    session.expire_all()
    assert left[held.id].status is MessageStatus.FAILED
    assert left[sent.id].status is MessageStatus.SENT
    with pytest.raises(Conflict):
        service.resume_campaign(session, campaign.id)


def test_local_time_and_quiet_hours_per_recipient_zone(session, setup, frozen):
    ids = setup["ids"]
    session.query(Contact).filter(Contact.id.in_(ids[5:10])).update(
        {Contact.time_zone: "America/New_York"}, synchronize_session=False
    )
    session.query(Contact).filter(Contact.id.in_(ids[10:12])).update(
        {Contact.time_zone: "Not/AZone"}, synchronize_session=False
    )
    campaign = _campaign(session, setup)
    service.schedule_campaign(
        session,
        campaign.id,
        ScheduleIn(
            mode=ScheduleMode.LOCAL,
            local_date="2026-03-03",
            local_time="07:30",
            fallback_time_zone="Asia/Tokyo",
            quiet_start=21,
            quiet_end=8,
        ),
    )
    frozen.now = campaign.next_run_at
    service.run_due(session)
    times = {m.contact_id: m.next_attempt_at for m in _messages(session, campaign.id)}
    # 07:30 is inside quiet hours (21-08): each recipient gets 08:00 local.
    assert times[ids[5]] == datetime(2026, 3, 3, 13, 0, tzinfo=UTC)  # New York, UTC-5
    assert times[ids[10]] == datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # fallback Tokyo
    assert times[ids[20]] == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)  # UTC


def _ab(session, setup, **ab):
    settings = {"test_percent": 50, "test_minutes": 60, "min_sample": 5}
    settings.update(ab)
    return _campaign(
        session,
        setup,
        variants=[
            VariantIn(template_version_id=setup["version"]),
            VariantIn(template_version_id=setup["version"], subject="Another subject"),
        ],
        ab_test=AbTestIn(**settings),
    )


def test_ab_split_is_even_and_deterministic_and_the_winner_goes_to_the_rest(session, setup, frozen):
    campaign = _ab(session, setup, fallback=WinnerFallback.CONTROL)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    assert campaign.status is CampaignStatus.TESTING
    rows = session.execute(
        select(CampaignRecipient.variant_id, func.count())
        .where(CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.test.is_(True))
        .group_by(CampaignRecipient.variant_id)
    ).all()
    counts = sorted(n for _, n in rows)
    assert counts[1] - counts[0] <= 1
    test_messages = _messages(session, campaign.id)
    assert len(test_messages) == sum(counts)
    with pytest.raises(Conflict):
        service.resume_campaign(session, campaign.id)
    for m in test_messages:
        m.status = MessageStatus.SENT
    b = service.variants_of(session, campaign.id)[1]
    # Bots open every B message; humans open nothing: machine hits never decide.
    write_events(
        session,
        [engage(session, m, "email.opened", machine=True) for m in test_messages],
    )
    session.flush()
    frozen.advance(minutes=61)
    assert service.run_due(session)["decided"] == 1
    assert campaign.winner_source == "fallback"  # no human signal: not significant
    assert campaign.winner_variant_id == service.variants_of(session, campaign.id)[0].id
    assert campaign.winner_variant_id != b.id
    assert len(_messages(session, campaign.id)) == 35
    assert campaign.status is CampaignStatus.SENDING


def test_the_test_period_starts_at_the_last_test_send(session, setup, frozen):
    campaign = _ab(session, setup, test_minutes=60)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    test_messages = _messages(session, campaign.id)
    # An hour passes and one test message still waits (throttled): no decision yet.
    for m in test_messages[1:]:
        m.status, m.sent_at = MessageStatus.SENT, NOW + timedelta(minutes=5)
    session.flush()
    frozen.advance(minutes=61)
    assert service.run_due(session)["decided"] == 0
    assert campaign.status is CampaignStatus.TESTING
    # It goes out at 10:40; the test ends at 11:40, not 11:00.
    last = NOW + timedelta(minutes=40)
    test_messages[0].status, test_messages[0].sent_at = MessageStatus.SENT, last
    session.flush()
    frozen.now = last + timedelta(minutes=59)
    assert service.run_due(session)["decided"] == 0
    assert campaign.next_run_at == last + timedelta(minutes=60)
    frozen.now = last + timedelta(minutes=60)
    assert service.run_due(session)["decided"] == 1
    assert campaign.status is CampaignStatus.SENDING


def test_a_message_capped_for_days_does_not_hold_the_test_back(session, setup, frozen):
    campaign = _ab(session, setup, test_minutes=60)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    first, *rest = _messages(session, campaign.id)
    for m in rest:
        m.status, m.sent_at = MessageStatus.SENT, NOW
    first.status, first.reason = MessageStatus.DEFERRED, "frequency_cap"
    first.next_attempt_at = NOW + timedelta(days=3)
    session.flush()
    frozen.advance(minutes=60)
    assert service.run_due(session)["decided"] == 1


def test_bayesian_winner_is_stored_like_the_z_test(session, setup, frozen):
    campaign = _ab(session, setup, winner_method="bayesian", fallback=WinnerFallback.MANUAL)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    a, b = service.variants_of(session, campaign.id)
    messages = _messages(session, campaign.id)
    for m in messages:
        m.status, m.sent_at = MessageStatus.SENT, NOW
    b_messages = [m for m in messages if m.campaign_variant_id == b.id]
    write_events(session, [engage(session, m, "email.opened", machine=False) for m in b_messages])
    session.flush()
    frozen.advance(minutes=61)
    assert service.run_due(session)["decided"] == 1
    result = campaign.test_result
    assert result["method"] == "bayesian"
    n_a = sum(1 for m in messages if m.campaign_variant_id == a.id)
    expected = _beat_by_integration(len(b_messages), len(b_messages), 0, n_a)
    assert result["probability_leader_beats_runner_up"] == pytest.approx(expected, abs=1e-4)
    assert result["leader_id"] == b.id and result["significant"] is True
    assert campaign.winner_variant_id == b.id and campaign.winner_source == "test"
    rows = {r["variant_id"]: r for r in result["variants"]}
    assert rows[a.id]["probability_to_beat_control"] is None
    assert rows[b.id]["probability_to_beat_control"] == pytest.approx(expected, abs=1e-4)


def _beat_by_integration(s1: int, n1: int, s2: int, n2: int, steps: int = 50_000) -> float:
    """P(x1 > x2) for x ~ Beta(1 + s, 1 + n - s) by the midpoint rule on
    integral of pdf1(x) * cdf2(x) dx: an independent check of the closed form."""
    import math

    def density(a: int, b: int) -> Any:
        log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        return lambda x: math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x))

    pdf1, pdf2 = density(1 + s1, 1 + n1 - s1), density(1 + s2, 1 + n2 - s2)
    h = 1.0 / steps
    cdf2 = total = 0.0
    for k in range(steps):
        x = (k + 0.5) * h
        p2 = pdf2(x) * h
        total += pdf1(x) * h * (cdf2 + p2 / 2)
        cdf2 += p2
    return total


@pytest.mark.parametrize(
    ("s1", "n1", "s2", "n2"),
    [(10, 100, 5, 100), (5, 100, 10, 100), (0, 0, 0, 0), (30, 50, 28, 60), (120, 400, 100, 380)],
)
def test_probability_to_beat_matches_numerical_integration(s1, n1, s2, n2):
    got = probability_to_beat(s1, n1, s2, n2)
    assert got == pytest.approx(_beat_by_integration(s1, n1, s2, n2), abs=1e-4)
    assert got + probability_to_beat(s2, n2, s1, n1) == pytest.approx(1.0, abs=1e-9)


def test_probability_to_beat_survives_more_successes_than_trials():
    # Opens of messages counted as bounced can outnumber the delivered ones.
    assert probability_to_beat(12, 10, 3, 10) == probability_to_beat(10, 10, 3, 10)
    assert wilson_interval(12, 10) == wilson_interval(10, 10)


def test_manual_pick_before_the_test_ends(session, setup):
    campaign = _ab(session, setup, fallback=WinnerFallback.MANUAL)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    b = service.variants_of(session, campaign.id)[1]
    with pytest.raises(InvalidInput) as exc:
        service.pick_winner(session, campaign.id, 999999)
    assert _paths(exc) == {"variant_id"}
    service.pick_winner(session, campaign.id, b.id)
    assert campaign.winner_source == "manual"
    rest = [m for m in _messages(session, campaign.id) if m.campaign_variant_id == b.id]
    assert len(_messages(session, campaign.id)) == 35 and len(rest) > 10


def test_a_click_ingested_by_the_tracking_worker_counts_on_its_link(session, setup, frozen):
    """The report reads the events the tracking worker writes (not a hand-made shape)."""
    from automation.tracking.hits import Hit
    from automation.tracking.ingest import ingest_hits

    campaign = _campaign(session, setup)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    message = _messages(session, campaign.id)[0]
    message.status, message.sent_at = MessageStatus.SENT, frozen.now - timedelta(hours=1)
    session.flush()
    human = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Thunderbird"
    hit = Hit(
        id="hit-1",
        kind="click",
        message_id=message.id,
        nonce=message.token_nonce & 0xFFFFFFFF,
        template_version_id=message.template_version_id,
        link_index=0,
        at=frozen.now.timestamp(),
        ip="203.0.113.9",
        user_agent=human,
    )
    assert ingest_hits(session, [hit]).human == 1
    links = {link["index"]: link for link in reports.campaign_report(session, campaign.id)["links"]}
    assert links[0]["human_clicks"] == 1


def test_report_separates_human_and_machine_and_counts_links(session, setup, frozen):
    campaign = _campaign(session, setup)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    messages = _messages(session, campaign.id)
    for m in messages:
        m.status = MessageStatus.SENT
    messages[0].bounced_at = frozen.now
    messages[1].unsubscribed_at = frozen.now
    events = [engage(session, m, "email.opened", machine=True) for m in messages]
    events += [engage(session, m, "email.opened", machine=False) for m in messages[2:12]]
    events += [engage(session, messages[2], "email.opened", machine=False)]
    events += [engage(session, m, "email.clicked", machine=False, link=0) for m in messages[2:6]]
    events += [engage(session, messages[7], "email.clicked", machine=False, link=1)]
    events += [engage(session, m, "email.clicked", machine=True, link=1) for m in messages]
    write_events(session, events)
    session.flush()
    report = reports.campaign_report(session, campaign.id)
    t = report["totals"]
    assert (t["audience"], t["sent"], t["delivered"], t["bounced"]) == (35, 35, 34, 1)
    assert (t["human_unique_opens"], t["human_total_opens"]) == (10, 11)
    assert (t["machine_unique_opens"], t["machine_total_opens"]) == (35, 35)
    assert (t["human_unique_clicks"], t["machine_unique_clicks"]) == (5, 35)
    assert t["unsubscribes"] == 1
    assert t["open_rate"] == pytest.approx(10 / 34)
    assert t["click_to_open"] == pytest.approx(5 / 10)
    links = {link["index"]: link for link in report["links"]}
    assert links[0]["human_clicks"] == 4 and links[0]["share"] == pytest.approx(0.8)
    assert links[1]["human_clicks"] == 1
    assert report["over_time"][0]["human_opens"] == 11
    rows = list(reports.csv_rows(session, campaign.id))
    assert rows[0][0] == "section" and rows[1][0] == "total" and rows[-1][0] == "link"
    page = reports.click_map_html(session, campaign.id)
    assert "4 clicks · 80.0%" in page and "https://shop.example/start" in page


def test_two_proportion_test_matches_a_hand_computation():
    # 120/1000 vs 90/1000: pooled p = 0.105, se = sqrt(.105*.895*(2/1000)) = 0.013709
    z, p = two_proportion_p_value(120, 1000, 90, 1000)
    assert z == pytest.approx(0.03 / 0.0137095, rel=1e-4)
    assert p == pytest.approx(0.02860, abs=2e-4)


# --- bad input --------------------------------------------------------------------------


def test_empty_audience_is_refused_at_scheduling(session, setup):
    empty = make_list(session, "Empty", [])
    campaign = _campaign(session, setup, include_segment_ids=[empty], exclude_segment_ids=[])
    with pytest.raises(InvalidInput) as exc:
        service.schedule_campaign(session, campaign.id, ScheduleIn())
    assert _paths(exc) == {"include_segment_ids"}
    assert not _messages(session, campaign.id)


def test_unknown_segments_and_missing_audience_name_the_field(session, setup):
    with pytest.raises(InvalidInput) as exc:
        _campaign(session, setup, include_segment_ids=[], exclude_segment_ids=[99999])
    assert _paths(exc) == {"include_segment_ids", "exclude_segment_ids[0]"}


def test_variants_that_do_not_differ_are_refused(session, setup):
    with pytest.raises(InvalidInput) as exc:
        _campaign(
            session,
            setup,
            variants=[VariantIn(template_version_id=setup["version"])] * 2,
            ab_test=AbTestIn(),
        )
    assert _paths(exc) == {"variants[1]"}


def test_ab_settings_out_of_range_name_their_fields(session, setup):
    with pytest.raises(InvalidInput) as exc:
        _campaign(
            session,
            setup,
            variants=[VariantIn(template_version_id=setup["version"])] * 6,
            ab_test=AbTestIn(test_percent=0, test_minutes=5),
        )
    assert _paths(exc) == {"variants", "ab_test.test_percent", "ab_test.test_minutes"}
    with pytest.raises(InvalidInput) as exc:
        _campaign(
            session,
            setup,
            variants=[
                VariantIn(template_version_id=setup["version"]),
                VariantIn(template_version_id=setup["version"], subject="B"),
            ],
        )
    assert _paths(exc) == {"ab_test"}


def test_a_variant_with_a_template_error_names_the_variant(session, setup):
    with pytest.raises(InvalidInput) as exc:
        _campaign(
            session,
            setup,
            variants=[
                VariantIn(template_version_id=setup["version"]),
                VariantIn(template_version_id=setup["version"], subject="{{ broken "),
            ],
            ab_test=AbTestIn(),
        )
    assert all(p.startswith("variants[1].") for p in _paths(exc))
    with pytest.raises(InvalidInput) as exc:
        _campaign(session, setup, variants=[VariantIn(template_version_id=424242)])
    assert _paths(exc) == {"variants[0].template_version_id"}


def test_a_schedule_in_the_past_is_refused(session, setup, frozen):
    campaign = _campaign(session, setup)
    with pytest.raises(InvalidInput) as exc:
        service.schedule_campaign(
            session, campaign.id, ScheduleIn(mode="at", send_at=NOW - timedelta(hours=1))
        )
    assert _paths(exc) == {"send_at"}
    with pytest.raises(InvalidInput) as exc:
        service.schedule_campaign(
            session,
            campaign.id,
            ScheduleIn(mode="local", local_date="2026-02-01", local_time="25:00"),
        )
    assert _paths(exc) == {"local_time"}
    with pytest.raises(InvalidInput) as exc:
        service.schedule_campaign(
            session,
            campaign.id,
            ScheduleIn(quiet_start=22, fallback_time_zone="Mars/Base"),
        )
    assert _paths(exc) == {"quiet_end", "fallback_time_zone"}
    assert campaign.status is CampaignStatus.DRAFT
    assert not _messages(session, campaign.id)


def test_the_demo_brings_a_scheduled_ab_campaign(session, frozen):
    from automation.demo import load_demo

    assert "1 scheduled campaign" in load_demo(session, contacts=60)
    (campaign,) = service.list_campaigns(session)
    assert campaign.status is CampaignStatus.SCHEDULED
    a, b = service.variant_contents(session, campaign.id)
    assert a.version.id == b.version.id and b.sent_subject == "Spring is here: 20 % off"
    # Its B subject is not a version of the template the demo's workflows send.
    template = session.get(Template, a.version.template_id)
    assert template.latest_version == 1 and a.version.number == 1
    assert "Spring is here" not in a.version.subject


def test_a_contact_erased_mid_send_does_not_keep_the_campaign_open(session, setup):
    from automation.contacts.gdpr import erase_contact

    campaign = _campaign(session, setup)
    service.schedule_campaign(session, campaign.id, ScheduleIn())
    service.run_due(session)
    messages = _messages(session, campaign.id)
    for m in messages[1:]:
        m.status = MessageStatus.SENT
    session.flush()
    erase_contact(session, messages[0].contact_id)
    session.flush()
    assert service.run_due(session)["finished"] == 1
