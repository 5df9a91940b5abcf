"""When a campaign starts and when each recipient gets it: the schedule (now, at a time,
at a local time in each recipient's zone) and quiet hours."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from automation import clock
from automation.addresses import known_time_zones
from automation.campaigns.lifecycle import move
from automation.campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    ScheduleMode,
)
from automation.campaigns.queries import audience_count, get_campaign, variants_of
from automation.campaigns.schema import ScheduleIn
from automation.contacts.models import Contact
from automation.email.models import Template, TemplateVersion
from automation.errors import Conflict, FieldError, InvalidInput

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
            latest = local_moment(day, data.local_time or "", "Etc/GMT+12")
            if latest < now:
                errors.append(FieldError("local_date", "is in the past in every time zone"))
    return errors


def local_moment(day: date, hhmm: str, zone: str) -> datetime:
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
        start = local_moment(
            date.fromisoformat(data.local_date or ""), data.local_time or "", "Etc/GMT-14"
        )
    else:
        start = now
    campaign.next_run_at = max(start, now)
    move(campaign, CampaignStatus.SCHEDULED)
    return campaign


def _send_time(campaign: Campaign, zone: str, base: datetime) -> datetime:
    """When a recipient in ``zone`` gets the email: the schedule, then out of quiet hours."""
    tz = ZoneInfo(zone)
    at = base
    if campaign.schedule_mode is ScheduleMode.LOCAL and campaign.local_date:
        at = max(
            local_moment(date.fromisoformat(campaign.local_date), campaign.local_time or "", zone),
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


def assign_send_times(
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
