"""An anonymous request never attaches behaviour to a known contact (issue 17, item 4).

Anyone can post ``identify({email})`` to ``/t/collect`` with a copied Origin. Without
proof of who the visitor is (the site's identity hash, HMAC-SHA256 of the email keyed
with the site's secret, or the signed id a tracked email click gives), the visitor stays
anonymous: its events wait in ``anonymous_events``, the contact is unchanged, no workflow
enrols it and nothing is emailed. With a valid hash it is linked and everything follows."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
import sitekit
from emailkit import make_contact, make_identity, make_template
from sitekit import SHOP, admin_headers
from sqlalchemy import func, select
from test_forms import setup_form, submit
from test_site_tracking import drain, events_of, post
from workflows_support import doc

from automation.contacts.models import Contact
from automation.email.models import Message
from automation.tracking.models import AnonymousEvent, SiteVisitor
from automation.workflows import service as workflows
from automation.workflows.models import Enrollment

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
site_app = sitekit.site_app
VISITOR = "attacker-visitor-0001"


def _secret(app: Any, origin: str = SHOP) -> str:
    """The site's identity secret, as an admin reads it from the API."""
    client = app.test_client()
    listed = client.get("/api/v1/site-origins", headers=admin_headers(app)).json
    origin_id = next(o["id"] for o in listed if o["origin"] == origin)
    answer = client.get(
        f"/api/v1/site-origins/{origin_id}/identity-secret", headers=admin_headers(app)
    )
    assert answer.status_code == 200
    assert answer.json["origin"] == origin
    return answer.json["identity_secret"]


def _site_hash(secret: str, email: str) -> str:
    """What the site's server computes (written out here, not Nurture's helper)."""
    return hmac.new(secret.encode(), email.lower().encode(), hashlib.sha256).hexdigest()


def _ada_with_a_workflow(app: Any) -> int:
    """Ada, a known contact, and a live workflow that mails whoever abandons a cart."""
    with app.extensions["nurture"].sessions() as s:
        identity = make_identity(s)
        template = make_template(s, sender_identity_id=identity).template.id
        ada = make_contact(s, "ada@example.com")
        workflow = workflows.create_workflow(
            s,
            doc(
                [{"id": "mail", "type": "send_email", "template_id": template, "next": None}],
                trigger={"type": "event", "event": "cart_abandoned"},
            ),
        )
        workflows.publish(s, workflow.id)
        s.commit()
    return ada


def _state(app: Any, contact_id: int) -> dict[str, Any]:
    with app.extensions["nurture"].sessions() as s:
        contact = s.get(Contact, contact_id)
        assert contact is not None
        return {
            "contact": (contact.updated_at, contact.attributes, contact.status),
            "visitors": s.scalar(select(func.count()).select_from(SiteVisitor)),
            "enrolments": s.scalar(select(func.count()).select_from(Enrollment)),
            "messages": s.scalar(select(func.count()).select_from(Message)),
            "anonymous": s.scalar(select(func.count()).select_from(AnonymousEvent)),
        }


def _identify(client: Any, email: str, digest: str | None) -> Any:
    who = {"email": email} if digest is None else {"email": email, "hash": digest}
    return post(
        client,
        {"visitor_id": VISITOR, "identify": who, "events": [{"name": "cart_abandoned"}]},
    )


def test_identify_without_proof_or_with_a_forged_hash_touches_no_contact(site_app):
    client = site_app.test_client()
    ada = _ada_with_a_workflow(site_app)
    before = _state(site_app, ada)
    secret = _secret(site_app)
    attempts = {
        "no hash": None,
        "a hash of another address": _site_hash(secret, "mallory@example.com"),
        "a hash with another secret": _site_hash("0" * 64, "ada@example.com"),
        "another site's secret": _site_hash(_blog_secret(site_app), "ada@example.com"),
    }
    for what, digest in attempts.items():
        answer = _identify(client, "ada@example.com", digest)
        assert answer.status_code == 202, what
        assert answer.json["identify"] == "unverified", what
    report = drain(site_app)
    assert (report.identified, report.ingested) == (0, 0)
    after = _state(site_app, ada)
    assert after["anonymous"] == len(attempts)  # the events wait on the anonymous visitor
    assert {k: v for k, v in after.items() if k != "anonymous"} == {
        k: v for k, v in before.items() if k != "anonymous"
    }
    assert events_of(site_app, "ada@example.com") == []


