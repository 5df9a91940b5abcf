"""Campaign pages: the list, the create/edit form (audience with a live count, A/B variants,
schedule), the campaign page with its actions and live progress, and the results (charts,
per-variant significance, per-link table, click map). Every change goes through
automation.campaigns.service; a view only turns the form into its input models."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import flash, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import func, select

from automation.accounts.models import Role
from automation.addresses import known_time_zones
from automation.campaigns import reports, service
from automation.campaigns.models import (
    Campaign,
    CampaignStatus,
    ScheduleMode,
    WinnerFallback,
    WinnerMethod,
    WinnerMetric,
)
from automation.campaigns.schema import CampaignIn, ScheduleIn
from automation.campaigns.stats import wilson_interval
from automation.email import identities
from automation.email.models import Message, MessageStatus, Template, TemplateVersion
from automation.errors import FieldError, InvalidInput
from automation.segments import service as segments
from automation.workflows.service import get_workflow
from automation.workflows.splits import split_report
from web.auth import login_required
from web.database import db, nurture
from web.ids import row_id
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, INVALID, errors_of, parse
from web.ui.zone import local_time, request_zone

VARIANT_SLOTS = service.MAX_VARIANTS
METRIC_LABELS = {
    WinnerMetric.OPEN_RATE.value: "Human unique open rate",
    WinnerMetric.CLICK_RATE.value: "Human unique click rate",
    WinnerMetric.CLICK_TO_OPEN.value: "Click-to-open rate",
}
METHOD_LABELS = {
    WinnerMethod.Z_TEST.value: "Two-proportion z-test (p-value)",
    WinnerMethod.BAYESIAN.value: "Bayesian probability to beat",
}
FALLBACK_LABELS = {
    WinnerFallback.LEADER.value: "Send the leader anyway",
    WinnerFallback.CONTROL.value: "Send variant A (control)",
    WinnerFallback.MANUAL.value: "Wait for me to pick",
}
MODE_LABELS = {
    ScheduleMode.NOW.value: "Now",
    ScheduleMode.AT.value: "At a time (UTC)",
    ScheduleMode.LOCAL.value: "At a local time in each recipient's zone",
}


# --- reading the form --------------------------------------------------------------------


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _ids(form: Mapping[str, Any], name: str) -> list[str]:
    return [v for v in form.getlist(name) if v.strip()]  # type: ignore[attr-defined]


def _campaign_input(form: Any) -> dict[str, Any]:
    """The form as CampaignIn's shape; numbers stay text so pydantic names a bad one."""
    variants = []
    for n in range(VARIANT_SLOTS):
        version = _blank(form.get(f"variants[{n}].template_version_id"))
        if version is None:
            continue
        variants.append(
            {
                "template_version_id": version,
                "subject": _blank(form.get(f"variants[{n}].subject")),
                "preheader": _blank(form.get(f"variants[{n}].preheader")),
                "sender_identity_id": _blank(form.get(f"variants[{n}].sender_identity_id")),
            }
        )
    data: dict[str, Any] = {
        "name": form.get("name", ""),
        "include_segment_ids": _ids(form, "include_segment_ids"),
        "exclude_segment_ids": _ids(form, "exclude_segment_ids"),
        "variants": variants,
    }
    if len(variants) > 1:
        data["ab_test"] = {
            key: form.get(f"ab_test.{key}", "").strip()
            for key in (
                "test_percent",
                "test_minutes",
                "winner_metric",
                "winner_method",
                "min_sample",
                "confidence",
                "fallback",
            )
            if form.get(f"ab_test.{key}", "").strip()
        }
    return data


def _schedule_input(form: Any) -> dict[str, Any]:
    send_at = _blank(form.get("send_at"))
    if send_at and len(send_at) <= 19 and "+" not in send_at and not send_at.endswith("Z"):
        # The form's time is in the account time zone, as its label says (anything that
        # is no date-time is left for the schema to name).
        with contextlib.suppress(ValueError):
            send_at = datetime.fromisoformat(send_at).replace(tzinfo=request_zone()).isoformat()
    data = {
        "mode": form.get("mode", "now"),
        "send_at": send_at,
        "local_date": _blank(form.get("local_date")),
        "local_time": _blank(form.get("local_time")),
        "fallback_time_zone": _blank(form.get("fallback_time_zone")) or "UTC",
        "quiet_start": _blank(form.get("quiet_start")),
        "quiet_end": _blank(form.get("quiet_end")),
    }
    return {k: v for k, v in data.items() if v is not None}


