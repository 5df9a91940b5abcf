"""Every template we ship, and a real A/B campaign, sent through the outbox into a real SMTP
server and scored by SpamAssassin (Debian's, local tests only, no network): each raw
message as received scores under 1.0.

All messages are scored by one ``spamassassin --mbox`` process (its start-up, loading the
rules, is most of its time). Bayes is off: a score must not depend on what this machine
learnt before."""

from __future__ import annotations

import mailbox
import os
import re
import subprocess
from email import message_from_bytes, policy
from pathlib import Path

import emailkit
import pytest
from emailkit import make_contact, make_identity

from automation.campaigns.service import run_due as run_campaigns
from automation.contacts.models import FieldType
from automation.contacts.schema import CustomFieldIn
from automation.contacts.service import declare_field
from automation.email.models import TemplateKind
from automation.email.outbox import queue_message, send_due
from automation.email.samples import DEMO_TEMPLATES
from automation.email.schema import TemplateIn
from automation.email.templates import create_template
from automation.forms.service import CONFIRMATION_MJML, CONFIRMATION_TEMPLATE
from automation.workflows.examples import EXAMPLE_TEMPLATES
from web.ui.email_templates import STARTER

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending

LIMIT = 1.0
_STATUS = re.compile(
    r"^X-Spam-Status: (?:Yes|No), score=(-?[\d.]+) required=[\d.]+ tests=(.*?)\s+"
    r"(?:autolearn=|version=)",
    re.MULTILINE | re.DOTALL,
)
_MESSAGE_ID = re.compile(r"^Message-ID: (<[^>]+>)", re.MULTILINE | re.IGNORECASE)


def shipped_templates() -> list[tuple[str, str, str, str, TemplateKind]]:
    """(name, subject, preheader, MJML, kind) of every template the code ships: the demo's,
    the example workflows', the forms' built-in confirmation and the editor's starter."""
    found = [(n, s, p, m, TemplateKind.MARKETING) for n, s, p, m in DEMO_TEMPLATES]
    found += [
        (name, subject, "", mjml, TemplateKind.MARKETING)
        for name, subject, mjml in EXAMPLE_TEMPLATES.values()
        if mjml
    ]
    found.append(
        (
            CONFIRMATION_TEMPLATE,
            "Please confirm your subscription",
            "",
            CONFIRMATION_MJML,
            TemplateKind.TRANSACTIONAL,
        )
    )
    found.append(("Starter", "Hello {{ contact.first_name }}", "", STARTER, TemplateKind.MARKETING))
    return found


def spam_scores(
    spamassassin: str, messages: list[bytes], home: Path
) -> dict[str, tuple[float, str]]:
    """(score, rules hit) by Message-ID, from one SpamAssassin process (which reads an
    mbox in its own order, sorted by date: each report is matched by the Message-ID that
    follows its X-Spam-Status header)."""
    box_path = home / "messages.mbox"
    box = mailbox.mbox(box_path)
    for data in messages:
        box.add(mailbox.mboxMessage(message_from_bytes(data, policy=policy.compat32)))
    box.close()
    with box_path.open("rb") as stdin:
        done = subprocess.run(
            [
                spamassassin,
                "--local",  # no network tests
                "--test-mode",
                "--nocreate-prefs",
                "--cf=use_bayes 0",
                "--cf=bayes_auto_learn 0",
                "--mbox",
            ],
            stdin=stdin,
            capture_output=True,
            env={**os.environ, "HOME": str(home)},
            timeout=300,
            check=True,
        )
    output = done.stdout.decode("utf-8", "replace")
    statuses = list(_STATUS.finditer(output))
    found = {}
    for n, status in enumerate(statuses):
        end = statuses[n + 1].start() if n + 1 < len(statuses) else len(output)
        message_id = _MESSAGE_ID.search(output, status.end(), end)
        assert message_id is not None, output[status.start() : end][:2000]
        found[message_id.group(1)] = (float(status.group(1)), " ".join(status.group(2).split()))
    assert len(found) == len(messages), done.stderr.decode()[-2000:]
    return found


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_shipped_templates_and_a_real_campaign_score_under_one(
    api, app, session, sessions, sending, smtp_server, spamassassin, tmp_path
):
    for name in ("company", "plan"):  # the demo templates use them
        declare_field(session, CustomFieldIn(name=name, label=name.title(), type=FieldType.TEXT))
    identity = make_identity(
        session, name="Shop", from_name="Nurture Outdoor", from_email="hello@shop.example.com"
    )
    names = {}  # recipient → what was sent to them
    for n, (name, subject, preheader, mjml, kind) in enumerate(shipped_templates()):
        contact = make_contact(
            session,
            f"ada{n}@example.com",
            first_name="Ada",
            last_name="Lovelace",
            attributes={"company": "Acme", "plan": "pro"},
        )
        saved = create_template(
            session,
            TemplateIn(
                name=name,
                kind=kind,
                sender_identity_id=identity,
                subject=subject,
                preheader=preheader,
                mjml=mjml,
            ),
        )
        queue_message(
            session,
            dedupe_key=f"spam:{n}",
            contact_id=contact,
            template_version_id=saved.version.id,
            workflow_name="Shipped templates",
        )
        names[f"ada{n}@example.com"] = name
    session.commit()
    assert send_due(sessions, sending).outcomes == {"sent": len(names)}

    # A real A/B campaign of the demo newsletter, the variant with its own subject.
    newsletter = next(t for t in api.get("/templates").json if t["name"] == "Newsletter: spring")
    version = api.get(f"/templates/{newsletter['id']}").json["version"]["id"]
    readers = [
        api.post("/contacts", {"email": f"reader{n}@example.com", "first_name": f"Reader{n}"}).json[
            "id"
        ]
        for n in range(2)
    ]
    listed = api.post("/segments", {"name": "Newsletter", "kind": "static"}).json
    api.post(f"/segments/{listed['id']}/members", {"contact_ids": readers})
    campaign = api.post(
        "/campaigns",
        {
            "name": "Spring newsletter",
            "include_segment_ids": [listed["id"]],
            "variants": [
                {"template_version_id": version},
                {"template_version_id": version, "subject": "Spring is here: 20 % off"},
            ],
            "ab_test": {"test_percent": 100, "test_minutes": 60, "min_sample": 1},
        },
    )
    assert campaign.status_code == 201, campaign.json
    api.post(f"/campaigns/{campaign.json['id']}/schedule", {})
    with app.extensions["nurture"].sessions() as s:
        run_campaigns(s)
        s.commit()
    assert send_due(sessions, sending).outcomes == {"sent": 2}
    for received in smtp_server.received[len(names) :]:
        names[received.recipients[0]] = f"campaign: {received.message['Subject']}"

    received = smtp_server.received
    scores = spam_scores(spamassassin, [r.data for r in received], tmp_path)
    report = {names[r.recipients[0]]: scores[r.message["Message-ID"]] for r in received}
    assert len(report) == len(shipped_templates()) + 2
    too_high = {name: s for name, s in report.items() if s[0] >= LIMIT}
    assert not too_high, report
    # The hidden preheader is not "text coloured like its background" (it cost 0.7).
    assert all("HTML_FONT_LOW_CONTRAST" not in rules for _, rules in report.values()), report
