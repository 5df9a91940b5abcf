"""Site tracking, forms and preferences over the API: the allowed site origins (admins),
the lead-capture forms and the preference topics (marketers edit, everyone reads)."""

from __future__ import annotations

from typing import Any

from automation.accounts.models import Role
from automation.forms import service as forms
from automation.forms.models import Form
from automation.forms.schema import (
    FormIn,
    FormOut,
    SiteIdentitySecretOut,
    SiteOriginIn,
    SiteOriginOut,
    TopicIn,
    TopicOut,
)
from automation.signing import TokenSigner
from automation.tracking import sites, topics
from web.api.routing import ApiBlueprint
from web.database import db, nurture

bp = ApiBlueprint("site_api", __name__)


@bp.operation(
    "/site-origins",
    "GET",
    summary="List the website origins allowed to embed the snippet and forms",
    response=list[SiteOriginOut],
)
def list_origins() -> list[SiteOriginOut]:
    return [SiteOriginOut.model_validate(o) for o in sites.list_site_origins(db())]


@bp.operation(
    "/site-origins",
    "POST",
    summary="Allow a website origin (CORS for collect and forms; visitor identification)",
    role=Role.ADMIN,
    body=SiteOriginIn,
    response=SiteOriginOut,
    status=201,
)
def add_origin(body: SiteOriginIn) -> SiteOriginOut:
    row = sites.add_site_origin(db(), body.origin)
    db().commit()
    return SiteOriginOut.model_validate(row)


@bp.operation(
    "/site-origins/<int:origin_id>",
    "DELETE",
    summary="Stop allowing a website origin",
    role=Role.ADMIN,
    status=204,
)
def remove_origin(origin_id: int) -> None:
    sites.remove_site_origin(db(), origin_id)
    db().commit()


@bp.operation(
    "/site-origins/<int:origin_id>/identity-secret",
    "GET",
    summary="The site's secret for identity hashes (identify calls that link a contact)",
    role=Role.ADMIN,
    response=SiteIdentitySecretOut,
)
def origin_identity_secret(origin_id: int) -> SiteIdentitySecretOut:
    signer = TokenSigner.from_settings(nurture().settings)
    origin, secret = sites.identity_secret(db(), signer, origin_id)
    return SiteIdentitySecretOut(origin=origin, identity_secret=secret)


def form_out(form: Form) -> FormOut:
    base = nurture().settings.base_url
    action = f"{base}/f/{form.public_id}"
    specs = forms.field_specs(db(), form)
    fields: dict[str, Any] = {
        k: getattr(form, k)
        for k in FormOut.model_fields
        if k not in ("fields", "action_url", "embed_html")
    }
    return FormOut(
        **fields,
        fields=specs,
        action_url=action,
        embed_html=forms.embed_html(specs, form, action, f"{base}/t/nurture.js"),
    )


@bp.operation("/forms", "GET", summary="List lead-capture forms", response=list[FormOut])
def list_forms() -> list[FormOut]:
    return [form_out(f) for f in forms.list_forms(db())]


@bp.operation(
    "/forms",
    "POST",
    summary="Create a lead-capture form (fields, consent, opt-in, tags)",
    role=Role.MARKETER,
    body=FormIn,
    response=FormOut,
    status=201,
)
def create_form(body: FormIn) -> FormOut:
    form = forms.create_form(db(), body)
    db().commit()
    return form_out(form)


@bp.operation("/forms/<int:form_id>", "GET", summary="Get a form", response=FormOut)
def get_form(form_id: int) -> FormOut:
    return form_out(forms.get_form(db(), form_id))


@bp.operation(
    "/forms/<int:form_id>",
    "PUT",
    summary="Replace a form's definition (its public URL stays)",
    role=Role.MARKETER,
    body=FormIn,
    response=FormOut,
)
def update_form(form_id: int, body: FormIn) -> FormOut:
    form = forms.update_form(db(), form_id, body)
    db().commit()
    return form_out(form)


@bp.operation(
    "/forms/<int:form_id>",
    "DELETE",
    summary="Delete a form (its submissions go with it)",
    role=Role.MARKETER,
    status=204,
)
def delete_form(form_id: int) -> None:
    forms.delete_form(db(), form_id)
    db().commit()


@bp.operation(
    "/preference-topics",
    "GET",
    summary="List the topics contacts may choose on their preferences page",
    response=list[TopicOut],
)
def list_topics() -> list[TopicOut]:
    return [TopicOut.model_validate(t) for t in topics.list_topics(db())]


@bp.operation(
    "/preference-topics",
    "POST",
    summary="Offer a tag as a topic on the preferences page",
    role=Role.MARKETER,
    body=TopicIn,
    response=TopicOut,
    status=201,
)
def add_topic(body: TopicIn) -> TopicOut:
    topic = topics.add_topic(db(), body.tag, body.label)
    db().commit()
    return TopicOut.model_validate(topic)


@bp.operation(
    "/preference-topics/<int:topic_id>",
    "DELETE",
    summary="Stop offering a topic (the tag stays on contacts)",
    role=Role.MARKETER,
    status=204,
)
def remove_topic(topic_id: int) -> None:
    topics.remove_topic(db(), topic_id)
    db().commit()
