"""The two documented example workflows (docs/workflows.md), loaded into the demo: the
templates they send, the lead form the nurture starts on, the workflows published, and a
few contacts already on their way."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation.contacts.events import ingest_events
from automation.contacts.models import Contact, ContactStatus, LifecycleStage
from automation.email.models import SenderIdentity, Template, TemplateKind
from automation.email.samples import CART, NEWSLETTER, WELCOME
from automation.email.schema import TemplateIn
from automation.email.templates import create_template
from automation.forms.models import Form
from automation.forms.schema import FormFieldIn, FormIn
from automation.forms.service import create_form, submit_form
from automation.workflows.models import Enrollment, Workflow
from automation.workflows.service import import_workflow

# The examples' template numbers, and the template the demo gives each one.
EXAMPLE_TEMPLATES: dict[int, tuple[str, str, str]] = {
    1: ("Abandoned cart", "", ""),  # made by the email demo data
    2: (
        "Cart: 10% off",
        "10% off the cart you left, {{ contact.first_name | default('friend') }}",
        CART,
    ),
    3: ("Cart: free shipping", "Free shipping on your cart — this week only", CART),
    4: ("Cart: last reminder", "Last call: your cart expires soon", CART),
    5: ("Welcome", "", ""),  # made by the email demo data
    6: ("Nurture: case study", "How Alpine Club cut gear costs by a third", NEWSLETTER),
    7: ("Nurture: book a demo", "Got 20 minutes? See Nurture Outdoor for teams", WELCOME),
}


def example(name: str) -> dict[str, Any]:
    """An example document as shipped (``abandoned_cart`` or ``lead_nurture``)."""
    text = resources.files("automation.workflows").joinpath(f"examples/{name}.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def _templates(session: Session) -> dict[int, int]:
    identity = session.scalar(select(SenderIdentity.id).order_by(SenderIdentity.id))
    ids = dict(session.execute(select(Template.name, Template.id)).all())
    for name, subject, mjml in EXAMPLE_TEMPLATES.values():
        if name not in ids and mjml:
            saved = create_template(
                session,
                TemplateIn(
                    name=name,
                    kind=TemplateKind.MARKETING,
                    sender_identity_id=identity,
                    subject=subject,
                    mjml=mjml,
                ),
            )
            ids[name] = saved.template.id
    return {number: ids[name] for number, (name, _, _) in EXAMPLE_TEMPLATES.items()}


# The lead form the lead-nurture example starts on (its trigger names it "ebook").
EXAMPLE_FORM = FormIn(
    name="ebook",
    fields=[
        FormFieldIn(name="email", label="Email", required=True),
        FormFieldIn(name="first_name", label="First name"),
    ],
    consent_text="Send me the e-book and occasional tips by email.",
    tags=["ebook"],
    success_message="Thank you! The e-book is on its way to your inbox.",
)


def example_form(session: Session) -> Form:
    """The form the lead-nurture example names, made if it does not exist yet."""
    found = session.scalar(select(Form).where(Form.name == EXAMPLE_FORM.name))
    return found if found is not None else create_form(session, EXAMPLE_FORM)


def load_example_workflows(session: Session) -> str:
    """Publish both examples (once) and start a handful of demo contacts on them."""
    if session.scalar(
        select(Workflow.id).where(Workflow.name.in_(["Abandoned cart", "Lead nurture"]))
    ):
        return "example workflows already loaded"
    templates = _templates(session)
    form = example_form(session)
    published = {}
    for name in ("abandoned_cart", "lead_nurture"):
        document = example(name)
        for node in document["nodes"]:
            if node["type"] == "send_email":
                node["template_id"] = templates[node["template_id"]]
        published[name] = import_workflow(session, document, publish_now=True).id
    subscribed = select(Contact).where(Contact.status == ContactStatus.SUBSCRIBED)
    leads = list(
        session.scalars(
            subscribed.where(Contact.lifecycle_stage == LifecycleStage.LEAD)
            .order_by(Contact.id)
            .limit(25)
        )
    )
    # The leads ask for the e-book on its form, as they would from a website: the
    # submission's form.submitted event starts them on the lead nurture.
    for lead in leads:
        submit_form(
            session,
            form,
            {"email": lead.email, "first_name": lead.first_name, "consent": "on"},
            ip="198.51.100.7",
        )
    enrolled = session.scalar(
        select(func.count())
        .select_from(Enrollment)
        .where(Enrollment.workflow_id == published["lead_nurture"])
    )
    shoppers = list(session.scalars(subscribed.order_by(Contact.id.desc()).limit(10)))
    ingest_events(
        session,
        [
            {"name": "cart_abandoned", "email": c.email, "properties": {"cart_total": 40 + i * 15}}
            for i, c in enumerate(shoppers)
        ],
        source="demo",
    )
    return f"2 example workflows published ({enrolled} leads in the nurture, {len(shoppers)} carts)"
