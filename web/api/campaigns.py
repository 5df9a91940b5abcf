"""Campaigns over the API: CRUD, audience count preview, schedule / pause / resume /
cancel, a manual A/B winner, the report, its CSV export and the click map."""

from __future__ import annotations

from typing import Any

from flask import Response, g
from pydantic import BaseModel

from automation.accounts.models import Role
from automation.accounts.workspace import account_zone
from automation.campaigns import reports, service
from automation.campaigns.models import Campaign
from automation.campaigns.schema import (
    AudienceIn,
    AudienceOut,
    CampaignIn,
    CampaignOut,
    ReportOut,
    ScheduleIn,
    SplitReportOut,
    VariantOut,
    WinnerIn,
)
from automation.csvfiles import csv_text
from automation.db import RowId
from automation.workflows.splits import split_report
from web.api.routing import ApiBlueprint
from web.database import db

bp = ApiBlueprint("campaigns", __name__)


class ClickMapQuery(BaseModel):
    variant_id: RowId | None = None


def _out(campaign: Campaign) -> CampaignOut:
    variants = [
        VariantOut(
            id=c.variant.id,
            name=c.variant.name,
            template_version_id=c.version.id,
            subject=c.subject,
            preheader=c.preheader,
            sender_identity_id=c.sender_identity_id,
        )
        for c in service.variant_contents(db(), campaign.id)
    ]
    fields = {k: getattr(campaign, k) for k in CampaignOut.model_fields if k != "variants"}
    return CampaignOut(**fields, variants=variants)


@bp.operation("/campaigns", "GET", summary="List campaigns", response=list[CampaignOut])
def list_campaigns() -> list[CampaignOut]:
    return [_out(c) for c in service.list_campaigns(db())]


@bp.operation(
    "/campaigns",
    "POST",
    summary="Create a campaign (a draft): audience, one variant or an A/B test of 2-5",
    role=Role.MARKETER,
    body=CampaignIn,
    response=CampaignOut,
    status=201,
)
def create_campaign(body: CampaignIn) -> CampaignOut:
    campaign = service.create_campaign(db(), body, user_id=getattr(g.principal, "user_id", None))
    db().commit()
    return _out(campaign)


@bp.operation("/campaigns/<int:campaign_id>", "GET", summary="Get a campaign", response=CampaignOut)
def get_campaign(campaign_id: int) -> CampaignOut:
    return _out(service.get_campaign(db(), campaign_id))


@bp.operation(
    "/campaigns/<int:campaign_id>",
    "PUT",
    summary="Replace a campaign that has not started (draft or scheduled): audience, "
    "variants and A/B settings; the schedule is kept",
    role=Role.MARKETER,
    body=CampaignIn,
    response=CampaignOut,
)
def update_campaign(campaign_id: int, body: CampaignIn) -> CampaignOut:
    campaign = service.update_campaign(
        db(), campaign_id, body, user_id=getattr(g.principal, "user_id", None)
    )
    db().commit()
    return _out(campaign)


@bp.operation(
    "/campaigns/<int:campaign_id>",
    "DELETE",
    summary="Delete a draft campaign",
    role=Role.MARKETER,
    status=204,
)
def delete_campaign(campaign_id: int) -> None:
    service.delete_campaign(db(), campaign_id)
    db().commit()


@bp.operation(
    "/campaigns/audience",
    "POST",
    summary="Count an audience before sending (each contact once)",
    role=Role.MARKETER,
    body=AudienceIn,
    response=AudienceOut,
)
def audience(body: AudienceIn) -> AudienceOut:
    return AudienceOut(
        count=service.audience_count(db(), body.include_segment_ids, body.exclude_segment_ids)
    )


@bp.operation(
    "/campaigns/<int:campaign_id>/audience",
    "GET",
    summary="Count a campaign's audience now",
    response=AudienceOut,
)
def campaign_audience(campaign_id: int) -> AudienceOut:
    c = service.get_campaign(db(), campaign_id)
    return AudienceOut(
        count=service.audience_count(db(), c.include_segment_ids, c.exclude_segment_ids)
    )


def _action(name: str, summary: str, fn: Any, body: type[BaseModel] | None = None) -> None:
    def view(campaign_id: int, body: Any = None) -> CampaignOut:
        campaign = fn(db(), campaign_id, body) if body is not None else fn(db(), campaign_id)
        db().commit()
        return _out(campaign)

    view.__name__ = f"{name}_campaign"
    bp.operation(
        f"/campaigns/<int:campaign_id>/{name}",
        "POST",
        summary=summary,
        role=Role.MARKETER,
        body=body,
        response=CampaignOut,
    )(view)


_action(
    "schedule",
    "Schedule: now, at a time, or a local time per recipient",
    service.schedule_campaign,
    ScheduleIn,
)
_action("pause", "Pause: waiting messages are held", service.pause_campaign)
_action("resume", "Resume a paused campaign", service.resume_campaign)
_action("cancel", "Cancel: unsent messages are removed", service.cancel_campaign)


@bp.operation(
    "/campaigns/<int:campaign_id>/winner",
    "POST",
    summary="Pick the A/B winner by hand and send it to the rest",
    role=Role.MARKETER,
    body=WinnerIn,
    response=CampaignOut,
)
def pick_winner(campaign_id: int, body: WinnerIn) -> CampaignOut:
    campaign = service.pick_winner(db(), campaign_id, body.variant_id)
    db().commit()
    return _out(campaign)


@bp.operation(
    "/campaigns/<int:campaign_id>/report",
    "GET",
    summary="Report: totals, variants, links and rates over time (human and machine apart)",
    response=ReportOut,
)
def report(campaign_id: int) -> ReportOut:
    campaign = service.get_campaign(db(), campaign_id)
    zone = account_zone(db())  # over_time: hours of the account time zone
    return ReportOut(campaign=_out(campaign), **reports.campaign_report(db(), campaign_id, zone))


@bp.operation(
    "/campaigns/<int:campaign_id>/report.csv",
    "GET",
    summary="The report as CSV",
    content_type="text/csv",
)
def report_csv(campaign_id: int) -> Response:
    service.get_campaign(db(), campaign_id)
    return Response(
        csv_text(reports.csv_rows(db(), campaign_id)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"'},
    )


@bp.operation(
    "/campaigns/<int:campaign_id>/click-map",
    "GET",
    summary="The email with each link's human clicks and share drawn over it (HTML)",
    query=ClickMapQuery,
    content_type="text/html",
)
def click_map(campaign_id: int, query: ClickMapQuery) -> Response:
    service.get_campaign(db(), campaign_id)
    page = reports.click_map_html(db(), campaign_id, query.variant_id)
    return Response(page, mimetype="text/html")


@bp.operation(
    "/workflows/<int:workflow_id>/splits/<node_id>",
    "GET",
    summary="A/B report of a workflow split node: per path sends, human opens and clicks, "
    "rates with intervals and significance",
    response=SplitReportOut,
)
def workflow_split_report(workflow_id: int, node_id: str) -> SplitReportOut:
    return SplitReportOut.model_validate(split_report(db(), workflow_id, node_id))
