"""Campaigns: create and validate, freeze the audience, queue through the outbox, pause,
resume, cancel, decide the A/B winner and send it to the rest. The beat tick
(:func:`run_due`) advances every campaign; nothing waits in Celery."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from automation import clock
from automation.addresses import known_time_zones
from automation.campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    CampaignVariant,
    ScheduleMode,
    WinnerFallback,
)
from automation.campaigns.schema import AbTestIn, CampaignIn, ScheduleIn, VariantIn
from automation.contacts.models import Contact
from automation.email.models import Message, MessageStatus, Template, TemplateVersion
from automation.email.outbox import WAITING, park, queue_for_contacts, unpark, withdraw
from automation.email.schema import TemplateContent
from automation.email.templates import add_version
from automation.errors import Conflict, FieldError, InvalidInput, NotFound
from automation.segments.membership import audience_ids
from automation.segments.models import Segment

MAX_VARIANTS = 5
MIN_TEST_MINUTES = 30
VARIANT_NAMES = "ABCDE"

S = CampaignStatus
ALLOWED: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.SCHEDULED, S.TESTING, S.SENDING, S.FINISHED, S.PAUSED, S.CANCELLED}),
    S.TESTING: frozenset({S.SENDING, S.AWAITING_WINNER, S.PAUSED, S.CANCELLED}),
    S.AWAITING_WINNER: frozenset({S.SENDING, S.PAUSED, S.CANCELLED}),
    S.SENDING: frozenset({S.FINISHED, S.PAUSED, S.CANCELLED}),
    S.PAUSED: frozenset({S.SCHEDULED, S.TESTING, S.AWAITING_WINNER, S.SENDING, S.CANCELLED}),
    S.FINISHED: frozenset(),
    S.CANCELLED: frozenset(),
}
# Outcomes that count toward "finished": sent + failed + suppressed + unknown = audience.
DONE = (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED, MessageStatus.UNKNOWN)


def move(campaign: Campaign, to: CampaignStatus) -> None:
    """The one rule for campaign status changes."""
    if to not in ALLOWED[campaign.status]:
        raise Conflict(f"a campaign cannot go from {campaign.status.value} to {to.value}")
    campaign.status = to
    campaign.updated_at = clock.now()


# --- reading ---------------------------------------------------------------------------


def get_campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if lock:
        stmt = stmt.with_for_update()
    campaign = session.scalar(stmt)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    return campaign


def list_campaigns(session: Session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id.desc())))


RUNNING = (CampaignStatus.SCHEDULED, CampaignStatus.TESTING, CampaignStatus.SENDING)


def campaign_progress(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Message counts by status and the share of recipients with an outcome: what the
    campaign page polls while it runs (one indexed GROUP BY on the campaign's messages)."""
    counts = dict.fromkeys([s.value for s in MessageStatus], 0)
    for status, n in session.execute(
        select(Message.status, func.count())
        .where(Message.campaign_id == campaign.id)
        .group_by(Message.status)
    ):
        counts[MessageStatus(status).value] = int(n)
    done = sum(counts[s.value] for s in DONE)
    audience = campaign.audience_count or 0
    return {
        "status": campaign.status.value,
        "audience": audience,
        "counts": counts,
        "done": done,
        "percent": round(100 * done / audience, 1) if audience else 0.0,
        "running": campaign.status in RUNNING,
        "next_run_at": campaign.next_run_at.isoformat() if campaign.next_run_at else None,
    }


def variants_of(session: Session, campaign_id: int) -> list[CampaignVariant]:
    return list(
        session.scalars(
            select(CampaignVariant)
            .where(CampaignVariant.campaign_id == campaign_id)
            .order_by(CampaignVariant.position)
        )
    )


# --- creating --------------------------------------------------------------------------


def _check_segments(session: Session, field: str, ids: Sequence[int]) -> list[FieldError]:
    known = set(session.scalars(select(Segment.id).where(Segment.id.in_(ids)))) if ids else set()
    return [
        FieldError(f"{field}[{n}]", f"no segment or list {sid}")
        for n, sid in enumerate(ids)
        if sid not in known
    ]