def _save(campaign_id: int | None) -> Campaign:
    """Create or update, then schedule if asked: one transaction, so a bad schedule leaves
    no draft behind and a bad variant leaves the old campaign as it was."""
    form = request.form
    errors: list[FieldError] = []
    data = schedule = None
    try:
        data = parse(CampaignIn, _campaign_input(form))
    except InvalidInput as exc:
        errors += exc.errors
    start = form.get("action") == "schedule"
    if start:
        try:
            schedule = parse(ScheduleIn, _schedule_input(form))
        except InvalidInput as exc:
            errors += exc.errors
    if errors or data is None:
        raise InvalidInput(errors)
    user_id = g.user.id
    if campaign_id is None:
        campaign = service.create_campaign(db(), data, user_id=user_id)
    else:
        campaign = service.update_campaign(db(), campaign_id, data, user_id=user_id)
    if schedule is not None:
        service.schedule_campaign(db(), campaign.id, schedule)
    return campaign


# --- the form page -------------------------------------------------------------------------


def _template_options(current_versions: list[int]) -> list[tuple[int, str]]:
    """Each live template's latest version, plus the versions the campaign already uses."""
    rows = (
        db()
        .execute(
            select(TemplateVersion.id, Template.name, TemplateVersion.number)
            .join(Template, Template.id == TemplateVersion.template_id)
            .where(
                Template.deleted_at.is_(None),
                (TemplateVersion.number == Template.latest_version)
                | TemplateVersion.id.in_(current_versions or [0]),
            )
            .order_by(Template.name, TemplateVersion.number.desc())
        )
        .all()
    )
    return [(vid, f"{name} (v{number})") for vid, name, number in rows]


def _values_of(campaign: Campaign) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": campaign.name,
        "include_segment_ids": [str(i) for i in campaign.include_segment_ids],
        "exclude_segment_ids": [str(i) for i in campaign.exclude_segment_ids],
        "ab_test.test_percent": campaign.test_percent or 20,
        "ab_test.test_minutes": campaign.test_minutes or 240,
        "ab_test.winner_metric": campaign.winner_metric.value,
        "ab_test.winner_method": campaign.winner_method.value,
        "ab_test.min_sample": campaign.min_sample or 100,
        "ab_test.confidence": campaign.confidence,
        "ab_test.fallback": campaign.fallback.value,
        "mode": campaign.schedule_mode.value,
        "send_at": local_time(campaign.send_at).strftime("%Y-%m-%dT%H:%M")
        if campaign.send_at
        else "",
        "local_date": campaign.local_date or "",
        "local_time": campaign.local_time or "",
        "fallback_time_zone": campaign.fallback_time_zone,
        "quiet_start": "" if campaign.quiet_start is None else campaign.quiet_start,
        "quiet_end": "" if campaign.quiet_end is None else campaign.quiet_end,
    }
    for n, content in enumerate(service.variant_contents(db(), campaign.id)):
        values[f"variants[{n}].template_version_id"] = content.version.id
        values[f"variants[{n}].subject"] = content.sent_subject
        values[f"variants[{n}].preheader"] = content.sent_preheader
        values[f"variants[{n}].sender_identity_id"] = content.sent_sender_identity_id or ""
    return values


def _submitted() -> dict[str, Any]:
    values: dict[str, Any] = {k: request.form.get(k, "") for k in request.form}
    values["include_segment_ids"] = _ids(request.form, "include_segment_ids")
    values["exclude_segment_ids"] = _ids(request.form, "exclude_segment_ids")
    return values


def _form(campaign: Campaign | None, values: dict[str, Any], errors: dict[str, str]) -> str:
    for path, message in list(errors.items()):  # "include_segment_ids[2]" shows at the boxes
        if path.startswith(("include_segment_ids[", "exclude_segment_ids[")):
            errors.setdefault(path.split("[", 1)[0], message)
    used = [int(v) for k, v in values.items() if k.endswith(".template_version_id") and v]
    return render_template(
        "campaigns/form.html",
        campaign=campaign,
        values=values,
        errors=errors,
        segments=segments.list_segments(db()),
        templates=_template_options(used),
        senders=[(s.id, s.name) for s in identities.list_sender_identities(db())],
        slots=range(VARIANT_SLOTS),
        names=service.VARIANT_NAMES,
        metrics=list(METRIC_LABELS.items()),
        methods=list(METHOD_LABELS.items()),
        fallbacks=list(FALLBACK_LABELS.items()),
        modes=list(MODE_LABELS.items()),
        zones=sorted(known_time_zones()),
        min_test_minutes=service.MIN_TEST_MINUTES,
    )


