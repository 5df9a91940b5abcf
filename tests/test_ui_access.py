"""Every private route is checked: the whole Flask URL map is walked as each role, so a
route added later is covered without touching this file. Also CSRF on every form and
escaping of attacker-controlled values on every page."""

from __future__ import annotations

import re

import pytest
from conftest import login
from sqlalchemy import select

from automation.accounts.models import Role
from automation.accounts.service import create_api_key, create_user
from automation.campaigns.schema import CampaignIn, VariantIn
from automation.campaigns.service import create_campaign
from automation.contacts.jobs import draft_import_job, run_import_job
from automation.contacts.models import CustomField, FieldType
from automation.contacts.schema import ContactIn
from automation.contacts.service import create_contact
from automation.email.identities import create_sender_identity
from automation.email.models import TemplateVersion
from automation.email.schema import SenderIdentityIn, TemplateIn
from automation.email.templates import create_template
from automation.segments.models import Segment, SegmentKind
from automation.segments.service import create_segment
from automation.segments.shapes import (
    SegmentIn,
)
from automation.workflows.service import create_workflow

PASSWORD = "correct horse battery"
ROLES = ("viewer", "marketer", "admin")
XSS = '<script>alert(1)</script><img src=x onerror=alert("xss")>'


@pytest.fixture
def seeded(app):
    """Users of each role and one row of every kind a route can point at (all id 1)."""
    from automation import clock

    with app.extensions["nurture"].sessions() as s:
        # The viewer is user 1: the admin's walk resets user 1's password, which ends that
        # user's sessions (and would end the walk had it been the admin's own).
        for role in ("viewer", "marketer", "admin"):
            create_user(s, f"{role}@example.com", PASSWORD, role=Role(role), name=XSS)
        s.add(CustomField(name="note", label=XSS, type=FieldType.TEXT, created_at=clock.now()))
        s.flush()
        create_contact(
            s,
            ContactIn(
                email="ana@example.com",
                first_name=XSS,
                last_name=XSS,
                attributes={"note": XSS},
                tags=[XSS],
                consent_text=XSS,
            ),
            source="test",
        )
        create_contact(s, ContactIn(email="ana+dup@example.com", first_name=XSS), source="test")
        create_sender_identity(
            s, SenderIdentityIn(name=XSS, from_name=XSS, from_email="hello@example.com")
        )
        create_api_key(s, XSS, role=Role.VIEWER)
        create_segment(s, SegmentIn(name=XSS, description=XSS, kind=SegmentKind.STATIC))
        create_template(
            s,
            TemplateIn(
                name=XSS, subject=XSS, kind="transactional", mjml="<mjml><mj-body></mj-body></mjml>"
            ),
            user_id=None,
        )
        create_workflow(
            s,
            {
                "name": XSS,
                "trigger": {"type": "manual"},
                "start": "end",
                "nodes": [{"id": "end", "name": XSS, "type": "exit"}],
            },
        )
        segment_id = s.scalar(select(Segment.id))
        create_campaign(
            s,
            CampaignIn(
                name=XSS,
                include_segment_ids=[segment_id],
                variants=[VariantIn(template_version_id=s.scalar(select(TemplateVersion.id)))],
            ),
        )
        job, _ = draft_import_job(
            s, f"{XSS}.csv", f"Email,{XSS}\nnot-an-email,x\n".encode(), created_by_id=1
        )
        s.commit()
    return {"job": job.id}


def _client(app, role: str | None):
    client = app.test_client()
    if role:
        assert login(client, f"{role}@example.com", PASSWORD).status_code == 302
    return client