def _check_ab(ab: AbTestIn | None, variant_count: int) -> list[FieldError]:
    errors = []
    if variant_count > MAX_VARIANTS:
        errors.append(FieldError("variants", f"at most {MAX_VARIANTS} variants"))
    if variant_count == 0:
        errors.append(FieldError("variants", "at least one variant"))
    if variant_count > 1 and ab is None:
        errors.append(FieldError("ab_test", "several variants need an A/B test setting"))
    if ab is not None:
        if variant_count < 2:
            errors.append(FieldError("variants", "an A/B test needs 2 to 5 variants"))
        if not 1 <= ab.test_percent <= 100:
            errors.append(FieldError("ab_test.test_percent", "a percentage from 1 to 100"))
        if ab.test_minutes < MIN_TEST_MINUTES:
            errors.append(
                FieldError("ab_test.test_minutes", f"at least {MIN_TEST_MINUTES} minutes")
            )
    return errors


def _variant_version(
    session: Session, n: int, variant: VariantIn, user_id: int | None
) -> TemplateVersion:
    version = session.get(TemplateVersion, variant.template_version_id)
    path = f"variants[{n}].template_version_id"
    if version is None:
        raise InvalidInput(FieldError(path, f"no template version {variant.template_version_id}"))
    template = session.get(Template, version.template_id)
    if template is None or template.deleted_at is not None:
        raise InvalidInput(FieldError(path, "the template is deleted"))
    changes = {
        k: v
        for k, v in (
            ("subject", variant.subject),
            ("preheader", variant.preheader),
            ("sender_identity_id", variant.sender_identity_id),
        )
        if v is not None and v != getattr(version, k)
    }
    if not changes:
        return version
    content = TemplateContent(
        kind=version.kind,
        sender_identity_id=changes.get("sender_identity_id", version.sender_identity_id),
        subject=changes.get("subject", version.subject),
        preheader=changes.get("preheader", version.preheader),
        mjml=version.mjml,
    )
    try:
        return add_version(session, template.id, content, user_id=user_id).version
    except InvalidInput as exc:  # the override does not compile: name it under the variant
        raise InvalidInput(
            [FieldError(f"variants[{n}].{e.path}", e.message) for e in exc.errors],
            message=exc.message,
        ) from None


def _checked_versions(
    session: Session, data: CampaignIn, user_id: int | None, *, campaign_id: int | None = None
) -> list[TemplateVersion]:
    """Every check of a campaign's input, then each variant's template version (an override
    of subject, preheader or sender is saved as a new version)."""
    errors = _check_segments(session, "include_segment_ids", data.include_segment_ids)
    errors += _check_segments(session, "exclude_segment_ids", data.exclude_segment_ids)
    if not data.include_segment_ids:
        errors.append(FieldError("include_segment_ids", "at least one segment or list"))
    errors += _check_ab(data.ab_test, len(data.variants))
    if errors:
        raise InvalidInput(errors)
    same_name = select(Campaign.id).where(Campaign.name == data.name)
    if campaign_id is not None:
        same_name = same_name.where(Campaign.id != campaign_id)
    if session.scalar(same_name) is not None:
        raise InvalidInput(FieldError("name", f"a campaign named {data.name!r} already exists"))
    versions = [_variant_version(session, n, v, user_id) for n, v in enumerate(data.variants)]
    seen: dict[tuple[Any, ...], int] = {}
    for n, version in enumerate(versions):
        key = (version.subject, version.preheader, version.sender_identity_id, version.mjml)
        if key in seen:
            errors.append(
                FieldError(
                    f"variants[{n}]",
                    f"does not differ from variant {VARIANT_NAMES[seen[key]]} in subject, "
                    "preheader, sender or content",
                )
            )
        seen.setdefault(key, n)
    if errors:
        raise InvalidInput(errors)
    return versions


