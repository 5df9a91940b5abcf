"""What a marketer sees of workflows and emails outside their own pages: the dashboard's
active workflows and recent campaigns, and a contact's enrolments and emails, each email
viewable as the contact got it but without tracking (looking must not count as opening)."""

from __future__ import annotations

from campaignkit import make_list
from conftest import login
from sqlalchemy import select, update
from test_tracking import HUMAN_UA, drain
from workflows_support import doc, make_templates

from automation.campaigns.schema import CampaignIn, VariantIn
from automation.campaigns.service import create_campaign
from automation.email.models import Message, MessageStatus, TemplateVersion
from automation.email.outbox import queue_message
from automation.signing import TokenKind, TokenSigner

PASSWORD = "correct horse battery"


def test_dashboard_and_contact_page_show_workflows_campaigns_and_emails(app, harness, user_factory):
    (template,) = make_templates(harness.sessions, "Welcome")
    workflow = harness.publish(
        doc(
            [
                {"id": "mail", "type": "send_email", "template_id": template, "next": "pause"},
                {"id": "pause", "type": "wait", "mode": "duration", "duration": {"days": 2}},
            ],
            name="Onboarding <b>flow</b>",
        )
    )
    harness.events(
        {"name": "signed_up", "email": "ana@example.com"},
        {"name": "signed_up", "email": "bo@example.com"},
    )
    harness.tick()
    ana, bo = harness.contact_id("ana@example.com"), harness.contact_id("bo@example.com")
    with harness.sessions() as s:
        version = s.scalar(
            select(TemplateVersion.id).where(TemplateVersion.template_id == template)
        )
        friends = make_list(s, "Friends", [ana, bo])
        campaign = create_campaign(
            s,
            CampaignIn(
                name="Spring sale",
                include_segment_ids=[friends],
                variants=[VariantIn(template_version_id=version)],
            ),
        )
        sale = queue_message(
            s,
            dedupe_key="campaign-test:ana",
            contact_id=ana,
            template_version_id=version,
            campaign_id=campaign.id,
            campaign_name="Spring sale",
        )
        queue_message(
            s,
            dedupe_key="campaign-test:bo",
            contact_id=bo,
            template_version_id=version,
            campaign_id=campaign.id,
            campaign_name="Spring sale",
        )
        # What the sender leaves behind: both sent.
        s.execute(
            update(Message)
            .where(Message.campaign_id == campaign.id)
            .values(status=MessageStatus.SENT, sent_at=harness.clock.now)
        )
        nonce = s.scalar(select(Message.token_nonce).where(Message.id == sale))
        bo_mail = s.scalar(
            select(Message.id).where(Message.contact_id == bo, Message.workflow_id == workflow)
        )
        s.commit()

    # Ana opens it: the pixel, then the tracking worker.
    signer = TokenSigner.from_settings(app.extensions["nurture"].settings)
    pixel = signer.for_message(sale, nonce, version).token(TokenKind.OPEN)
    app.test_client().get(f"/t/o/{pixel}", headers={"User-Agent": HUMAN_UA})
    assert drain(app).human == 1

    user_factory("viewer@example.com", PASSWORD, "viewer")
    client = app.test_client()
    assert login(client, "viewer@example.com", PASSWORD).status_code == 302

    dashboard = client.get("/").get_data(as_text=True)
    active = dashboard.split('id="live-workflows"')[1].split("</section>")[0]
    assert "Onboarding &lt;b&gt;flow&lt;/b&gt;" in active  # escaped
    assert '<td class="num">2</td>' in active  # both contacts waiting two days
    recent = dashboard.split('id="recent-campaigns"')[1].split("</section>")[0]
    assert "Spring sale" in recent and "50.0 %" in recent  # 1 of 2 opened

    page = client.get(f"/contacts/{ana}").get_data(as_text=True)
    enrolments = page.split('id="enrollments"')[1].split("</section>")[0]
    assert "Onboarding &lt;b&gt;flow&lt;/b&gt;" in enrolments and "pause" in enrolments
    emails = page.split('id="emails"')[1].split("</section>")[0]
    assert "workflow: Onboarding" in emails and "campaign: Spring sale" in emails

    shown = client.get(f"/contacts/{ana}/emails/{sale}")
    assert shown.status_code == 200
    body = shown.get_data(as_text=True)
    assert "Welcome for ana@example.com" in body  # rendered for this contact
    assert "/t/o/" not in body and "/t/c/" not in body  # no pixel, no tracked links
    with harness.sessions() as s:
        assert s.get(Message, sale).opens == 1  # viewing changed nothing

    assert client.get(f"/contacts/{ana}/emails/{bo_mail}").status_code == 404  # Bo's
    assert client.get(f"/contacts/{ana}/emails/999999").status_code == 404
