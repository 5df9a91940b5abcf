"""The compiler's honeypot link and campaign-level UTM parameters on the click redirect."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import make_settings
from emailkit import make_contact
from pydantic import ValidationError
from sqlalchemy import select, update
from test_tracking import HUMAN_UA, drain, sent_message

from automation import clock
from automation.campaigns.models import Campaign, CampaignVariant
from automation.campaigns.schema import CampaignIn
from automation.contacts.models import Event
from automation.email.compiler import LINK_MARKER
from automation.email.models import Message, TemplateVersion
from automation.email.outbox import queue_message
from automation.runtime import use_runtime
from automation.signing import TokenKind, TokenSigner


@pytest.fixture
def app(tmp_path, sqlite_url):
    from web import create_app

    application = create_app(make_settings(tmp_path, sqlite_url), {"TESTING": True})
    use_runtime(application.extensions["nurture"])
    yield application
    application.extensions["nurture"].engine.dispose()
    use_runtime(None)


def version_of(app: Any, version_id: int) -> TemplateVersion:
    with app.extensions["nurture"].sessions() as s:
        version = s.get(TemplateVersion, version_id)
        assert version is not None
        return version


def another_message(app: Any, version_id: int) -> Any:
    with app.extensions["nurture"].sessions() as s:
        message_id = queue_message(
            s,
            dedupe_key="test:other",
            contact_id=make_contact(s, "ann@example.com"),
            template_version_id=version_id,
        )
        nonce = s.scalar(select(Message.token_nonce).where(Message.id == message_id))
        s.commit()
    signer = TokenSigner.from_settings(app.extensions["nurture"].settings)
    return {"tokens": signer.for_message(message_id, nonce, version_id)}


def test_the_compiled_email_has_a_hidden_honeypot_link_a_click_on_which_marks_a_scanner(app):
    client = app.test_client()
    sent = sent_message(app)
    version = version_of(app, sent["version_id"])
    trap = version.links[-1]
    assert trap["honeypot"] is True and trap["url"] == ""
    marker = LINK_MARKER.format(trap["index"])
    anchor = version.html[
        version.html.index(marker) - 9 : version.html.index("</a>", version.html.index(marker))
    ]
    assert "display:none" in anchor and 'aria-hidden="true"' in anchor and 'tabindex="-1"' in anchor
    assert marker not in version.text  # no reader of the text part sees it either
    # a gateway following every href: the honeypot answers 200 and goes nowhere
    token = sent["tokens"].token(TokenKind.CLICK, trap["index"])
    response = client.get(f"/t/c/{token}", headers={"User-Agent": HUMAN_UA})
    assert response.status_code == 200 and "Location" not in response.headers
    assert drain(app).machine == 1
    with app.extensions["nurture"].sessions() as s:
        props = s.scalar(select(Event.properties).where(Event.name == "email.clicked"))
    assert props["classification"] == "scanner" and "honeypot link clicked" in props["reasons"]


def test_a_campaign_asking_for_utm_gets_it_on_every_click_and_links_keep_their_own(app):
    client = app.test_client()
    sent = sent_message(app, "zoe@example.com")
    other = another_message(app, sent["version_id"])  # same version, not the campaign's
    with app.extensions["nurture"].sessions() as s:
        campaign = Campaign(
            name="Spring sale",
            utm={"utm_source": "nurture", "utm_campaign": "spring", "utm_medium": "email"},
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        s.add(campaign)
        s.flush()
        s.add(
            CampaignVariant(
                campaign_id=campaign.id,
                position=0,
                name="A",
                template_version_id=sent["version_id"],
            )
        )
        s.execute(update(Message).where(Message.id == sent["id"]).values(campaign_id=campaign.id))
        s.commit()
    response = client.get(f"/t/c/{sent['tokens'].token(TokenKind.CLICK, 0)}")
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["utm_campaign"] == ["spring"] and query["utm_source"] == ["nurture"]
    assert query["utm"] == ["1"] and query["x"] == ["2"]  # the link's own parameters stay
    plain = client.get(f"/t/c/{other['tokens'].token(TokenKind.CLICK, 0)}")
    assert "utm_campaign" not in plain.headers["Location"]


def test_campaign_utm_keys_and_values_are_validated():
    base = {"name": "x", "include_segment_ids": [1], "variants": [{"template_version_id": 1}]}
    with pytest.raises(ValidationError) as exc:
        CampaignIn.model_validate({**base, "utm": {"utm_source": "a", "ref": "b"}})
    assert exc.value.errors()[0]["loc"] == ("utm",)
    assert CampaignIn.model_validate({**base, "utm": {"utm_source": " news "}}).utm == {
        "utm_source": "news"
    }


def test_the_preferences_page_lets_a_contact_choose_topics(app):
    from automation.tracking.topics import add_topic, chosen_topics

    client = app.test_client()
    sent = sent_message(app)
    with app.extensions["nurture"].sessions() as s:
        add_topic(s, "news", "Monthly news")
        add_topic(s, "deals", "Deals <b>& offers</b>")
        s.commit()
    path = f"/p/{sent['tokens'].token(TokenKind.PREFERENCES)}"
    page = client.get(path).get_data(as_text=True)
    assert 'name="topic"\n value="news"' in page and "Deals &lt;b&gt;&amp; offers&lt;/b&gt;" in page
    client.post(path, data={"do": "topics", "topic": ["news", "deals", "not-a-topic"]})
    with app.extensions["nurture"].sessions() as s:
        assert chosen_topics(s, sent["contact_id"]) == {"news", "deals"}
    shown = client.post(path, data={"do": "topics", "topic": ["deals"]}).get_data(as_text=True)
    assert 'value="deals" checked' in shown and 'value="news" checked' not in shown
    with app.extensions["nurture"].sessions() as s:
        assert chosen_topics(s, sent["contact_id"]) == {"deals"}
    # an unsubscribed contact is offered to subscribe again, not topics
    client.post(path, data={"do": "unsubscribe"})
    page = client.get(path).get_data(as_text=True)
    assert "Subscribe again" in page and 'name="topic"' not in page


def test_preference_topics_api_needs_a_marketer_and_names_bad_fields(app):
    from conftest import make_api_key

    client = app.test_client()
    viewer = {"Authorization": f"Bearer {make_api_key(app, 'viewer')}"}
    marketer = {"Authorization": f"Bearer {make_api_key(app, 'marketer')}"}
    topic = {"tag": "news", "label": "News"}
    assert client.post("/api/v1/preference-topics", json=topic, headers=viewer).status_code == 403
    bad = client.post("/api/v1/preference-topics", json={"tag": "", "label": "x"}, headers=marketer)
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "tag"
    created = client.post("/api/v1/preference-topics", json=topic, headers=marketer)
    assert created.status_code == 201
    assert client.post("/api/v1/preference-topics", json=topic, headers=marketer).status_code == 409
    listed = client.get("/api/v1/preference-topics", headers=viewer).json
    assert [t["tag"] for t in listed] == ["news"]