def _csrf(client) -> str:
    page = client.get("/login" if client.get("/").status_code == 302 else "/")
    html = page.get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token" type="hidden" value="([^"]+)"', html
    )
    return match.group(1)


def _routes(app):
    """(path, method, view) for every route with a view of ours; ids are filled in as 1."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        path = re.sub(r"<(?:int|bigid):\w+>", "1", rule.rule)
        path = re.sub(r"<(?:\w+:)?\w+>", "x", path)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield path, method, view


def _call(client, method: str, path: str, token: str | None):
    if path.startswith("/api/"):
        headers = {"X-CSRFToken": token} if token else {}
        response = client.open(
            path, method=method, json={} if method != "GET" else None, headers=headers
        )
    else:
        data = {"csrf_token": token} if token and method != "GET" else None
        response = client.open(path, method=method, data=data)
    # Read and close, as a server does: a streamed download (members.csv) holds its
    # database transaction until then.
    response.get_data()
    response.close()
    return response


def test_every_route_is_public_or_declares_the_role_it_needs(app):
    for path, method, view in _routes(app):
        public = getattr(view, "public", False)
        assert public or hasattr(view, "required_role"), f"{method} {path} checks no role"


def test_only_login_logout_the_api_document_and_ops_probes_are_public(app):
    public = {(p, m) for p, m, v in _routes(app) if getattr(v, "public", False)}
    assert public == {
        ("/login", "GET"),
        ("/login", "POST"),
        ("/logout", "POST"),
        ("/api/v1/openapi.json", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),  # a bearer token of its own when NURTURE_METRICS_TOKEN is set
        # Tracking (issue 5): the signed token in the URL is the authority.
        ("/t/o/x", "GET"),
        ("/t/c/x", "GET"),
        ("/u/x", "GET"),
        ("/u/x", "POST"),
        ("/p/x", "GET"),
        ("/p/x", "POST"),
        ("/v/x", "GET"),
        ("/webhooks/feedback", "POST"),  # HMAC-signed
        ("/webhooks/dsn", "POST"),  # HMAC-signed
        # Site tracking and forms (issue 5): Origin-checked, validated, rate-limited.
        ("/t/nurture.js", "GET"),
        ("/t/collect", "POST"),
        ("/f/x", "POST"),
        ("/f/confirm/x", "GET"),  # a signed token; GET changes nothing
        ("/f/confirm/x", "POST"),
    }


def test_state_changes_need_at_least_the_marketer_role(app):
    for path, method, view in _routes(app):
        if method != "GET" and not getattr(view, "public", False):
            if getattr(view, "read_only", False):  # declared side-effect free (counts, previews)
                continue
            assert view.required_role.allows(Role.MARKETER), f"viewers may {method} {path}"


def test_accounts_and_keys_pages_are_for_admins_only(app):
    for path, _method, view in _routes(app):
        if path.startswith(("/settings/users", "/settings/api-keys", "/api/v1/users")):
            assert view.required_role is Role.ADMIN, path


def test_anonymous_visitors_are_sent_to_login_or_get_401(app, seeded):
    client = _client(app, None)
    token = _csrf(client)
    for path, method, view in _routes(app):
        if getattr(view, "public", False):
            continue
        response = _call(client, method, path, token)
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path, response.status_code)
        else:
            assert response.status_code == 302, (method, path, response.status_code)
            assert "/login" in response.headers["Location"], (method, path)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_what_its_role_allows(app, seeded, role):
    """Below the route's role: 403. At or above it: neither 401/403 nor a server error
    (an empty form is a 4xx or a redirect, a missing row a 404)."""
    client = _client(app, role)
    token = _csrf(client)
    mine = Role(role)
    for path, method, view in _routes(app):
        if getattr(view, "public", False):
            continue
        response = _call(client, method, path, token)
        status = response.status_code
        if mine.allows(view.required_role):
            assert status not in (401, 403) and status < 500, (role, method, path, status)
        else:
            assert status == 403, (role, method, path, status)


def test_page_forms_without_the_csrf_token_are_refused(app, seeded):
    client = _client(app, "admin")
    for path, method, view in _routes(app):
        if method == "GET" or path.startswith("/api/") or getattr(view, "public", False):
            continue
        response = client.open(path, method=method, data={})
        assert response.status_code == 400, (method, path, response.status_code)
        assert "CSRF" in response.get_data(as_text=True)


def _pages(app):
    """The private pages people see (not the API, not the public probes)."""
    for path, method, view in _routes(app):
        if method == "GET" and not path.startswith("/api/") and not getattr(view, "public", 0):
            yield path


def test_every_post_form_on_every_page_carries_the_csrf_token(app, seeded):
    client = _client(app, "admin")
    checked = 0
    for path in _pages(app):
        html = client.get(path).get_data(as_text=True)
        for form in re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S | re.I):
            if re.search(r'method="post"', form, flags=re.I):
                assert 'name="csrf_token"' in form, (path, form[:200])
                checked += 1
    assert checked > 10


def test_attacker_controlled_values_are_escaped_on_every_page(app, seeded):
    client = _client(app, "admin")
    token = _csrf(client)
    # Fix the draft's mapping and run it in-process, so the report holds the bad header name.
    client.post(
        f"/contacts/import/{seeded['job']}/mapping",
        data={"csrf_token": token, "column-0": "email", "column-1": "", "permission": "consent"},
    )
    run_import_job(app.extensions["nurture"].sessions, seeded["job"])
    client.post(
        "/api/v1/events",
        json={
            "events": [
                {
                    "name": "page_viewed",
                    "email": "ana@example.com",
                    "properties": {"user_agent": XSS, XSS: XSS},
                }
            ]
        },
        headers={"X-CSRFToken": token},
    )
    pages = [p for p in _pages(app)] + ["/?days=7", "/contacts?q=ana", "/contacts/1/merge?q=ana"]
    for path in pages:
        response = client.get(path)
        response.get_data()
        response.close()
        if response.mimetype != "text/html":
            # Downloads and polled JSON: never sniffed into a page by the browser.
            assert response.mimetype in ("application/json", "text/csv"), path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            continue
        html = response.get_data(as_text=True)
        assert "<script>" not in html, path
        assert "<img src=x" not in html, path
    detail = client.get("/contacts/1").get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(" in detail
    report = client.get(f"/contacts/import/{seeded['job']}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report  # the ignored column's name
