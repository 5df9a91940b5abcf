"""What a recipient's mail client gets, read from the raw message a real SMTP server
received: the language and title of the HTML, a preheader hidden without a colour, the
List-Id and Feedback-ID headers, and a plain-text part laid out in paragraphs."""

from __future__ import annotations

import re
from dataclasses import replace

import emailkit
import pytest
from workflows_support import doc

from automation.campaigns.service import run_due as run_campaigns
from automation.config import load_settings
from automation.email.outbox import send_due
from automation.email.sender import Sending
from automation.workflows.engine import run_due as run_workflows

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending

FOOTER = '<mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>'


def _mjml(inner: str, head: str = "") -> str:
    head = f"<mj-head>{head}</mj-head>" if head else ""
    return (
        f"<mjml>{head}<mj-body><mj-section><mj-column>{inner}{FOOTER}"
        "</mj-column></mj-section></mj-body></mjml>"
    )


def _template(api, name: str, mjml: str, **fields) -> int:
    response = api.post(
        "/templates", {"name": name, "subject": f"{name} news", "mjml": mjml, **fields}
    )
    assert response.status_code == 201, response.json
    return response.json["id"]


def _workflow(api, name: str, template_id: int, event: str, node_id: str = "send") -> int:
    document = doc(
        [
            {"id": node_id, "type": "send_email", "template_id": template_id, "next": "end"},
            {"id": "end", "type": "exit"},
        ],
        trigger={"type": "event", "event": event},
        name=name,
    )
    workflow = api.post("/workflows", document).json
    assert api.post(f"/workflows/{workflow['id']}/publish").status_code == 201
    return workflow["id"]


def _send_through_workflows(api, sessions, sending, smtp_server, *items):
    """Each (template id, email): a workflow sends the template to a new contact."""
    for n, (template_id, email) in enumerate(items):
        _workflow(api, f"Flow {n}", template_id, f"event_{n}")
        api.post("/events", {"events": [{"name": f"event_{n}", "email": email}]})
    run_workflows(sessions)
    assert send_due(sessions, sending).outcomes == {"sent": len(items)}
    return {r.recipients[0]: r for r in smtp_server.received}


def _html(received) -> str:
    return received.message.get_body(("html",)).get_content()


def _text(received) -> str:
    return received.message.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_html_lang_is_the_templates_language_else_the_workspaces(
    api, sessions, settings, smtp_server, tmp_path
):
    german = _template(api, "German", _mjml("<mj-text>Hallo</mj-text>"), language="de-CH")
    plain = _template(api, "Plain", _mjml("<mj-text>Hello</mj-text>"))
    bad = api.post(
        "/templates", {"name": "Bad", "subject": "x", "mjml": _mjml(""), "language": "<b>"}
    )
    assert bad.status_code == 422
    assert [d["path"] for d in bad.json["error"]["details"]] == ["language"]
    workspace = Sending.from_settings(
        replace(
            settings, email_language="fr", smtp_host=smtp_server.host, smtp_port=smtp_server.port
        )
    )
    try:
        got = _send_through_workflows(
            api,
            sessions,
            workspace,
            smtp_server,
            (german, "g@example.com"),
            (plain, "p@example.com"),
        )
    finally:
        workspace.transport.close()
    assert re.search(r'<html lang="de-CH"', _html(got["g@example.com"]))
    assert re.search(r'<html lang="fr"', _html(got["p@example.com"]))
    assert 'lang="und"' not in _html(got["p@example.com"])
    env = {"NURTURE_VAR_DIR": str(tmp_path), "NURTURE_SECRET_KEY": "k" * 40}
    assert load_settings({**env, "NURTURE_EMAIL_LANGUAGE": "pt-BR"}).email_language == "pt-BR"
    assert load_settings(env).email_language == "en"
    with pytest.raises(ValueError, match="NURTURE_EMAIL_LANGUAGE"):
        load_settings({**env, "NURTURE_EMAIL_LANGUAGE": "en_US<"})


def test_the_title_is_the_subject_unless_the_template_has_one(api, sessions, sending, smtp_server):
    untitled = _template(
        api, "Untitled", _mjml("<mj-text>Hi</mj-text>"), subject="Hi {{ contact.email }} & co"
    )
    titled = _template(
        api, "Titled", _mjml("<mj-text>Hi</mj-text>", head="<mj-title>Our letter</mj-title>")
    )
    got = _send_through_workflows(
        api, sessions, sending, smtp_server, (untitled, "u@example.com"), (titled, "t@example.com")
    )
    title = re.compile(r"<title>\s*(.*?)\s*</title>", re.DOTALL)
    assert title.search(_html(got["u@example.com"])).group(1) == "Hi u@example.com &amp; co"
    assert title.search(_html(got["t@example.com"])).group(1) == "Our letter"


