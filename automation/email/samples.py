"""Three ready-made templates for the demo data set: a welcome email, an abandoned-cart
reminder and a newsletter. They are saved through the same checks as any template."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.email.models import SenderIdentity, Template, TemplateKind
from automation.email.schema import TemplateIn
from automation.email.templates import create_template

_HEAD = """
  <mj-head>
    <mj-title>{title}</mj-title>
    <mj-font name="Inter" href="https://fonts.googleapis.com/css?family=Inter:400,600,700" />
    <mj-attributes>
      <mj-all font-family="Inter, Helvetica, Arial, sans-serif" />
      <mj-text font-size="16px" line-height="1.6" color="#1f2d27" />
      <mj-button background-color="#2f6f4f" color="#ffffff" font-size="16px"
                 font-weight="600" border-radius="6px" inner-padding="14px 28px" />
      <mj-section padding="0px" />
    </mj-attributes>
    <mj-style>
      .footer a {{ color: #6b7c74; text-decoration: underline; }}
      .card {{ border-radius: 8px; }}
    </mj-style>
  </mj-head>"""

_HEADER = """
    <mj-section background-color="#2f6f4f" padding="20px 24px">
      <mj-column>
        <mj-text color="#ffffff" font-size="20px" font-weight="700" padding="0px">
          Nurture Outdoor
        </mj-text>
      </mj-column>
    </mj-section>"""

_FOOTER = """
    <mj-section padding="24px">
      <mj-column>
        <mj-text css-class="footer" font-size="12px" color="#6b7c74" align="center">
          You receive this because you signed up at Nurture Outdoor.<br />
          <a href="{{ view_in_browser_url }}">View in browser</a> ·
          <a href="{{ preferences_url }}">Email preferences</a> ·
          <a href="{{ unsubscribe_url }}">Unsubscribe</a>
        </mj-text>
      </mj-column>
    </mj-section>"""


def _email(title: str, sections: str) -> str:
    """A demo email: the shared head, header and footer around its own sections."""
    return (
        "<mjml>"
        + _HEAD.format(title=title)
        + """
  <mj-body background-color="#eef3f0">"""
        + _HEADER
        + sections
        + _FOOTER
        + """
  </mj-body>
</mjml>
"""
    )


WELCOME = _email(
    "Welcome to Nurture Outdoor",
    """
    <mj-section background-color="#ffffff" padding="36px 24px 8px">
      <mj-column>
        <mj-text font-size="28px" font-weight="700" line-height="1.3">
          Welcome aboard, {{ contact.first_name | default("explorer") }}!
        </mj-text>
        <mj-text>
          We are glad you are here. Every week we share trail guides, gear we trust and
          early access to our sales{% if contact.attributes.company %} — including a
          team rate for {{ contact.attributes.company }}{% endif %}.
        </mj-text>
        <mj-button href="https://shop.example.com/start?src=welcome">
          Find your first trail
        </mj-button>
      </mj-column>
    </mj-section>
    <mj-section background-color="#ffffff" padding="8px 24px 32px">
      <mj-column>
        <mj-text font-weight="600">Three things to try this week</mj-text>
        <mj-text padding-top="0px">
          1. <a href="https://shop.example.com/guides/day-hikes">Pick a day hike</a>
             near you.<br />
          2. Check our <a href="https://shop.example.com/packing-list">packing list</a>.<br />
          3. Reply to this email: a real person reads it.
        </mj-text>
      </mj-column>
    </mj-section>
    {% if contact.lifecycle_stage == "customer" %}
    <mj-section background-color="#f7efe2" padding="16px 24px">
      <mj-column>
        <mj-text font-size="14px">
          Thanks for shopping with us. Members earn double points this month.
        </mj-text>
      </mj-column>
    </mj-section>
    {% endif %}""",
)

CART = _email(
    "You left something behind",
    """
    <mj-section background-color="#ffffff" padding="32px 24px 8px">
      <mj-column>
        <mj-text font-size="26px" font-weight="700" line-height="1.3">
          {{ contact.first_name | default("Hi") }}, your cart is waiting
        </mj-text>
        <mj-text>
          The gear you picked is still in your cart, but we can only hold it for a little
          while longer.
        </mj-text>
        <mj-button href="https://shop.example.com/cart?src=abandoned-cart">
          Return to your cart
        </mj-button>
      </mj-column>
    </mj-section>
    <mj-section background-color="#ffffff" padding="8px 24px 24px">
      <mj-group>
        <mj-column css-class="card" background-color="#f4f7f5" padding="8px">
          <mj-image src="https://placehold.co/240x160/2f6f4f/ffffff?text=Rain+Jacket"
                    alt="Rain Jacket" href="https://shop.example.com/p/sku-202"
                    border-radius="6px" />
          <mj-text font-weight="600" padding-bottom="0px">Rain Jacket</mj-text>
          <mj-text padding-top="0px" color="#6b7c74">$189</mj-text>
        </mj-column>
        <mj-column css-class="card" background-color="#f4f7f5" padding="8px">
          <mj-image src="https://placehold.co/240x160/8a5a2b/ffffff?text=Headlamp"
                    alt="Headlamp" href="https://shop.example.com/p/sku-404"
                    border-radius="6px" />
          <mj-text font-weight="600" padding-bottom="0px">Headlamp</mj-text>
          <mj-text padding-top="0px" color="#6b7c74">$39</mj-text>
        </mj-column>
      </mj-group>
    </mj-section>
    {% if "vip" in contact.tags %}
    <mj-section background-color="#2f6f4f" padding="16px 24px">
      <mj-column>
        <mj-text color="#ffffff" align="center" font-weight="600">
          As a VIP, use code TRAIL10 for 10% off today.
        </mj-text>
      </mj-column>
    </mj-section>
    {% endif %}""",
)

_ARTICLES = [
    ("Five sunrise hikes worth the early alarm", "guides/sunrise", "e9c46a"),
    ("How to layer for a wet spring", "guides/layering", "2a9d8f"),
    ("Trail snacks, ranked by our staff", "blog/snacks", "e76f51"),
]

NEWSLETTER = _email(
    "The Trail Letter",
    """
    <mj-section background-color="#ffffff" padding="28px 24px 4px">
      <mj-column>
        <mj-text font-size="13px" color="#6b7c74" text-transform="uppercase"
                 letter-spacing="1px">The Trail Letter</mj-text>
        <mj-text font-size="26px" font-weight="700" line-height="1.3" padding-top="0px">
          Spring is here, {{ contact.first_name | default("friend") }}
        </mj-text>
      </mj-column>
    </mj-section>"""
    + "".join(
        f"""
    <mj-section background-color="#ffffff" padding="12px 24px">
      <mj-column width="40%">
        <mj-image src="https://placehold.co/220x150/{color}/ffffff?text=Read" alt="{title}"
                  href="https://shop.example.com/{path}" border-radius="6px" />
      </mj-column>
      <mj-column width="60%">
        <mj-text font-weight="600" font-size="18px" line-height="1.3">{title}</mj-text>
        <mj-text font-size="14px" padding-top="0px">
          <a href="https://shop.example.com/{path}">Read the story →</a>
        </mj-text>
      </mj-column>
    </mj-section>"""
        for title, path, color in _ARTICLES
    )
    + """
    {% if contact.attributes.plan in ["pro", "enterprise"] %}
    <mj-section background-color="#f7efe2" padding="16px 24px">
      <mj-column>
        <mj-text font-size="14px">
          {{ contact.attributes.plan | capitalize }} members: the spring gear swap opens to
          you a week early.
        </mj-text>
      </mj-column>
    </mj-section>
    {% endif %}""",
)

DEMO_TEMPLATES = [
    (
        "Welcome",
        "Welcome to Nurture Outdoor, {{ contact.first_name | default('explorer') }}",
        "Trail guides, gear we trust and early access.",
        WELCOME,
    ),
    (
        "Abandoned cart",
        "{{ contact.first_name | default('Hi') }}, you left something behind",
        "Your cart is waiting — we can hold it a little longer.",
        CART,
    ),
    (
        "Newsletter: spring",
        "The Trail Letter: spring is here",
        "Sunrise hikes, layering for rain and the snack ranking.",
        NEWSLETTER,
    ),
]


def load_demo_templates(session: Session) -> int:
    """Create the demo templates that do not exist yet; returns how many were created."""
    identity_id = session.scalar(select(SenderIdentity.id).order_by(SenderIdentity.id))
    existing = set(session.scalars(select(Template.name)))
    created = 0
    for name, subject, preheader, mjml in DEMO_TEMPLATES:
        if name in existing:
            continue
        create_template(
            session,
            TemplateIn(
                name=name,
                kind=TemplateKind.MARKETING,
                sender_identity_id=identity_id,
                subject=subject,
                preheader=preheader,
                mjml=mjml,
            ),
        )
        created += 1
    return created
