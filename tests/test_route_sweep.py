"""Issue 17 item 1: no route of either app (the main app and the tracking app) changes the
database on GET, HEAD or OPTIONS, whoever asks and whatever body comes with it; and no
state-changing private route acts without its CSRF token.

The URL map is walked, so a route added later is swept too. Every id and token in a URL is
a real one from a world seeded through the product: the tokens come from emails the outbox
really sent to a real SMTP server. The body carries what each POST branch would need (the
typed confirmation, a name, ``List-Unsubscribe=One-Click``), as the issue's attack did.
"""

from __future__ import annotations

import re
from typing import Any

import emailkit
import pytest
import sitekit
from conftest import login, make_api_key
from emailkit import make_contact, make_identity, make_template
from sitekit import SHOP
from sqlalchemy import text

from automation.accounts.models import Role
from automation.accounts.service import create_user
from automation.campaigns.schema import CampaignIn, VariantIn
from automation.campaigns.service import create_campaign
from automation.contacts.jobs import draft_import_job
from automation.contacts.models import ContactStatus
from automation.db import Base
from automation.email.outbox import queue_message, send_due
from automation.email.sender import Sending
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.forms.schema import FormIn
from automation.forms.service import create_form
from automation.segments.models import SegmentKind
from automation.segments.service import create_segment
from automation.segments.shapes import SegmentIn
from automation.signing import TokenSigner
from automation.tracking.sites import list_site_origins
from automation.tracking.topics import add_topic
from automation.workflows.service import create_workflow

site_app = sitekit.site_app
smtp_server = emailkit.smtp_server

PASSWORD = "correct horse battery"
SAFE = ("GET", "HEAD", "OPTIONS")


def _send_all(app: Any, smtp_server: Any) -> None:
    runtime = app.extensions["nurture"]
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    try:
        send_due(
            runtime.sessions,
            Sending(runtime.settings, transport, TokenSigner.from_settings(runtime.settings)),
        )
    finally:
        transport.close()


def _paths(mail: Any) -> list[str]:
    """Every Nurture path in a received email (body parts and List-Unsubscribe)."""
    texts = [str(mail.message.get("List-Unsubscribe", ""))]
    texts += [
        part.get_content() for part in mail.message.walk() if part.get_content_maintype() == "text"
    ]
    return [p for t in texts for p in re.findall(r"http://nurture\.test(/[^\s\"'<>]+)", t)]


@pytest.fixture
def world(site_app: Any, smtp_server: Any) -> dict[str, Any]:
    """One row of each kind a route points at, made by the product's own functions, and
    the tokens of two emails the outbox sent: a campaign-style message and a double
    opt-in confirmation."""
    runtime = site_app.extensions["nurture"]
    with runtime.sessions() as s:
        admin = create_user(s, "admin@example.com", PASSWORD, role=Role.ADMIN)
        identity = make_identity(s)
        saved = make_template(s, sender_identity_id=identity)
        ana = make_contact(s, "ana@example.com")
        dup = make_contact(s, "ana+dup@example.com")
        segment = create_segment(s, SegmentIn(name="Readers", kind=SegmentKind.STATIC))
        workflow = create_workflow(
            s,
            {
                "name": "Welcome",
                "trigger": {"type": "manual"},
                "start": "end",
                "nodes": [{"id": "end", "name": "End", "type": "exit"}],
            },
        )
        campaign = create_campaign(
            s,
            CampaignIn(
                name="Spring",
                include_segment_ids=[segment.id],
                variants=[VariantIn(template_version_id=saved.version.id)],
            ),
        )
        form = create_form(
            s,
            FormIn(
                name="Newsletter",
                fields=[{"name": "email", "label": "Email", "required": True}],
                double_opt_in=True,
            ),
        )
        job, _ = draft_import_job(
            s, "people.csv", b"Email\nzed@example.com\n", created_by_id=admin.id
        )
        topic = add_topic(s, "news", "News")
        message = queue_message(
            s,
            dedupe_key="sweep:ana",
            contact_id=ana,
            template_version_id=saved.version.id,
            workflow_name="Welcome",
        )
        s.commit()
        ids = {
            "user_id": admin.id,
            "contact_id": ana,
            "duplicate_id": dup,
            "segment_id": segment.id,
            "workflow_id": workflow.id,
            "campaign_id": campaign.id,
            "template_id": saved.template.id,
            "version_id": saved.version.id,
            "identity_id": identity,
            "sender_id": identity,
            "form_id": form.id,
            "job_id": job.id,
            "topic_id": topic.id,
            "message_id": message,
            "origin_id": list_site_origins(s)[0].id,
            "number": 1,
        }
        public_id = form.public_id
    ids["key_id"] = 1
    site_app.test_client().post(
        f"/f/{public_id}",
        data={"email": "zoe@example.com"},
        headers={"Origin": SHOP, "Accept": "application/json"},
    )
    _send_all(site_app, smtp_server)
    mails = {m.recipients[0]: m for m in smtp_server.received}
    tokens: dict[str, str] = {}
    for path in _paths(mails["ana@example.com"]) + _paths(mails["zoe@example.com"]):
        match = re.match(r"/(t/o|t/c|u|p|v|f/confirm)/([A-Za-z0-9_.-]+)", path)
        if match:
            tokens.setdefault(match.group(1), match.group(2))
    assert set(tokens) == {"t/o", "t/c", "u", "p", "v", "f/confirm"}, tokens
    return {"ids": ids, "tokens": tokens, "public_id": public_id}


