"""Creating, changing and deleting a campaign that has not started: every check of its
input, and each variant's template version with the subject, preheader or sender it
overrides. An override is never a version of the template (a workflow sending the
template's latest would send it): it is kept beside the variant and applied when the
campaign's messages are rendered."""

from __future__ import annotations

from dataclasses import dataclass
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
from automation.campaigns.queries import check_segments, get_campaign, variants_of
from automation.campaigns.schema import AbTestIn, CampaignIn, VariantIn
from automation.email.models import Template, TemplateVersion
from automation.email.schema import TemplateContent
from automation.email.templates import (
    add_override,
    delete_overrides,
    preheader_overridable,
    validate_template,
)
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


@dataclass(frozen=True)
class _Variant:
    """A variant's input, checked: its version and what it overrides (None: the version's)."""

    version: TemplateVersion
    subject: str | None = None
    preheader: str | None = None
    sender_identity_id: int | None = None

    @property
    def content(self) -> tuple[Any, ...]:
        """What recipients get: two variants the same in all of it are one."""
        v = self.version
        return (
            v.subject if self.subject is None else self.subject,
            v.preheader if self.preheader is None else self.preheader,
            v.sender_identity_id if self.sender_identity_id is None else self.sender_identity_id,
            v.mjml,
        )


def _checked_variant(session: Session, n: int, variant: VariantIn) -> _Variant:
    """The variant's version, and its overrides checked as the template they make would
    be (every save check, named under the variant). Nothing is saved as a version: the
    overrides are applied when the campaign's messages are rendered."""
    version = session.get(TemplateVersion, variant.template_version_id)
    path = f"variants[{n}].template_version_id"
    if version is None:
        raise InvalidInput(FieldError(path, f"no template version {variant.template_version_id}"))
    template = session.get(Template, version.template_id)
    if template is None or template.deleted_at is not None:
        raise InvalidInput(FieldError(path, "the template is deleted"))
    checked = _Variant(
        version,
        subject=variant.subject if variant.subject not in (None, version.subject) else None,
        preheader=variant.preheader if variant.preheader not in (None, version.preheader) else None,
        sender_identity_id=variant.sender_identity_id
        if variant.sender_identity_id not in (None, version.sender_identity_id)
        else None,
    )
    if checked.preheader is not None and not preheader_overridable(version):
        raise InvalidInput(
            FieldError(
                f"variants[{n}].preheader",
                "this template version was saved before variants could have their own "
                "preheader; save the template again, then pick its new version",
            )
        )
    if checked == _Variant(version):
        return checked
    subject, preheader, sender_identity_id, mjml = checked.content
    content = TemplateContent(
        kind=version.kind,
        sender_identity_id=sender_identity_id,
        subject=subject,
        preheader=preheader,
        mjml=mjml,
        language=version.language,
    )
    result = validate_template(session, content)
    if result.errors:  # the override does not compile: name it under the variant
        raise InvalidInput(
            [FieldError(f"variants[{n}].{p.path}", p.message) for p in result.errors],
            message=f"variant {VARIANT_NAMES[n]} has {len(result.errors)} problem(s)",
        )
    return checked


def _checked_variants(
    session: Session, data: CampaignIn, *, campaign_id: int | None = None
) -> list[_Variant]:
    """Every check of a campaign's input, then each variant's version and overrides."""
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
    variants = [_checked_variant(session, n, v) for n, v in enumerate(data.variants)]
    seen: dict[tuple[Any, ...], int] = {}
    for n, variant in enumerate(variants):
        if variant.content in seen:
            errors.append(
                FieldError(
                    f"variants[{n}]",
                    f"does not differ from variant {VARIANT_NAMES[seen[variant.content]]} in "
                    "subject, preheader, sender or content",
                )
            )
        seen.setdefault(variant.content, n)
    if errors:
        raise InvalidInput(errors)
    return variants


def _apply(
    session: Session, campaign: Campaign, data: CampaignIn, variants: list[_Variant]
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
    for n, variant in enumerate(variants):
        override = (
            add_override(
                session, variant.version.id, subject=variant.subject, preheader=variant.preheader
            )
            if variant.subject is not None or variant.preheader is not None
            else None
        )
        session.add(
            CampaignVariant(
                campaign_id=campaign.id,
                position=n,
                name=VARIANT_NAMES[n],
                template_version_id=variant.version.id,
                override_id=override.id if override else None,
                sender_identity_id=variant.sender_identity_id,
            )
        )
    session.flush()


def create_campaign(session: Session, data: CampaignIn, *, user_id: int | None = None) -> Campaign:
    variants = _checked_variants(session, data)
    now = clock.now()
    campaign = Campaign(
        status=CampaignStatus.DRAFT,
        schedule_mode=ScheduleMode.NOW,
        fallback_time_zone="UTC",
        created_at=now,
    )
    _apply(session, campaign, data, variants)
    return campaign


def update_campaign(
    session: Session, campaign_id: int, data: CampaignIn, *, user_id: int | None = None
) -> Campaign:
    """Change a campaign that has not started (draft or scheduled): audience, variants and
    A/B settings are replaced as a whole; its schedule is kept."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
        raise Conflict(f"a {campaign.status.value} campaign cannot be edited")
    variants = _checked_variants(session, data, campaign_id=campaign.id)
    replaced = [v.override_id for v in variants_of(session, campaign.id)]
    session.execute(delete(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id))
    delete_overrides(session, replaced)
    _apply(session, campaign, data, variants)
    return campaign


def delete_campaign(session: Session, campaign_id: int) -> None:
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status is not CampaignStatus.DRAFT:
        raise Conflict("only a draft campaign can be deleted; cancel it instead")
    replaced = [v.override_id for v in variants_of(session, campaign.id)]
    session.delete(campaign)
    session.flush()
    delete_overrides(session, replaced)
