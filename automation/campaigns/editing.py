"""Creating, changing and deleting a campaign that has not started: every check of its
input, and each variant's template version."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from automation import clock
from automation.campaigns.models import (
    Campaign,
    CampaignStatus,
    CampaignVariant,
    ScheduleMode,
)
from automation.campaigns.queries import check_segments, get_campaign
from automation.campaigns.schema import AbTestIn, CampaignIn, VariantIn
from automation.email.models import Template, TemplateVersion
from automation.email.schema import TemplateContent
from automation.email.templates import add_version
from automation.errors import Conflict, FieldError, InvalidInput

MAX_VARIANTS = 5
MIN_TEST_MINUTES = 30
VARIANT_NAMES = "ABCDE"


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
    errors = check_segments(session, "include_segment_ids", data.include_segment_ids)
    errors += check_segments(session, "exclude_segment_ids", data.exclude_segment_ids)
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