def _fill(rule: Any, world: dict[str, Any]) -> str:
    """The rule's path with real values for its arguments."""
    ids, tokens = world["ids"], world["tokens"]

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "token":
            prefix = next(p for p in tokens if rule.rule.startswith(f"/{p}/"))
            return tokens[prefix]
        if name == "public_id":
            return str(world["public_id"])
        if name == "name":
            return "plan"
        if name == "node_id":
            return "end"
        if name == "filename":
            return "app.css"
        if name == "enrollment_id":
            return "1"
        return str(ids.get(name, "x"))

    return re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", value, rule.rule)


def _snapshot(app: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    with app.extensions["nurture"].engine.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in conn.execute(table.select())), key=repr)
            for table in Base.metadata.sorted_tables
        }


def _body(world: dict[str, Any]) -> dict[str, str]:
    """What the POST branches of the views read: enough for each to act if it ran."""
    return {
        "confirm": "ana@example.com",
        "duplicate_id": str(world["ids"]["duplicate_id"]),
        "name": "Sweep",
        "email": "sweep@example.com",
        "from_name": "Sweep",
        "from_email": "sweep@example.com",
        "fields": "email | Email | required",
        "column-0": "email",
        "do": "unsubscribe",
        "List-Unsubscribe": "One-Click",
        "role": "viewer",
        "tag": "swept",
    }


