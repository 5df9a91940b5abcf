"""An erased contact stays erased: no event, import, form post or site visit brings the
address back, unless a new explicit consent arrives (a form with consent wording, double
opt-in, an operator recording the new consent); then it is a new contact with that consent.
Only a hash of the address is kept after erasure."""

from __future__ import annotations

import io
from typing import Any

import pytest
import sitekit
from conftest import ApiClient, make_api_key
from sqlalchemy import select, text

from automation.contacts.jobs import run_import_job
from automation.contacts.models import ConsentRecord, Contact, ContactStatus
from automation.contacts.suppressions import suppression_reasons

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
site_app = sitekit.site_app
ADDRESS = "erase.me@example.com"


@pytest.fixture
def api(site_app: Any) -> ApiClient:
    return ApiClient(site_app.test_client(), make_api_key(site_app), site_app)


@pytest.fixture
def erased(api: ApiClient) -> None:
    created = api.post("/contacts", {"email": ADDRESS, "first_name": "Eve"})
    assert created.status_code == 201
    assert api.post("/events", {"events": [{"name": "x", "email": ADDRESS}]}).status_code < 300
    assert api.post(f"/contacts/{created.json['id']}/erase").status_code == 204


def _contact(app: Any) -> Contact | None:
    with app.extensions["nurture"].sessions() as s:
        return s.scalar(select(Contact).where(Contact.email == ADDRESS))


def _stored_anywhere(app: Any) -> bool:
    """Whether the plain address is in any text column of any table."""
    with app.extensions["nurture"].sessions() as s:
        columns = s.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type IN "
                "('text', 'character varying', 'jsonb', 'json')"
            )
        ).all()
        for table, column in columns:
            found = s.execute(
                text(f'SELECT 1 FROM "{table}" WHERE "{column}"::text ILIKE :a LIMIT 1'),
                {"a": f"%{ADDRESS}%"},
            ).first()
            if found:
                return True
    return False


def test_after_erasure_only_a_hash_of_the_address_is_kept(site_app, api, erased):
    assert not _stored_anywhere(site_app)


def test_events_through_the_api_never_re_create_an_erased_address(site_app, api, erased):
    response = api.post(
        "/events",
        {
            "events": [
                {"name": "order", "email": ADDRESS.upper()},
                {"name": "x", "email": "new@example.com"},
            ]
        },
    )
    assert response.status_code < 500, response.json
    body = response.json
    [bad] = [r for r in body["results"] if r["status"] == "error"]
    assert bad["index"] == 0 and "erased" in bad["errors"][0]["message"]
    assert _contact(site_app) is None and not _stored_anywhere(site_app)
    assert api.get("/contacts").json["total"] == 1  # the other address was created


def test_site_tracking_never_re_creates_an_erased_address(site_app, api, erased):
    from test_site_tracking import drain, post

    client = site_app.test_client()
    post(
        client,
        {
            "visitor_id": "v" * 24,
            "identify": {"email": ADDRESS},
            "events": [{"name": "pricing_viewed"}],
        },
    )
    drain(site_app)
    assert _contact(site_app) is None and not _stored_anywhere(site_app)


def test_an_import_never_re_creates_an_erased_address_and_says_so(site_app, api, erased):
    response = api.client.post(
        "/api/v1/imports",
        headers=api._headers(),
        data={
            "file": (io.BytesIO(f"E-mail\n{ADDRESS}\nother@example.com\n".encode()), "old-crm.csv"),
            "permission": "customers",
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    run_import_job(site_app.extensions["nurture"].sessions, response.json["id"])
    report = api.get(f"/imports/{response.json['id']}").json["report"]
    assert (report["created"], report["failed"]) == (1, 1)
    [error] = report["errors"]
    assert (error["row"], error["column"]) == (2, "E-mail") and "erased" in error["reason"]
    assert _contact(site_app) is None


def test_a_single_opt_in_form_without_consent_wording_does_not_bring_it_back(site_app, api, erased):
    from test_forms import setup_form, submit

    form = setup_form(site_app, consent_text="")
    response = submit(site_app.test_client(), form, {"email": ADDRESS, "first_name": "Eve"})
    assert response.status_code == 200
    assert _contact(site_app) is None and not _stored_anywhere(site_app)


def test_a_form_with_consent_makes_a_new_mailable_contact_with_that_consent(site_app, api, erased):
    from test_forms import FORM, setup_form, submit

    form = setup_form(site_app)
    response = submit(
        site_app.test_client(), form, {"email": ADDRESS, "first_name": "Eve", "consent": "on"}
    )
    assert response.json["status"] == "confirmed"
    contact = _contact(site_app)
    assert contact is not None and contact.status is ContactStatus.SUBSCRIBED
    with site_app.extensions["nurture"].sessions() as s:
        [consent] = s.scalars(select(ConsentRecord).where(ConsentRecord.contact_id == contact.id))
        assert consent.consent_text == FORM["consent_text"] and consent.source.startswith("form:")
    # No longer on the suppression list: the new consent lets it be mailed.
    with site_app.extensions["nurture"].sessions() as s:
        assert suppression_reasons(s, [ADDRESS]) == {}


def test_an_operator_re_creates_an_erased_address_only_with_the_new_consent(site_app, api, erased):
    refused = api.post("/contacts", {"email": ADDRESS})
    assert refused.status_code == 409
    assert refused.json["error"]["details"][0]["path"] == "email"
    assert _contact(site_app) is None
    again = api.post("/contacts", {"email": ADDRESS, "consent_text": "Signed up at our booth"})
    assert again.status_code == 201


def test_an_other_contact_takes_an_erased_address_only_with_the_new_consent(site_app, api, erased):
    other = api.post("/contacts", {"email": "other@example.com"}).json
    refused = api.patch(f"/contacts/{other['id']}", {"email": ADDRESS})
    assert refused.status_code == 409
    assert refused.json["error"]["details"][0]["path"] == "email"
    assert _contact(site_app) is None
    moved = api.patch(f"/contacts/{other['id']}", {"email": ADDRESS, "consent_text": "Asked us"})
    assert moved.status_code == 200