@bp.route("/campaigns/new", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def campaign_new() -> Any:
    if request.method != "POST":
        defaults = _values_of(Campaign(**_DEFAULTS))
        return _form(None, defaults, {})
    try:
        campaign = _save(None)
    except FORM_ERRORS as exc:
        db().rollback()
        return _form(None, _submitted(), errors_of(exc)), INVALID
    db().commit()
    _after_save(campaign)
    return redirect(url_for("ui.campaign_detail", campaign_id=campaign.id))


_DEFAULTS: dict[str, Any] = {
    "id": 0,
    "name": "",
    "include_segment_ids": [],
    "exclude_segment_ids": [],
    "test_percent": 20,
    "test_minutes": 240,
    "winner_metric": WinnerMetric.OPEN_RATE,
    "winner_method": WinnerMethod.Z_TEST,
    "min_sample": 100,
    "confidence": 0.95,
    "fallback": WinnerFallback.LEADER,
    "schedule_mode": ScheduleMode.NOW,
    "fallback_time_zone": "UTC",
}


@bp.route("/campaigns/<int:campaign_id>/edit", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def campaign_edit(campaign_id: int) -> Any:
    campaign = service.get_campaign(db(), campaign_id)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
        flash(f"A {campaign.status.value} campaign cannot be edited.", "error")
        return redirect(url_for("ui.campaign_detail", campaign_id=campaign_id))
    if request.method != "POST":
        return _form(campaign, _values_of(campaign), {})
    try:
        campaign = _save(campaign_id)
    except FORM_ERRORS as exc:
        db().rollback()
        return _form(service.get_campaign(db(), campaign_id), _submitted(), errors_of(exc)), INVALID
    db().commit()
    _after_save(campaign)
    return redirect(url_for("ui.campaign_detail", campaign_id=campaign.id))


def _after_save(campaign: Campaign) -> None:
    if campaign.status is CampaignStatus.SCHEDULED:
        nurture().enqueue("campaigns.tick")  # a "now" start happens at once, not at the next beat
        flash(f"Campaign {campaign.name} scheduled.", "success")
    else:
        flash(f"Campaign {campaign.name} saved as a draft.", "success")


# --- list, detail, progress, actions --------------------------------------------------------


def progress_of(campaign: Campaign) -> dict[str, Any]:
    return service.campaign_progress(db(), campaign)


@bp.route("/campaigns", endpoint="campaigns")
@login_required()
def campaign_list() -> Any:
    campaigns = service.list_campaigns(db())
    sent = dict(
        db()
        .execute(
            select(Message.campaign_id, func.count())
            .where(Message.status == MessageStatus.SENT, Message.campaign_id.is_not(None))
            .group_by(Message.campaign_id)
        )
        .all()
    )
    return render_template("campaigns/list.html", campaigns=campaigns, sent=sent)


def _variant_rows(campaign: Campaign, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant and group: the report's counts, the rate of the winner metric with its
    Wilson interval, and from the stored test result the p-value and probability."""
    metric = campaign.winner_metric.value
    stored = {r["variant_id"]: r for r in (campaign.test_result or {}).get("variants", [])}
    rows = []
    for v in report["variants"]:
        if metric == WinnerMetric.CLICK_TO_OPEN.value:
            successes, trials = v["human_unique_clicks"], v["human_unique_opens"]
        elif metric == WinnerMetric.CLICK_RATE.value:
            successes, trials = v["human_unique_clicks"], v["delivered"]
        else:
            successes, trials = v["human_unique_opens"], v["delivered"]
        low, high = wilson_interval(successes, trials, campaign.confidence)
        test = stored.get(v["variant_id"], {}) if v["test"] else {}
        rows.append(
            {
                **v,
                "metric_rate": successes / trials if trials else 0.0,
                "ci_low": low,
                "ci_high": high,
                "p_value": test.get("p_value_vs_leader"),
                "probability": test.get("probability_to_beat_control"),
            }
        )
    return rows


@bp.route("/campaigns/<int:campaign_id>")
@login_required()
def campaign_detail(campaign_id: int) -> Any:
    campaign = service.get_campaign(db(), campaign_id)
    variants = service.variants_of(db(), campaign_id)
    report = reports.campaign_report(db(), campaign_id, request_zone())
    subjects = {c.variant.id: c.sent_subject for c in service.variant_contents(db(), campaign_id)}
    chosen = request.args.get("variant", type=row_id)
    if chosen not in subjects:
        chosen = variants[0].id if variants else None
    click_map = reports.click_map_html(db(), campaign_id, chosen) if variants else ""
    live_count = None
    if campaign.status in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
        live_count = service.audience_count(
            db(), campaign.include_segment_ids, campaign.exclude_segment_ids
        )
    names = {s.id: s.name for s in segments.list_segments(db())}
    return render_template(
        "campaigns/detail.html",
        campaign=campaign,
        variants=variants,
        subjects=subjects,
        report=report,
        rows=_variant_rows(campaign, report),
        progress=progress_of(campaign),
        live_count=live_count,
        segment_names=names,
        click_map=click_map,
        chosen=chosen,
        metric_label=METRIC_LABELS[campaign.winner_metric.value],
        method_label=METHOD_LABELS[campaign.winner_method.value],
        fallback_label=FALLBACK_LABELS[campaign.fallback.value],
        chart_data={
            "time_zone": request_zone().key,
            "variants": [
                {
                    "name": f"{r['name']} ({'test' if r['test'] else 'rest'})",
                    "open_rate": r["open_rate"],
                    "click_rate": r["click_rate"],
                    "click_to_open": r["click_to_open"],
                }
                for r in report["variants"]
            ],
            "over_time": [
                {
                    "hour": p["hour"].isoformat(),
                    "human_opens": p["human_opens"],
                    "human_clicks": p["human_clicks"],
                }
                for p in report["over_time"]
            ],
        },
    )


@bp.route("/campaigns/<int:campaign_id>/progress.json")
@login_required()
def campaign_progress(campaign_id: int) -> Any:
    return jsonify(progress_of(service.get_campaign(db(), campaign_id)))


def _act(campaign_id: int, done: str, fn: Any, *args: Any) -> Any:
    try:
        fn(db(), campaign_id, *args)
    except FORM_ERRORS as exc:
        db().rollback()
        flash(next(iter(errors_of(exc).values())), "error")
    else:
        db().commit()
        if done:
            flash(done, "success")
        nurture().enqueue("campaigns.tick")
    return redirect(url_for("ui.campaign_detail", campaign_id=campaign_id))


@bp.route("/campaigns/<int:campaign_id>/pause", methods=["POST"])
@login_required(Role.MARKETER)
def campaign_pause(campaign_id: int) -> Any:
    return _act(campaign_id, "Campaign paused: waiting messages are held.", service.pause_campaign)


@bp.route("/campaigns/<int:campaign_id>/resume", methods=["POST"])
@login_required(Role.MARKETER)
def campaign_resume(campaign_id: int) -> Any:
    return _act(campaign_id, "Campaign resumed.", service.resume_campaign)


@bp.route("/campaigns/<int:campaign_id>/cancel", methods=["POST"])
@login_required(Role.MARKETER)
def campaign_cancel(campaign_id: int) -> Any:
    return _act(
        campaign_id, "Campaign cancelled: unsent messages were withdrawn.", service.cancel_campaign
    )


@bp.route("/campaigns/<int:campaign_id>/winner", methods=["POST"])
@login_required(Role.MARKETER)
def campaign_winner(campaign_id: int) -> Any:
    raw = request.form.get("variant_id", "")
    if not raw.isdigit():
        flash("variant_id: choose a variant", "error")
        return redirect(url_for("ui.campaign_detail", campaign_id=campaign_id))
    return _act(campaign_id, "Winner picked; it goes to the rest.", service.pick_winner, int(raw))


@bp.route("/campaigns/<int:campaign_id>/delete", methods=["POST"])
@login_required(Role.MARKETER)
def campaign_delete(campaign_id: int) -> Any:
    try:
        service.delete_campaign(db(), campaign_id)
    except FORM_ERRORS as exc:
        db().rollback()
        flash(next(iter(errors_of(exc).values())), "error")
        return redirect(url_for("ui.campaign_detail", campaign_id=campaign_id))
    db().commit()
    flash("Draft deleted.", "success")
    return redirect(url_for("ui.campaigns"))


# --- workflow split nodes ----------------------------------------------------------------


@bp.route("/workflows/<int:workflow_id>/splits/<node_id>")
@login_required()
def workflow_split(workflow_id: int, node_id: str) -> Any:
    """A standalone A/B report of one split node (the canvas links here)."""
    return render_template(
        "campaigns/split.html",
        workflow=get_workflow(db(), workflow_id),
        report=split_report(db(), workflow_id, node_id),
    )