def _clients(app: Any) -> dict[str, tuple[Any, dict[str, str]]]:
    anonymous = app.test_client()
    admin = app.test_client()
    assert login(admin, "admin@example.com", PASSWORD).status_code == 302
    key = make_api_key(app, "admin")
    keyed = app.test_client()
    # A key's first use records last_used_at (then at most every five minutes): used once
    # before the snapshot, so the sweep sees only what the routes themselves do.
    assert (
        keyed.get("/api/v1/contacts", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    )
    return {
        "anonymous": (anonymous, {}),
        "admin": (admin, {}),
        "admin key": (keyed, {"Authorization": f"Bearer {key}"}),
    }


def _sweep(app: Any, world: dict[str, Any], clients: dict[str, Any]) -> int:
    calls = 0
    for rule in app.url_map.iter_rules():
        path = _fill(rule, world)
        for who, (client, headers) in clients.items():
            for method in SAFE:
                for data in (None, _body(world)):
                    response = client.open(
                        path, method=method, data=data, headers={"Origin": SHOP, **headers}
                    )
                    response.get_data()
                    response.close()
                    status = response.status_code
                    # /readyz answers 503 here: no SMTP relay or broker runs for this test.
                    assert status < 500 or path == "/readyz", (who, method, path, status)
                    calls += 1
    return calls


def test_no_route_of_either_app_changes_the_database_on_get_head_or_options(site_app, world):
    from web import create_tracking_app

    tracking_app = create_tracking_app(site_app.extensions["nurture"].settings)
    try:
        clients = _clients(site_app)
        before = _snapshot(site_app)
        calls = _sweep(site_app, world, clients)
        calls += _sweep(tracking_app, world, {"anonymous": (tracking_app.test_client(), {})})
        after = _snapshot(site_app)
    finally:
        tracking_app.extensions["nurture"].engine.dispose()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == set(), changed
    assert calls > 1500
    # The routes did run with real tokens: the recipient is still subscribed, and the
    # unsubscribe page and the confirmation page answered 200.
    with site_app.extensions["nurture"].sessions() as s:
        statuses = dict(s.execute(text("SELECT email, status FROM contacts")).all())
    assert statuses["ana@example.com"] == ContactStatus.SUBSCRIBED.value
    tokens = world["tokens"]
    client = site_app.test_client()
    assert client.head(f"/u/{tokens['u']}").status_code == 200
    assert client.head(f"/f/confirm/{tokens['f/confirm']}").status_code == 200


def test_head_on_the_unsubscribe_and_confirm_links_changes_nothing_and_post_still_acts(
    site_app, world
):
    client = site_app.test_client()
    tokens = world["tokens"]
    one_click = {"List-Unsubscribe": "One-Click"}
    assert client.head(f"/u/{tokens['u']}", data=one_click).status_code == 200
    assert client.head(f"/f/confirm/{tokens['f/confirm']}").status_code == 200
    with site_app.extensions["nurture"].sessions() as s:
        found = dict(s.execute(text("SELECT email, status FROM contacts")).all())
    assert found["ana@example.com"] == "subscribed"
    assert found["zoe@example.com"] == "pending"
    # RFC 8058 one-click: a POST with List-Unsubscribe=One-Click unsubscribes at once.
    done = client.post(f"/u/{tokens['u']}", data=one_click)
    assert done.status_code == 200
    assert client.post(f"/f/confirm/{tokens['f/confirm']}").status_code == 200
    with site_app.extensions["nurture"].sessions() as s:
        found = dict(s.execute(text("SELECT email, status FROM contacts")).all())
    assert found["ana@example.com"] == "unsubscribed"
    assert found["zoe@example.com"] == "subscribed"


def _state_changing(app: Any) -> list[tuple[Any, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if getattr(view, "public", False) or getattr(view, "read_only", False):
            continue
        for method in sorted(rule.methods - set(SAFE)):
            found.append((rule, method))
    return found


def test_every_state_changing_private_route_refuses_a_request_without_its_csrf_token(
    site_app, world
):
    clients = _clients(site_app)
    admin, _ = clients["admin"]
    before = _snapshot(site_app)
    checked = 0
    for rule, method in _state_changing(site_app):
        path = _fill(rule, world)
        if path.startswith("/api/"):
            response = admin.open(path, method=method, json={"name": "Sweep"})
            assert response.status_code == 401, (method, path, response.status_code)
            assert "CSRF" in response.get_data(as_text=True), (method, path)
        else:
            response = admin.open(path, method=method, data=_body(world))
            assert response.status_code == 400, (method, path, response.status_code)
            assert "CSRF" in response.get_data(as_text=True), (method, path)
        checked += 1
    assert _snapshot(site_app) == before
    assert checked > 60
    # The same session with its token does act (the refusal above was the missing token).
    page = admin.get("/contacts/new").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    made = admin.post("/contacts/new", data={"csrf_token": token, "email": "new@example.com"})
    assert made.status_code == 302
    with site_app.extensions["nurture"].sessions() as s:
        assert s.scalar(text("SELECT count(*) FROM contacts WHERE email = 'new@example.com'")) == 1