def _apply(
    session: Session, campaign: Campaign, data: CampaignIn, versions: list[TemplateVersion]
) -> None:
    ab = data.ab_test
    campaign.name = data.name
    campaign.include_segment_ids = list(data.include_segment_ids)
    campaign.exclude_segment_ids = list(data.exclude_segment_ids)
    campaign.utm = dict(data.utm)
    campaign.test_percent = ab.test_percent if ab else 0
    campaign.test_minutes = ab.test_minutes if ab else 0
    campaign.min_sample = ab.min_sample if ab else 0
    campaign.confidence = ab.confidence if ab else 0.95
    if ab:
        campaign.winner_metric = ab.winner_metric
        campaign.winner_method = ab.winner_method
        campaign.fallback = ab.fallback
    campaign.updated_at = clock.now()
    session.add(campaign)
    session.flush()
    for n, version in enumerate(versions):
        session.add(
            CampaignVariant(
                campaign_id=campaign.id,
                position=n,
                name=VARIANT_NAMES[n],
                template_version_id=version.id,
            )
        )
    session.flush()


def create_campaign(session: Session, data: CampaignIn, *, user_id: int | None = None) -> Campaign:
    versions = _checked_versions(session, data, user_id)
    now = clock.now()
    campaign = Campaign(
        status=CampaignStatus.DRAFT,
        schedule_mode=ScheduleMode.NOW,
        fallback_time_zone="UTC",
        created_at=now,
    )
    _apply(session, campaign, data, versions)
    return campaign


