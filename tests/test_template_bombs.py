"""Template bombs (issue 17, items 2 and 3): every one in tests/template_bombs.py is refused
by the render budget at the operation that would blow up, naming its line, at save, in a
preview and per recipient at send; a process rendering all of them stays within the stated
memory bound; the sender fails that one message and sends the rest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import emailkit
import pytest
from emailkit import make_contact, make_template
from sqlalchemy import select
from template_bombs import BOMBS, GATED, template

from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message, send_due
from automation.email.sandbox import HTML_ENV, RenderBudgetExceeded, render

smtp_server = emailkit.smtp_server
sessions = emailkit.sessions
sending = emailkit.sending

RECIPIENT = {
    "contact": {"email": "bob@example.com", "first_name": "Bob", "tags": [], "attributes": {}}
}
MEMORY_BOUND_MB = 100  # what rendering the whole corpus may add to a process's peak RSS


@pytest.mark.parametrize("name", BOMBS)
def test_every_bomb_is_refused_by_the_render_budget_at_its_line(name):
    _kind, source = BOMBS[name]
    with pytest.raises(RenderBudgetExceeded) as refused:
        render(HTML_ENV.from_string(template(source)), RECIPIENT)
    assert refused.value.line == 3, refused.value.message


def test_ordinary_templates_are_far_from_the_budget():
    budget_source = (
        "{% for item in items %}<tr><td>{{ loop.index }}. {{ item.name|title }}</td>"
        "<td>{{ '%.2f'|format(item.price) }}</td><td>{{ '{:>8}'.format(item.qty) }}</td>"
        "</tr>{% endfor %}{{ items|map(attribute='name')|join(', ') }} {{ 2 ** 64 }}"
    )
    items = [{"name": f"thing {i}", "price": i * 1.5, "qty": i} for i in range(500)]
    out = render(HTML_ENV.from_string(budget_source), {"items": items}).output
    assert "500. Thing 499" in out and "18446744073709551616" in out


def mjml_with(source: str) -> str:
    return emailkit.MJML.replace(
        "<mj-text>Your plan:", f"<mj-text>\n{source}\n</mj-text>\n        <mj-text>Your plan:"
    )


def _line_of(mjml: str, needle: str) -> int:
    return next(i for i, line in enumerate(mjml.splitlines(), 1) if needle in line)


@pytest.fixture
def plan_field(api):
    api.post("/fields", {"name": "plan", "label": "Plan", "type": "text"})


@pytest.mark.parametrize(
    "name", ["squared 17 times", "quadratic sum", "expandtabs", "nested format width", "join"]
)
def test_saving_a_bomb_is_refused_naming_its_line(api, plan_field, name):
    mjml = mjml_with(BOMBS[name][1])
    response = api.post("/templates", {"name": "Bomb", "subject": "Hi", "mjml": mjml})
    assert response.status_code == 422, response.json
    detail = response.json["error"]["details"][0]
    line = _line_of(mjml, BOMBS[name][1][:20])
    assert detail["path"] == "mjml" and detail["message"].startswith(f"line {line}:"), detail
    assert api.get("/templates").json == []


def test_a_bomb_only_other_contacts_trigger_is_refused_at_save(api, plan_field):
    mjml = mjml_with(GATED)
    body = api.post("/templates/validate", {"subject": "Hi", "mjml": mjml}).json
    assert body["valid"] is False
    error = body["errors"][0]
    assert error["line"] == _line_of(mjml, "ada@example.com")
    assert error["message"].startswith("for a contact other than the sample")


# A bomb for one named recipient: the sample and the save's other contact never meet it, so
# it saves, and only that recipient's render runs into the budget.
def _for(email: str, bomb: str) -> str:
    return f"{{% if contact.email == '{email}' %}}{BOMBS[bomb][1]}{{% endif %}}"


def test_preview_for_the_recipient_a_bomb_is_for_answers_422_naming_the_line(api, plan_field):
    mjml = mjml_with(_for("bob@example.com", "squared 17 times"))
    saved = api.post("/templates", {"name": "Gated", "subject": "Hi", "mjml": mjml})
    assert saved.status_code == 201, saved.json
    bob = api.post("/contacts", {"email": "bob@example.com"}).json
    preview = api.get(f"/templates/{saved.json['id']}/preview?contact_id={bob['id']}")
    assert preview.status_code == 422
    message = preview.json["error"]["details"][0]["message"]
    assert message.startswith(f"line {_line_of(mjml, 'bob@example.com')}:")
    assert "larger than 4,096 bits" in message
    assert api.get(f"/templates/{saved.json['id']}/preview").status_code == 200  # the sample


def test_the_sender_fails_each_bombed_message_alone_and_sends_the_rest(
    session, sessions, sending, smtp_server
):
    mjml = mjml_with(
        _for("bob@example.com", "squared 17 times")
        + _for("carol@example.com", "join")
        + _for("dave@example.com", "quadratic sum")
    )
    saved = make_template(session, mjml=mjml)
    emails = ["ada@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]
    ids = {}
    for email in emails:
        ids[email] = queue_message(
            session,
            dedupe_key=email,
            contact_id=make_contact(session, email),
            template_version_id=saved.version.id,
        )
    session.commit()
    report = send_due(sessions, sending)
    assert report.outcomes == {"sent": 1, "failed": 3}
    with sessions() as s:
        rows = {email: s.get(Message, i) for email, i in ids.items()}
        assert not s.scalars(select(Message).where(Message.status == MessageStatus.UNKNOWN)).all()
    assert rows["ada@example.com"].status is MessageStatus.SENT
    line = _line_of(mjml, "bob@example.com")
    for email, says in (
        ("bob@example.com", "larger than 4,096 bits"),
        ("carol@example.com", "join() would be larger"),
        ("dave@example.com", "too much work"),
    ):
        failed = rows[email]
        assert failed.status is MessageStatus.FAILED and failed.reason == "render_error"
        assert failed.error.startswith(f"line {line}:") and says in failed.error, failed.error
    assert [r.recipients for r in smtp_server.received] == [["ada@example.com"]]


_MEASURE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from template_bombs import BOMBS, template
    from automation.email.sandbox import HTML_ENV, render

    def status(field):
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) for line in lines if line.startswith(field))

    context = {"contact": {"email": "bob@example.com", "first_name": "Bob"}}
    render(HTML_ENV.from_string(template("{{ contact.first_name }}")), context)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) starts again from the RSS now
    before = status("VmRSS:")
    refused = 0
    for _kind, source in BOMBS.values():
        try:
            render(HTML_ENV.from_string(template(source)), context)
        except Exception:
            refused += 1
    print(json.dumps({"before_kb": before, "peak_kb": status("VmHWM:"), "refused": refused}))
    """
)


def test_a_process_rendering_every_bomb_stays_within_the_memory_bound():
    """Peak RSS, not timing: the peak (VmHWM, reset once warmed up: imports, one render)
    of a process rendering every bomb, over its RSS before the first. Linux's /proc."""
    tests = str(Path(__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, tests], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["refused"] == len(BOMBS)
    assert measured["peak_kb"] - measured["before_kb"] < MEMORY_BOUND_MB * 1024, measured