def _blog_secret(app: Any) -> str:
    client = app.test_client()
    created = client.post(
        "/api/v1/site-origins", json={"origin": "https://blog.example"}, headers=admin_headers(app)
    )
    assert created.status_code == 201
    return _secret(app, "https://blog.example")


def test_identify_with_the_sites_identity_hash_links_the_visitor_and_triggers(site_app):
    client = site_app.test_client()
    ada = _ada_with_a_workflow(site_app)
    digest = _site_hash(_secret(site_app), "ada@example.com")
    answer = _identify(client, "Ada@Example.com", digest.upper())  # any case, any hex case
    assert (answer.status_code, answer.json["identify"]) == (202, "verified")
    report = drain(site_app)
    assert report.identified == 1
    assert [n for n, _ in events_of(site_app, "ada@example.com")] == [
        "site.identified",
        "cart_abandoned",
    ]
    with site_app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(SiteVisitor.source)) == "identity_hash"
        assert s.scalar(select(Enrollment.contact_id)) == ada
    # The same hash from another origin proves nothing there.
    _blog_secret(site_app)
    other = post(
        client,
        {
            "visitor_id": "another-visitor-002",
            "identify": {"email": "ada@example.com", "hash": digest},
        },
        origin="https://blog.example",
    )
    assert other.json["identify"] == "unverified"


def test_a_malformed_hash_is_a_422_naming_the_field(site_app):
    client = site_app.test_client()
    for digest in ("abc", "z" * 64, 7):
        answer = post(
            client, {"visitor_id": VISITOR, "identify": {"email": "a@example.com", "hash": digest}}
        )
        assert answer.status_code == 422
        assert [d["path"] for d in answer.json["error"]["details"]] == ["identify.hash"]
    assert drain(site_app).received == 0


def test_a_form_post_with_a_known_address_does_not_link_the_posting_visitor(site_app):
    """Typing someone's address into a form proves nothing about the browser that did."""
    client = site_app.test_client()
    ada = _ada_with_a_workflow(site_app)
    form = setup_form(site_app)
    post(client, {"visitor_id": VISITOR, "events": [{"name": "cart_abandoned"}]})
    drain(site_app)
    answer = submit(
        client,
        form,
        {"email": "ada@example.com", "consent": "true", "nurture_visitor": VISITOR},
    )
    assert answer.status_code == 200
    post(client, {"visitor_id": VISITOR, "events": [{"name": "cart_abandoned"}]})
    drain(site_app)
    with site_app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(func.count()).select_from(SiteVisitor)) == 0
        assert s.scalar(select(func.count()).select_from(AnonymousEvent)) == 2
        assert s.scalar(select(func.count()).where(Enrollment.contact_id == ada)) == 0
    assert "cart_abandoned" not in [n for n, _ in events_of(site_app, "ada@example.com")]


def test_the_website_page_shows_each_origins_identity_secret_to_admins_only(site_app):
    from conftest import login

    from automation.accounts.models import Role
    from automation.accounts.service import create_user

    with site_app.extensions["nurture"].sessions() as s:
        create_user(s, "root@example.com", "correct horse battery", role=Role.ADMIN)
        create_user(s, "mia@example.com", "correct horse battery", role=Role.MARKETER)
        s.commit()
    secret = _secret(site_app)
    admin = site_app.test_client()
    login(admin, "root@example.com", "correct horse battery")
    assert secret in admin.get("/settings/website").get_data(as_text=True)
    marketer = site_app.test_client()
    login(marketer, "mia@example.com", "correct horse battery")
    page = marketer.get("/settings/website")
    assert page.status_code == 200 and secret not in page.get_data(as_text=True)
    viewer = admin_headers(site_app, "marketer")
    listed = site_app.test_client().get("/api/v1/site-origins", headers=viewer).json
    refused = site_app.test_client().get(
        f"/api/v1/site-origins/{listed[0]['id']}/identity-secret", headers=viewer
    )
    assert refused.status_code == 403