def update_campaign(
    session: Session, campaign_id: int, data: CampaignIn, *, user_id: int | None = None
) -> Campaign:
    """Change a campaign that has not started (draft or scheduled): audience, variants and
    A/B settings are replaced as a whole; its schedule is kept."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
        raise Conflict(f"a {campaign.status.value} campaign cannot be edited")
    versions = _checked_versions(session, data, user_id, campaign_id=campaign.id)
    session.execute(delete(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id))
    _apply(session, campaign, data, versions)
    return campaign


def delete_campaign(session: Session, campaign_id: int) -> None:
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status is not CampaignStatus.DRAFT:
        raise Conflict("only a draft campaign can be deleted; cancel it instead")
    session.delete(campaign)


# --- audience ----------------------------------------------------------------------------


def campaigns_using_segment(session: Session, segment_id: int) -> list[str]:
    """Names of the campaigns whose audience is yet to be frozen (draft, scheduled) and
    that include or exclude this segment."""
    return [
        campaign.name
        for campaign in session.scalars(
            select(Campaign)
            .where(Campaign.status.in_([CampaignStatus.DRAFT, CampaignStatus.SCHEDULED]))
            .order_by(Campaign.name)
        )
        if segment_id in campaign.include_segment_ids or segment_id in campaign.exclude_segment_ids
    ]


def audience_count(session: Session, include: Sequence[int], exclude: Sequence[int] = ()) -> int:
    """How many contacts the campaign would go to now (each contact once)."""
    errors = _check_segments(session, "include_segment_ids", include)
    errors += _check_segments(session, "exclude_segment_ids", exclude)
    if not include:
        errors.append(FieldError("include_segment_ids", "at least one segment or list"))
    if errors:
        raise InvalidInput(errors)
    ids = audience_ids(session, include, exclude).subquery()
    return int(session.scalar(select(func.count()).select_from(ids)) or 0)


# --- scheduling --------------------------------------------------------------------------

_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _check_schedule(data: ScheduleIn, now: datetime) -> list[FieldError]:
    errors = []
    if data.fallback_time_zone not in known_time_zones():
        errors.append(FieldError("fallback_time_zone", "an IANA zone such as 'Europe/Paris'"))
    if (data.quiet_start is None) != (data.quiet_end is None):
        errors.append(FieldError("quiet_end", "quiet hours need both a start and an end"))
    for field in ("quiet_start", "quiet_end"):
        value = getattr(data, field)
        if value is not None and not 0 <= value <= 23:
            errors.append(FieldError(field, "an hour from 0 to 23"))
    if data.quiet_start is not None and data.quiet_start == data.quiet_end:
        errors.append(FieldError("quiet_end", "differs from quiet_start"))
    if data.mode is ScheduleMode.AT:
        if data.send_at is None:
            errors.append(FieldError("send_at", "required for a scheduled send"))
        elif data.send_at.tzinfo is None:
            errors.append(FieldError("send_at", "needs a time zone offset (UTC: 'Z')"))
        elif data.send_at < now - timedelta(minutes=1):
            errors.append(FieldError("send_at", "is in the past"))
    if data.mode is ScheduleMode.LOCAL:
        try:
            day = date.fromisoformat(data.local_date or "")
        except ValueError:
            errors.append(FieldError("local_date", "a date as YYYY-MM-DD"))
            day = None
        if not _TIME.match(data.local_time or ""):
            errors.append(FieldError("local_time", "a time as HH:MM"))
        elif day is not None:
            latest = _local_moment(day, data.local_time or "", "Etc/GMT+12")
            if latest < now:
                errors.append(FieldError("local_date", "is in the past in every time zone"))
    return errors


def _local_moment(day: date, hhmm: str, zone: str) -> datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def schedule_campaign(session: Session, campaign_id: int, data: ScheduleIn) -> Campaign:
    """Draft → scheduled (or re-schedule a campaign that has not started)."""
    campaign = get_campaign(session, campaign_id, lock=True)
    now = clock.now()
    errors = _check_schedule(data, now)
    if errors:
        raise InvalidInput(errors)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
        raise Conflict(f"a {campaign.status.value} campaign cannot be scheduled")
    for n, variant in enumerate(variants_of(session, campaign.id)):
        version = session.get(TemplateVersion, variant.template_version_id)
        template = session.get(Template, version.template_id) if version else None
        if template is None or template.deleted_at is not None:
            raise InvalidInput(
                FieldError(f"variants[{n}].template_version_id", "the template is deleted")
            )
    if not audience_count(session, campaign.include_segment_ids, campaign.exclude_segment_ids):
        raise InvalidInput(FieldError("include_segment_ids", "the audience is empty"))
    campaign.schedule_mode = data.mode
    campaign.send_at = data.send_at if data.mode is ScheduleMode.AT else None
    campaign.local_date = data.local_date if data.mode is ScheduleMode.LOCAL else None
    campaign.local_time = data.local_time if data.mode is ScheduleMode.LOCAL else None
    campaign.fallback_time_zone = data.fallback_time_zone
    campaign.quiet_start, campaign.quiet_end = data.quiet_start, data.quiet_end
    if data.mode is ScheduleMode.AT and data.send_at is not None:
        start = data.send_at
    elif data.mode is ScheduleMode.LOCAL:
        # The earliest zone (UTC+14) reaches the local time first; messages for the other
        # zones wait in the outbox with their own next_attempt_at.
        start = _local_moment(
            date.fromisoformat(data.local_date or ""), data.local_time or "", "Etc/GMT-14"
        )
    else:
        start = now
    campaign.next_run_at = max(start, now)
    move(campaign, CampaignStatus.SCHEDULED)
    return campaign


# --- starting: freeze the audience, assign variants and send times, queue ------------------


def _send_time(campaign: Campaign, zone: str, base: datetime) -> datetime:
    """When a recipient in ``zone`` gets the email: the schedule, then out of quiet hours."""
    tz = ZoneInfo(zone)
    at = base
    if campaign.schedule_mode is ScheduleMode.LOCAL and campaign.local_date:
        at = max(
            _local_moment(date.fromisoformat(campaign.local_date), campaign.local_time or "", zone),
            base,
        )
    start, end = campaign.quiet_start, campaign.quiet_end
    if start is None or end is None:
        return at
    local = at.astimezone(tz)
    quiet = start <= local.hour < end if start < end else local.hour >= start or local.hour < end
    if not quiet:
        return at
    resume = datetime.combine(local.date(), time(end), tzinfo=tz)
    if resume <= local:
        resume = datetime.combine(local.date() + timedelta(days=1), time(end), tzinfo=tz)
    return resume.astimezone(UTC)


def _assign_send_times(
    session: Session, campaign: Campaign, base: datetime, *, rest_only: bool
) -> None:
    """One UPDATE per distinct time zone among the recipients (a few hundred at most)."""
    R = CampaignRecipient
    scope = [R.campaign_id == campaign.id]
    if rest_only:
        scope.append(R.test.is_(False))
    zones = session.scalars(
        select(Contact.time_zone).distinct().join(R, R.contact_id == Contact.id).where(*scope)
    ).all()
    known = known_time_zones()
    for zone in zones:
        effective = zone if zone in known else campaign.fallback_time_zone
        session.execute(
            update(R)
            .where(*scope, R.contact_id.in_(select(Contact.id).where(Contact.time_zone == zone)))
            .values(send_at=_send_time(campaign, effective, base))
            .execution_options(synchronize_session=False)
        )


def _freeze_audience(session: Session, campaign: Campaign, variants: list[CampaignVariant]) -> int:
    """INSERT … SELECT the audience once. A contact's bucket is a deterministic hash of the
    campaign and contact ids; the test group is the buckets under the percentage, dealt to
    the variants round-robin in bucket order (an even split)."""
    R = CampaignRecipient
    ids = audience_ids(
        session, campaign.include_segment_ids, campaign.exclude_segment_ids
    ).subquery()
    contact_id = ids.c[0]
    seed = (campaign.id * 7919) % 2147483647
    hashed = select(
        contact_id.label("contact_id"),
        ((contact_id * 48271 + seed) % 2147483647).label("bucket"),
    ).subquery()
    ab = len(variants) > 1
    threshold = campaign.test_percent * 100 if ab else -1
    flagged = select(
        hashed.c.contact_id,
        hashed.c.bucket,
        case((hashed.c.bucket % 10000 < threshold, 1), else_=0).label("test"),
    ).subquery()
    ranked = select(
        flagged.c.contact_id,
        flagged.c.bucket,
        flagged.c.test,
        (
            func.row_number().over(
                partition_by=flagged.c.test, order_by=(flagged.c.bucket, flagged.c.contact_id)
            )
            - 1
        ).label("rank"),
    ).subquery()
    variant: Any
    if ab:
        variant = case(
            (
                ranked.c.test == 1,
                case(
                    {n: v.id for n, v in enumerate(variants)},
                    value=ranked.c.rank % len(variants),
                ),
            ),
            else_=None,
        )
    else:
        variant = literal(variants[0].id)
    columns = {
        "campaign_id": literal(campaign.id),
        "contact_id": ranked.c.contact_id,
        "bucket": ranked.c.bucket,
        "test": ranked.c.test == 1,
        "variant_id": variant,
    }
    session.execute(
        insert(R).from_select(list(columns), select(*[c.label(n) for n, c in columns.items()]))
    )
    return int(
        session.scalar(select(func.count()).select_from(R).where(R.campaign_id == campaign.id)) or 0
    )


def _queue(session: Session, campaign: Campaign, *, rest_only: bool) -> int:
    """Queue one message per recipient with a variant, grouped by (variant, send time) so
    each group is one INSERT … SELECT; the dedupe key ``campaign:<id>:<contact>`` makes a
    repeat a no-op."""
    R = CampaignRecipient
    scope = [R.campaign_id == campaign.id, R.variant_id.is_not(None)]
    if rest_only:
        scope.append(R.test.is_(False))
    versions = {v.id: v.template_version_id for v in variants_of(session, campaign.id)}
    queued = 0
    groups = session.execute(select(R.variant_id, R.send_at).where(*scope).distinct()).all()
    for variant_id, send_at in groups:
        assert variant_id is not None  # scope excludes the rest still waiting for a winner
        queued += queue_for_contacts(
            session,
            select(R.contact_id).where(*scope, R.variant_id == variant_id, R.send_at == send_at),
            template_version_id=versions[variant_id],
            dedupe_prefix=f"campaign:{campaign.id}:",
            campaign_id=campaign.id,
            campaign_variant_id=variant_id,
            campaign_name=campaign.name,
            send_at=send_at,
        )
    return queued


def start_campaign(session: Session, campaign: Campaign, now: datetime) -> None:
    variants = variants_of(session, campaign.id)
    campaign.audience_count = _freeze_audience(session, campaign, variants)
    campaign.started_at = now
    _assign_send_times(session, campaign, now, rest_only=False)
    _queue(session, campaign, rest_only=False)
    if campaign.audience_count == 0:
        campaign.finished_at = now
        move(campaign, CampaignStatus.FINISHED)
    elif len(variants) > 1:
        # The test period runs from the last test send; the tick checks it again then.
        last = session.scalar(
            select(func.max(CampaignRecipient.send_at)).where(
                CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.test.is_(True)
            )
        )
        campaign.next_run_at = max(last or now, now) + timedelta(minutes=campaign.test_minutes)
        move(campaign, CampaignStatus.TESTING)
    else:
        campaign.next_run_at = None
        move(campaign, CampaignStatus.SENDING)


# --- the A/B winner ------------------------------------------------------------------------

# While test messages still wait (throttled, deferred, far time zones), look again this often.
TEST_RECHECK = timedelta(minutes=1)


def test_ends_at(session: Session, campaign: Campaign, now: datetime) -> datetime | None:
    """When the test period ends: ``test_minutes`` after the last test message went out,
    or None while some are still being sent or due to go soon (the period has not begun).
    A message held further out than one test period (a frequency-cap deferral of days, a
    long retry backoff) does not hold the test back. Before the winner is picked every
    message of the campaign is a test message."""
    horizon = now + timedelta(minutes=campaign.test_minutes)
    waiting = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(
            Message.campaign_id == campaign.id,
            (Message.status == MessageStatus.SENDING)
            | (Message.status.in_(WAITING) & (Message.next_attempt_at <= horizon)),
        )
    )
    if waiting:
        return None
    last = session.scalar(
        select(func.max(Message.sent_at)).where(Message.campaign_id == campaign.id)
    )
    return (last or campaign.started_at or now) + timedelta(minutes=campaign.test_minutes)


def decide_winner(session: Session, campaign: Campaign, now: datetime) -> None:
    """At the end of the test: significance test on human engagement, then the fallback."""
    from automation.campaigns.reports import test_result

    result = test_result(session, campaign)
    campaign.test_result = result
    variants = variants_of(session, campaign.id)
    if result["significant"]:
        _send_winner(session, campaign, result["leader_id"], "test", now)
    elif campaign.fallback is WinnerFallback.LEADER:
        _send_winner(session, campaign, result["leader_id"], "fallback", now)
    elif campaign.fallback is WinnerFallback.CONTROL:
        _send_winner(session, campaign, variants[0].id, "fallback", now)
    else:
        campaign.next_run_at = None
        move(campaign, CampaignStatus.AWAITING_WINNER)


def _send_winner(
    session: Session, campaign: Campaign, variant_id: int, source: str, now: datetime
) -> None:
    R = CampaignRecipient
    campaign.winner_variant_id = variant_id
    campaign.winner_source = source
    campaign.next_run_at = None
    session.execute(
        update(R)
        .where(R.campaign_id == campaign.id, R.variant_id.is_(None))
        .values(variant_id=variant_id)
        .execution_options(synchronize_session=False)
    )
    # The rest gets its send times from now: the test took its time.
    _assign_send_times(session, campaign, now, rest_only=True)
    _queue(session, campaign, rest_only=True)
    move(campaign, CampaignStatus.SENDING)


def pick_winner(session: Session, campaign_id: int, variant_id: int) -> Campaign:
    """A person's pick: before the rest is sent (during the test or after a tie)."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if variant_id not in {v.id for v in variants_of(session, campaign.id)}:
        raise InvalidInput(FieldError("variant_id", f"no variant {variant_id} in this campaign"))
    if campaign.status not in (CampaignStatus.TESTING, CampaignStatus.AWAITING_WINNER):
        raise Conflict(f"a winner cannot be picked while the campaign is {campaign.status.value}")
    if campaign.test_result is None:
        from automation.campaigns.reports import test_result

        campaign.test_result = test_result(session, campaign)
    _send_winner(session, campaign, variant_id, "manual", clock.now())
    return campaign


