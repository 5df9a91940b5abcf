"""The A/B report of a workflow split node: per path the contacts, the emails sent after
the split, human opens and clicks (machine hits ignored), and the significance test, over
the API and on its page; an unknown node is a 404."""

from __future__ import annotations

import pytest
from campaignkit import engage, write_events
from conftest import login
from sqlalchemy import select
from workflows_support import doc, make_templates

from automation.accounts.models import Role
from automation.accounts.service import create_user
from automation.campaigns.stats import two_proportion_p_value
from automation.email.models import Message, MessageStatus
from automation.errors import NotFound
from automation.workflows.splits import split_report


def test_split_report_counts_human_engagement_per_path(harness, app, api, client):
    a_template, b_template = make_templates(harness.sessions, "Short", "Long")
    wf = harness.publish(
        doc(
            [
                {
                    "id": "ab",
                    "type": "split",
                    "paths": [
                        {"name": "short", "weight": 1, "next": "mail_a"},
                        {"name": "long", "weight": 1, "next": "mail_b"},
                    ],
                },
                {"id": "mail_a", "type": "send_email", "template_id": a_template, "next": None},
                {"id": "mail_b", "type": "send_email", "template_id": b_template, "next": None},
            ]
        )
    )
    harness.events(*({"name": "signed_up", "email": f"s{i}@example.com"} for i in range(30)))
    harness.tick()
    with harness.sessions() as s:
        messages = list(s.scalars(select(Message)))
        for m in messages:
            m.status = MessageStatus.SENT
        by_node = {"mail_a": [], "mail_b": []}
        for m in messages:
            by_node[m.workflow_node_id].append(m)
        # Every "long" email opened by a person, every "short" one only by a scanner.
        events = [engage(s, m, "email.opened", machine=False) for m in by_node["mail_b"]]
        events += [engage(s, m, "email.opened", machine=True) for m in by_node["mail_a"]]
        events.append(engage(s, by_node["mail_b"][0], "email.clicked", machine=False, link=0))
        write_events(s, events)
        s.commit()
        report = split_report(s, wf, "ab")
        with pytest.raises(NotFound):
            split_report(s, wf, "mail_a")  # not a split node
    n_a, n_b = len(by_node["mail_a"]), len(by_node["mail_b"])
    assert n_a + n_b == 30 and n_a and n_b
    paths = {p["path"]: p for p in report["paths"]}
    assert paths["short"]["contacts"] == paths["short"]["sent"] == n_a
    assert paths["short"]["human_unique_opens"] == 0
    assert paths["long"]["human_unique_opens"] == n_b
    assert paths["long"]["human_unique_clicks"] == 1
    opens = report["tests"]["open_rate"]
    assert opens["leader"] == "long"
    _, p = two_proportion_p_value(n_b, n_b, 0, n_a)
    assert opens["p_value"] == pytest.approx(p) and opens["significant"] is True

    body = api.get(f"/workflows/{wf}/splits/ab").json
    assert body["paths"][1]["human_unique_opens"] == n_b
    assert api.get(f"/workflows/{wf}/splits/nope").status_code == 404
    with app.extensions["nurture"].sessions() as s:
        create_user(s, "v@example.com", "correct horse battery", role=Role.VIEWER)
        s.commit()
    login(client, "v@example.com", "correct horse battery")
    page = client.get(f"/workflows/{wf}/splits/ab").get_data(as_text=True)
    assert 'id="split-table"' in page and "Leader: <strong>long</strong>" in page
    assert client.get(f"/workflows/{wf}/splits/nope").status_code == 404