def test_the_preheader_is_hidden_without_a_colour(api, sessions, sending, smtp_server):
    ours = _template(api, "Ours", _mjml("<mj-text>Body</mj-text>"), preheader="Tom & Jerry <3")
    own = _template(
        api,
        "Own",
        _mjml("<mj-text>Body</mj-text>", head="<mj-preview>Its own preview</mj-preview>"),
    )
    got = _send_through_workflows(
        api, sessions, sending, smtp_server, (ours, "o@example.com"), (own, "w@example.com")
    )
    for email, text in (
        ("o@example.com", "Tom &amp; Jerry &lt;3"),
        ("w@example.com", "Its own preview"),
    ):
        html = _html(got[email])
        block = re.search(r'<div style="(display:none[^"]*)">\s*' + re.escape(text), html)
        assert block is not None, html[:2000]
        assert "color" not in block.group(1) and "mso-hide:all" in block.group(1)
        assert text.split()[0] not in _text(got[email])  # not in the text part


def test_list_id_and_feedback_id_name_the_list_and_the_origin(
    api, app, sessions, sending, smtp_server
):
    template = _template(api, "Letter", _mjml("<mj-text>Hi</mj-text>"))
    # Two workflows whose send nodes have the same id.
    first = _workflow(api, "Onboarding", template, "a", node_id="welcome")
    second = _workflow(api, "Winback", template, "b", node_id="welcome")
    api.post("/events", {"events": [{"name": "a", "email": "a@example.com"}]})
    api.post("/events", {"events": [{"name": "b", "email": "b@example.com"}]})
    run_workflows(sessions)
    contact = api.post("/contacts", {"email": "c@example.com"}).json["id"]
    listed = api.post("/segments", {"name": "L", "kind": "static"}).json
    api.post(f"/segments/{listed['id']}/members", {"contact_ids": [contact]})
    version = api.get(f"/templates/{template}").json["version"]["id"]
    campaign = api.post(
        "/campaigns",
        {
            "name": "Spring",
            "include_segment_ids": [listed["id"]],
            "variants": [{"template_version_id": version}],
        },
    ).json
    api.post(f"/campaigns/{campaign['id']}/schedule", {})
    with app.extensions["nurture"].sessions() as s:
        run_campaigns(s)
        s.commit()
    assert send_due(sessions, sending).outcomes == {"sent": 3}
    got = {r.recipients[0]: r.message for r in smtp_server.received}

    feedback = {email: got[email]["Feedback-ID"] for email in got}
    assert len(set(feedback.values())) == 3
    for value in feedback.values():
        assert re.fullmatch(r"[\w.-]+:[\w.-]+:[\w.-]+:nurture", value), value
    assert feedback["a@example.com"].startswith(f"w{first}.welcome:m{template}:")
    assert feedback["b@example.com"].startswith(f"w{second}.welcome:m{template}:")
    assert feedback["c@example.com"].startswith(f"c{campaign['id']}:m{template}:")

    list_id = re.compile(r'(?:"[^"]*"|[^<>"]*) <([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>')  # RFC 2919
    ids = {email: list_id.fullmatch(str(got[email]["List-Id"])) for email in got}
    assert all(ids.values()), {e: got[e]["List-Id"] for e in got}
    assert ids["a@example.com"].group(1) == f"w{first}.workflows.example.com"
    assert ids["b@example.com"].group(1) == f"w{second}.workflows.example.com"
    assert ids["c@example.com"].group(1) == "campaigns.example.com"
    assert str(got["a@example.com"]["List-Id"]).startswith("Onboarding <")


TEXT_MJML = _mjml(
    """
    <mj-text><h1>Spring is here</h1><p>First paragraph.</p><p>Second paragraph.</p></mj-text>
    <mj-text>Lines of one block<br />stay together.</mj-text>
    {% if "vip" in contact.tags %}
    <mj-text>Only for VIPs.</mj-text>
    {% endif %}
    <mj-text>{% if "vip" in contact.tags %}A VIP line.{% endif %}</mj-text>
    <mj-button href="https://shop.example/sale">Shop the sale</mj-button>
    <mj-image src="https://shop.example/jacket.png" alt="Rain Jacket"
              href="https://shop.example/p/1" />
    <mj-text>Rain Jacket</mj-text>
    <mj-text>$189</mj-text>
    """
)


@pytest.mark.parametrize("vip", [True, False])
def test_the_text_part_is_paragraphs_with_conditions_and_images_shown_once(
    api, sessions, sending, smtp_server, vip
):
    template = _template(api, "Sale", TEXT_MJML)
    tags = ["vip"] if vip else []
    api.post("/contacts", {"email": "r@example.com", "tags": tags})
    _workflow(api, "Flow", template, "go")
    api.post("/events", {"events": [{"name": "go", "email": "r@example.com"}]})
    run_workflows(sessions)
    assert send_due(sessions, sending).outcomes == {"sent": 1}
    [received] = smtp_server.received
    text = _text(received)
    paragraphs = text.strip().split("\n\n")
    shop = next(p for p in paragraphs if p.startswith("[Shop the sale]("))
    expected = [
        "Spring is here",
        "First paragraph.",
        "Second paragraph.",
        "Lines of one block\nstay together.",
        *(["Only for VIPs.", "A VIP line."] if vip else []),
        shop,
    ]
    assert paragraphs[: len(expected)] == expected
    assert "\n\n\n" not in text
    jacket = [p for p in paragraphs if "Rain Jacket" in p]
    assert len(jacket) == 1 and jacket[0].startswith("[Rain Jacket](http")  # the image link
    assert paragraphs[paragraphs.index(jacket[0]) + 1] == "$189"
