"""Read models that cut across areas, for the dashboard and the contact page: live
workflows with their counts, recent campaigns with their engagement, and one contact's
enrolments and emails. Each is a handful of grouped queries, never a loop of lookups.

Opens and clicks here are human ones: the tracking worker stamps ``first_open_at`` /
``first_click_at`` on a message only for human hits (machine hits stay events)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation.campaigns.models import Campaign
from automation.campaigns.reports import campaign_email_counts
from automation.contacts.activity import local_day_counts
from automation.email.models import Message, MessageStatus, Template, TemplateVersion
from automation.email.rates import EmailCounts, message_counts
from automation.workflows.models import (
    OPEN_STATUSES,
    Enrollment,
    EnrollmentStatus,
    Workflow,
    WorkflowStatus,
)


@dataclass(frozen=True)
class WorkflowFigures:
    id: int
    name: str
    status: str
    in_progress: int  # enrolled and not finished: active or waiting
    enrolled: int
    converted: int


def live_workflows(session: Session, limit: int = 8) -> list[WorkflowFigures]:
    """Active workflows, busiest first, with their enrolment counts."""
    workflows = list(
        session.scalars(
            select(Workflow).where(Workflow.status == WorkflowStatus.ACTIVE).order_by(Workflow.id)
        )
    )
    if not workflows:
        return []
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for workflow_id, status, converted, n in session.execute(
        select(
            Enrollment.workflow_id,
            Enrollment.status,
            Enrollment.converted_at.is_not(None),
            func.count(),
        )
        .where(Enrollment.workflow_id.in_([w.id for w in workflows]))
        .group_by(Enrollment.workflow_id, Enrollment.status, Enrollment.converted_at.is_not(None))
    ):
        figures = counts[workflow_id]
        figures["enrolled"] += n
        if status in OPEN_STATUSES:
            figures["in_progress"] += n
        if converted:
            figures["converted"] += n
    rows = [
        WorkflowFigures(
            w.id,
            w.name,
            w.status.value,
            counts[w.id]["in_progress"],
            counts[w.id]["enrolled"],
            counts[w.id]["converted"],
        )
        for w in workflows
    ]
    rows.sort(key=lambda r: (-r.in_progress, -r.enrolled, r.id))
    return rows[:limit]


@dataclass(frozen=True)
class CampaignFigures:
    id: int
    name: str
    status: str
    started_at: datetime | None
    counts: EmailCounts  # what the campaign's report shows

    @property
    def sent(self) -> int:
        return self.counts.sent

    @property
    def open_rate(self) -> float | None:
        return self.counts.rates()["open_rate"]

    @property
    def click_rate(self) -> float | None:
        return self.counts.rates()["click_rate"]


def recent_campaigns(session: Session, limit: int = 5) -> list[CampaignFigures]:
    """The newest campaigns with the counts and rates of their reports."""
    campaigns = list(session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(limit)))
    counts = campaign_email_counts(session, [c.id for c in campaigns])
    return [
        CampaignFigures(c.id, c.name, c.status.value, c.started_at, counts.get(c.id, EmailCounts()))
        for c in campaigns
    ]


def email_period(session: Session, *, since: datetime) -> EmailCounts:
    """Every email sent since ``since`` (workflows, campaigns, transactional): the
    dashboard's rate tiles, by the rates' one definition (automation/email/rates)."""
    return message_counts(session, [Message.sent_at >= since])


def daily_sends(session: Session, *, days: int, zone: ZoneInfo) -> list[int]:
    """Emails sent per day of ``zone`` (from the messages, as the rate tiles count)."""
    _, counted = local_day_counts(
        session,
        Message.sent_at,
        [Message.status == MessageStatus.SENT],
        days=days,
        zone=zone,
    )
    return counted.get(None, [0] * days)


@dataclass(frozen=True)
class ContactEnrollment:
    id: int
    workflow_id: int
    workflow_name: str
    status: str
    current_node: str | None
    enrolled_at: datetime
    next_run_at: datetime | None
    waiting_event: str | None
    finished_at: datetime | None

    @property
    def open(self) -> bool:
        return EnrollmentStatus(self.status) in OPEN_STATUSES


def contact_enrollments(session: Session, contact_id: int) -> list[ContactEnrollment]:
    """The contact's workflow enrolments, open ones first, then the newest."""
    rows = session.execute(
        select(
            Enrollment.id,
            Enrollment.workflow_id,
            Workflow.name,
            Enrollment.status,
            Enrollment.current_node,
            Enrollment.enrolled_at,
            Enrollment.next_run_at,
            Enrollment.waiting_event,
            Enrollment.finished_at,
        )
        .join(Workflow, Workflow.id == Enrollment.workflow_id)
        .where(Enrollment.contact_id == contact_id)
        .order_by(Enrollment.enrolled_at.desc(), Enrollment.id.desc())
        .limit(100)
    )
    out = [ContactEnrollment(r[0], r[1], r[2], r[3].value, *r[4:]) for r in rows]
    out.sort(key=lambda e: not e.open)  # stable: newest first within each group
    return out


@dataclass(frozen=True)
class ContactMessage:
    id: int
    template_name: str
    version: int
    status: str
    reason: str | None
    origin: str  # the workflow or campaign it came from, or "transactional"/"direct"
    created_at: datetime
    sent_at: datetime | None
    opens: int
    clicks: int


def contact_messages(session: Session, contact_id: int, limit: int = 50) -> list[ContactMessage]:
    """The contact's emails, newest first."""
    rows = session.execute(
        select(
            Message.id,
            Template.name,
            TemplateVersion.number,
            Message.status,
            Message.reason,
            Message.workflow_name,
            Message.campaign_name,
            Message.created_at,
            Message.sent_at,
            Message.opens,
            Message.clicks,
        )
        .join(TemplateVersion, TemplateVersion.id == Message.template_version_id)
        .join(Template, Template.id == TemplateVersion.template_id)
        .where(Message.contact_id == contact_id)
        .order_by(Message.id.desc())
        .limit(limit)
    )
    return [
        ContactMessage(
            id=r.id,
            template_name=r.name,
            version=r.number,
            status=r.status.value,
            reason=r.reason,
            origin=(
                f"workflow: {r.workflow_name}"
                if r.workflow_name
                else f"campaign: {r.campaign_name}"
                if r.campaign_name
                else "direct"
            ),
            created_at=r.created_at,
            sent_at=r.sent_at,
            opens=r.opens,
            clicks=r.clicks,
        )
        for r in rows
    ]