# --- pause, resume, cancel ------------------------------------------------------------------


def pause_campaign(session: Session, campaign_id: int) -> Campaign:
    """Park the campaign's waiting messages; rows a sender holds finish as they are."""
    campaign = get_campaign(session, campaign_id, lock=True)
    previous = campaign.status
    move(campaign, CampaignStatus.PAUSED)
    campaign.paused_from = previous
    park(session, Message.campaign_id == campaign.id)
    return campaign


def resume_campaign(session: Session, campaign_id: int) -> Campaign:
    """Each parked message gets its recipient's send time back (now if that has passed)."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status is not CampaignStatus.PAUSED or campaign.paused_from is None:
        raise Conflict(f"a {campaign.status.value} campaign cannot be resumed")
    now = clock.now()
    R = CampaignRecipient
    own_time = (
        select(R.send_at)
        .where(R.campaign_id == campaign.id, R.contact_id == Message.contact_id)
        .scalar_subquery()
    )
    unpark(session, Message.campaign_id == campaign.id, send_at=own_time, now=now)
    move(campaign, campaign.paused_from)
    campaign.paused_from = None
    return campaign


def cancel_campaign(session: Session, campaign_id: int) -> Campaign:
    """Stop for good (outbox.withdraw): waiting messages never handed to a relay
    are removed, deferred ones that already had an SMTP attempt end `failed`/`withdrawn`
    (kept as the record of the attempt), sent ones stay in the report. Messages a sender
    holds right now finish; if one comes back deferred, the tick withdraws it."""
    campaign = get_campaign(session, campaign_id, lock=True)
    move(campaign, CampaignStatus.CANCELLED)
    campaign.next_run_at = None
    withdraw(session, Message.campaign_id == campaign.id)
    return campaign


# --- the tick --------------------------------------------------------------------------------


def _finish_sent(session: Session, now: datetime) -> int:
    """Sending campaigns whose every recipient has an outcome become finished."""
    done = (
        select(func.count())
        .where(Message.campaign_id == Campaign.id, Message.status.in_(DONE))
        .scalar_subquery()
    )
    # Recipients erased (GDPR) while the campaign ran leave with their messages.
    recipients = (
        select(func.count()).where(CampaignRecipient.campaign_id == Campaign.id).scalar_subquery()
    )
    finished = 0
    for campaign in session.scalars(
        select(Campaign)
        .where(Campaign.status == CampaignStatus.SENDING, done >= recipients)
        .with_for_update(skip_locked=True)
    ):
        campaign.finished_at = now
        move(campaign, CampaignStatus.FINISHED)
        finished += 1
    return finished


def run_due(session: Session, *, now: datetime | None = None) -> dict[str, int]:
    """The beat tick: start due campaigns, decide due tests, finish completed sends."""
    now = now or clock.now()
    report = {"started": 0, "decided": 0, "finished": 0, "reparked": 0, "withdrawn": 0}
    due = session.scalars(
        select(Campaign)
        .where(
            Campaign.status.in_((CampaignStatus.SCHEDULED, CampaignStatus.TESTING)),
            Campaign.next_run_at <= now,
        )
        .order_by(Campaign.next_run_at)
        .limit(20)
        .with_for_update(skip_locked=True)
    ).all()
    for campaign in due:
        if campaign.status is CampaignStatus.SCHEDULED:
            start_campaign(session, campaign, now)
            report["started"] += 1
        else:
            ends = test_ends_at(session, campaign, now)
            if ends is None or ends > now:
                campaign.next_run_at = ends or now + TEST_RECHECK
                continue
            decide_winner(session, campaign, now)
            report["decided"] += 1
    report["finished"] = _finish_sent(session, now)
    report["reparked"] = _repark(session)
    report["withdrawn"] = _withdraw_cancelled(session, now)
    return report


# A message leased when its campaign was cancelled comes back within the lease time
# (an expired lease turns it `unknown`, not waiting); look back well past that.
CANCEL_SWEEP = timedelta(hours=1)


def _withdraw_cancelled(session: Session, now: datetime) -> int:
    """Messages a sender held during a cancel and that came back deferred are withdrawn
    like the rest (the tick runs more often than the shortest backoff)."""
    recent = select(Campaign.id).where(
        Campaign.status == CampaignStatus.CANCELLED, Campaign.updated_at >= now - CANCEL_SWEEP
    )
    deleted, withdrawn = withdraw(session, Message.campaign_id.in_(recent))
    return deleted + withdrawn


def _repark(session: Session) -> int:
    """A message leased before a pause and deferred after it came back with a retry time:
    park it again (the tick runs more often than the shortest backoff)."""
    paused = select(Campaign.id).where(Campaign.status == CampaignStatus.PAUSED)
    return park(session, Message.campaign_id.in_(paused))
