"""Public tracking endpoints, the hit queue and batch ingestion with engagement write-back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from emailkit import make_contact, make_identity, make_template, mark_sent
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from automation import clock
from automation.contacts.models import ConsentRecord, Contact, ContactStatus, Event
from automation.email.models import Message, MessageStatus, TemplateVersion
from automation.email.outbox import queue_message
from automation.signing import TokenKind, TokenSigner
from automation.tracking.classify import HitClass
from automation.tracking.hits import Hit, decode_all
from automation.tracking.ingest import ingest_hits
from automation.tracking.service import drain_hits

HUMAN_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Thunderbird"


def sent_message(app: Any, email: str = "zoe@example.com", minutes_ago: int = 30) -> dict[str, Any]:
    with app.extensions["nurture"].sessions() as s:
        make_identity(s)
        make_template(s)
        contact_id = make_contact(s, email)
        version_id = s.scalar(select(TemplateVersion.id).order_by(TemplateVersion.id.desc()))
        message_id = queue_message(
            s,
            dedupe_key=f"test:{email}",
            contact_id=contact_id,
            template_version_id=version_id,
            workflow_id=77,
            workflow_node_id="mail",
        )
        nonce = mark_sent(s, message_id, timedelta(minutes=minutes_ago))
        s.commit()
    signer = TokenSigner.from_settings(app.extensions["nurture"].settings)
    tokens = signer.for_message(message_id, nonce, version_id)
    return {
        "id": message_id,
        "contact_id": contact_id,
        "tokens": tokens,
        "version_id": version_id,
        "nonce": nonce & 0xFFFFFFFF,
    }


def queue_of(app: Any) -> Any:
    from web.public.state import tracking

    with app.app_context():
        queue = tracking().queue
    return queue


def drain(app: Any) -> Any:
    runtime = app.extensions["nurture"]
    return drain_hits(runtime.sessions, queue_of(app))


def test_open_pixel_answers_a_gif_for_any_token_and_queues_only_valid_ones(app, client):
    msg = sent_message(app)
    good = client.get(
        "/t/o/" + msg["tokens"].token(TokenKind.OPEN), headers={"User-Agent": HUMAN_UA}
    )
    bad = client.get("/t/o/not-a-token")
    for response in (good, bad):
        assert response.status_code == 200
        assert response.mimetype == "image/gif"
        assert response.headers["Cache-Control"].startswith("no-store")
    lines, _ = queue_of(app).take(100)
    hits = decode_all(lines)
    assert [h.message_id for h in hits] == [msg["id"]]
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(Event.id)) is None  # nothing written on the hot path


def test_click_redirects_to_the_compiled_destination_and_ingestion_records_it(app, client):
    msg = sent_message(app)
    token = msg["tokens"].token(TokenKind.CLICK, 0)
    response = client.get(
        "/t/c/" + token + "?url=https://evil.example", headers={"User-Agent": HUMAN_UA}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "https://shop.example/start?utm=1&x=2"
    client.get("/t/o/" + msg["tokens"].token(TokenKind.OPEN), headers={"User-Agent": HUMAN_UA})
    report = drain(app)
    assert (report.stored, report.human, report.machine) == (2, 2, 0)
    with app.extensions["nurture"].sessions() as s:
        events = {e.name: e for e in s.scalars(select(Event))}
        clicked = events["email.clicked"].properties
        assert clicked["message_id"] == msg["id"]
        assert clicked["url"] == "https://shop.example/start?utm=1&x=2"
        assert clicked["link_index"] == 0
        assert clicked["machine"] is False and clicked["classification"] == "human"
        assert "template_id" in clicked and clicked["template_version_id"] == msg["version_id"]
        assert (clicked["workflow_id"], clicked["workflow_node_id"]) == (77, "mail")
        message = s.get(Message, msg["id"])
        assert (message.opens, message.clicks) == (1, 1)
        assert message.first_open_at is not None and message.first_click_at is not None
        contact = s.get(Contact, msg["contact_id"])
        assert (contact.opens, contact.clicks) == (1, 1)
        assert contact.last_click_at is not None and contact.engagement_score == 4.0


def test_replayed_hits_and_a_flood_do_not_inflate_counts(app, client):
    msg = sent_message(app)
    for _ in range(30):
        client.get("/t/o/" + msg["tokens"].token(TokenKind.OPEN), headers={"User-Agent": HUMAN_UA})
    queue = queue_of(app)
    lines, receipt = queue.take(1000)
    hits = decode_all(lines)
    runtime = app.extensions["nurture"]
    for _ in range(2):  # the same batch twice: a crash before the ack replays it
        with runtime.sessions() as s:
            ingest_hits(s, hits)
            s.commit()
    queue.ack(receipt)
    with runtime.sessions() as s:
        message = s.get(Message, msg["id"])
        contact = s.get(Contact, msg["contact_id"])
        assert message.opens == 30  # total human opens
        assert contact.opens == 1  # messages opened: unique
        assert contact.engagement_score == 1.0
        assert len(s.scalars(select(Event.id)).all()) == 30


def test_a_batch_larger_than_one_statement_counts_each_hit_once(app):
    """Hits of one message spread over the statements of one batch, then replayed whole."""
    from automation.tracking import ingest

    msg = sent_message(app)
    at = clock.now().timestamp()
    count = ingest.STATEMENT_ROWS * 2 + 7
    hits = [
        Hit(
            id=f"{i:016x}",
            kind="click" if i % 5 == 0 else "open",
            message_id=msg["id"],
            nonce=msg["nonce"],
            template_version_id=msg["version_id"],
            link_index=0 if i % 5 == 0 else None,
            at=at + i / 1000,
            ip="10.0.0.1",
            user_agent=HUMAN_UA,
        )
        for i in range(count)
    ]
    runtime = app.extensions["nurture"]
    for expected in (count, 0):  # the same batch twice: a crash before the ack replays it
        with runtime.sessions() as s:
            report = ingest_hits(s, hits)
            s.commit()
        assert (report.stored, report.duplicates, report.human) == (
            expected,
            count - expected,
            expected,
        )
    with runtime.sessions() as s:
        assert len(s.scalars(select(Event.id)).all()) == count
        message = s.get(Message, msg["id"])
        assert (message.opens, message.clicks) == (count - len(hits[::5]), len(hits[::5]))
        assert message.first_open_at == datetime.fromtimestamp(hits[1].at, UTC)
        assert message.last_open_at == datetime.fromtimestamp(hits[-1].at, UTC)
        contact = s.get(Contact, msg["contact_id"])
        assert (contact.opens, contact.clicks) == (1, 1)  # messages, not hits
        # 1 + 3; a later statement of the batch finds it seconds old, so decayed a little
        assert contact.engagement_score == pytest.approx(4.0, abs=1e-5)


def test_machine_hits_are_stored_as_machine_and_move_no_engagement(app, client):
    msg = sent_message(app)
    open_url = "/t/o/" + msg["tokens"].token(TokenKind.OPEN)
    client.get(open_url, headers={"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"})
    client.get(
        open_url, environ_base={"REMOTE_ADDR": "17.58.1.2"}, headers={"User-Agent": "Mozilla/5.0"}
    )
    for i in range(2):  # every link of the message in a second: a security gateway
        client.get(
            "/t/c/" + msg["tokens"].token(TokenKind.CLICK, i), headers={"User-Agent": HUMAN_UA}
        )
    client.head("/t/c/" + msg["tokens"].token(TokenKind.CLICK, 0), headers={"User-Agent": HUMAN_UA})
    report = drain(app)
    assert report.human == 0 and report.machine == 5
    with app.extensions["nurture"].sessions() as s:
        classes = sorted(e.properties["classification"] for e in s.scalars(select(Event)))
        assert classes.count(HitClass.SCANNER) == 3
        assert HitClass.IMAGE_PROXY in classes and HitClass.APPLE_MPP in classes
        assert all(e.properties["reasons"] for e in s.scalars(select(Event)))
        contact = s.get(Contact, msg["contact_id"])
        assert (contact.opens, contact.clicks, contact.engagement_score) == (0, 0, 0.0)
        assert s.get(Message, msg["id"]).opens == 0


def test_an_open_seconds_after_delivery_is_a_prefetch(app, client):
    msg = sent_message(app, minutes_ago=0)
    client.get("/t/o/" + msg["tokens"].token(TokenKind.OPEN), headers={"User-Agent": HUMAN_UA})
    drain(app)
    with app.extensions["nurture"].sessions() as s:
        event = s.scalars(select(Event)).one()
        assert event.properties["classification"] == "prefetch"
        assert "after delivery" in event.properties["reasons"][0]


def test_script_in_user_agent_is_stored_as_data(app, client):
    msg = sent_message(app)
    ua = "<script>alert(1)</script> Mozilla/5.0"
    client.get(
        "/t/o/" + msg["tokens"].token(TokenKind.OPEN),
        headers={"User-Agent": ua, "Referer": "<img onerror=x>"},
    )
    drain(app)
    with app.extensions["nurture"].sessions() as s:
        assert s.scalars(select(Event)).one().properties["user_agent"] == ua


def test_script_in_the_referer_is_stored_as_data_and_shown_escaped(app, client, user_factory):
    from conftest import login

    msg = sent_message(app)
    referer = "https://mail.example/inbox?q=<script>alert(1)</script>"
    client.get(
        "/t/o/" + msg["tokens"].token(TokenKind.OPEN),
        headers={"User-Agent": HUMAN_UA, "Referer": referer},
    )
    response = client.get(
        "/t/c/" + msg["tokens"].token(TokenKind.CLICK, 0),
        headers={"User-Agent": HUMAN_UA, "Referer": referer + "x" * 2000},
    )
    assert response.status_code == 302
    client.get("/t/o/" + msg["tokens"].token(TokenKind.OPEN), headers={"User-Agent": HUMAN_UA})
    drain(app)
    with app.extensions["nurture"].sessions() as s:
        events = s.scalars(select(Event).order_by(Event.occurred_at, Event.id)).all()
    referers = [e.properties.get("referer") for e in events]
    assert referers == [referer, (referer + "x" * 2000)[:512], None]  # bounded; none sent
    user_factory("viewer@example.com", "correct horse battery", "viewer")
    assert login(client, "viewer@example.com", "correct horse battery").status_code == 302
    page = client.get(f"/contacts/{msg['contact_id']}").get_data(as_text=True)
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page  # there, as inert, readable text


def test_a_queued_hit_line_of_the_released_format_still_decodes_with_its_referer(app):
    """Lines a previous version wrote may wait in a queue across a deploy: the positional
    format (referer 11th, prefetch 12th) must keep decoding, and its referer be stored."""
    msg = sent_message(app)
    line = (
        f'["0123456789abcdef","open",{msg["id"]},{msg["nonce"]},{msg["version_id"]},null,'
        f'{clock.now().timestamp()!r},"10.0.0.1","{HUMAN_UA}",false,'
        '"https://mail.example/inbox",false]'
    ).encode()
    (hit,) = decode_all([line])
    assert (hit.referer, hit.prefetch, hit.head) == ("https://mail.example/inbox", False, False)
    assert Hit.decode(hit.encode()) == hit  # written back the same way
    queue_of(app).push_line(line)
    assert drain(app).human == 1
    with app.extensions["nurture"].sessions() as s:
        assert s.scalars(select(Event)).one().properties["referer"] == "https://mail.example/inbox"


def test_click_on_a_link_index_the_version_does_not_have_gets_404(app, client):
    msg = sent_message(app)
    response = client.get("/t/c/" + msg["tokens"].token(TokenKind.CLICK, 99))
    assert response.status_code == 404 and "Location" not in response.headers


def test_any_mutation_of_a_click_token_gets_404_and_no_redirect(app, client):
    """The token is a real sent message's: verification, not a missing message, must be
    what turns each mutation away."""
    msg = sent_message(app)
    token = msg["tokens"].token(TokenKind.CLICK, 0)
    destination = "https://shop.example/start?utm=1&x=2"
    for url in ("/t/c/" + token, "/t/c/" + token + "?url=https://evil.example"):
        response = client.get(url, headers={"User-Agent": HUMAN_UA})
        assert (response.status_code, response.headers["Location"]) == (302, destination)

    @settings(max_examples=60, deadline=None)
    @given(data=st.data())
    def mutated_gets_404(data: st.DataObject) -> None:
        mutate = data.draw(st.sampled_from(["flip", "truncate", "append", "prefix"]))
        if mutate == "flip":
            i = data.draw(st.integers(0, len(token) - 1))
            c = data.draw(st.sampled_from("AZaz09-_\\/%."))
            bad = token[:i] + c + token[i + 1 :]
        elif mutate == "truncate":
            bad = token[: data.draw(st.integers(0, len(token) - 1))]
        else:
            extra = data.draw(
                st.sampled_from(
                    ["A", "//evil.example", "%2F%2Fevil.example", "\\\\evil.example", "/..", "%00"]
                )
            )
            bad = token + extra if mutate == "append" else extra + token
        if bad == token:
            return
        response = client.get("/t/c/" + bad, headers={"User-Agent": HUMAN_UA})
        assert response.status_code == 404, bad
        assert "Location" not in response.headers

    mutated_gets_404()


def test_unsubscribe_get_changes_nothing_and_post_unsubscribes_with_evidence(app, client):
    msg = sent_message(app)
    url = "/u/" + msg["tokens"].token(TokenKind.UNSUBSCRIBE)
    page = client.get(url)
    assert page.status_code == 200 and "z…@example.com" in page.get_data(as_text=True)
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, msg["contact_id"]).status is ContactStatus.SUBSCRIBED
    done = client.post(url, data={"do": "unsubscribe"})
    assert done.status_code == 200
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, msg["contact_id"]).status is ContactStatus.UNSUBSCRIBED
        record = s.scalars(
            select(ConsentRecord).where(ConsentRecord.status_to == "unsubscribed")
        ).one()
        assert record.source == "unsubscribe_page"
        assert s.scalars(select(Event.name)).all() == ["email.unsubscribed"]
        assert s.get(Message, msg["id"]).unsubscribed_at is not None


def test_rfc8058_one_click_post_unsubscribes_without_cookie_or_csrf(app):
    msg = sent_message(app)
    client = app.test_client()
    url = "/u/" + msg["tokens"].token(TokenKind.UNSUBSCRIBE)
    response = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, msg["contact_id"]).status is ContactStatus.UNSUBSCRIBED
        assert len(s.scalars(select(Event.id)).all()) == 1


def test_preferences_page_resubscribes(app, client):
    msg = sent_message(app)
    client.post("/u/" + msg["tokens"].token(TokenKind.UNSUBSCRIBE), data={"do": "unsubscribe"})
    url = "/p/" + msg["tokens"].token(TokenKind.PREFERENCES)
    assert "unsubscribed" in client.get(url).get_data(as_text=True)
    client.post(url, data={"do": "resubscribe"})
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Contact, msg["contact_id"]).status is ContactStatus.SUBSCRIBED


def test_view_in_browser_renders_the_message_with_tracked_links(app, client):
    msg = sent_message(app)
    page = client.get("/v/" + msg["tokens"].token(TokenKind.VIEW))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/t/c/" in html and "/t/o/" not in html
    assert client.get("/v/" + "A" * 48).status_code == 404


def test_bad_tokens_on_pages_get_404(client):
    for path in ("/u/x", "/p/x", "/v/x"):
        assert client.get(path).status_code == 404
    assert client.post("/u/" + "A" * 48, data={"List-Unsubscribe": "One-Click"}).status_code == 404


def test_a_hit_line_is_what_json_dumps_writes():
    import json

    odd = 'é"\\\n\t\x00\u2028\U0001f600</script>'
    for hit in (
        Hit("abc", "open", 1, 2, 3, None, 1.0, "127.0.0.1", "ua"),
        Hit(
            odd,
            "click",
            2**55,
            2**32 - 1,
            7,
            2**23,
            1764300000.123456,
            odd,
            odd * 200,
            True,
            odd * 200,
            True,
        ),
    ):
        fields = [*hit[:8], hit.user_agent[:512], hit.head, hit.referer[:512], hit.prefetch]
        assert hit.encode() == json.dumps(fields, separators=(",", ":")).encode()
        assert Hit.decode(hit.encode()) == hit._replace(
            user_agent=hit.user_agent[:512], referer=hit.referer[:512]
        )


def test_hit_lines_that_are_torn_are_skipped():
    hit = Hit("abc", "open", 1, 2, 3, None, 1.0, "127.0.0.1", "ua")
    assert decode_all([hit.encode(), b'["abc", "op', b"garbage"]) == [hit]
    # Lines that are JSON but no hit, and a torn line that would swallow the next one
    # into a valid document: each good line still comes out once.
    other = hit._replace(id="def")
    assert decode_all([b"[1, 2]", hit.encode(), b'{"a": 1}', other.encode()]) == [hit, other]
    assert decode_all([hit.encode(), b'["x", "open", ' + other.encode()[:-1], b"]"]) == [hit]


def test_sunset_marks_contacts_without_human_engagement_and_engaging_clears_it(app, client):
    from automation.tracking.sunset import apply_sunset

    msg = sent_message(app)
    runtime = app.extensions["nurture"]
    with runtime.sessions() as s:
        assert apply_sunset(s, max_sends=1, max_days=0) == 1
        s.commit()
        assert s.get(Contact, msg["contact_id"]).inactive_since is not None
        assert apply_sunset(s, max_sends=1, max_days=0) == 0  # already marked
    client.get("/t/o/" + msg["tokens"].token(TokenKind.OPEN), headers={"User-Agent": HUMAN_UA})
    drain(app)
    with runtime.sessions() as s:
        assert s.get(Contact, msg["contact_id"]).inactive_since is None
        assert apply_sunset(s, max_sends=1, max_days=0) == 0  # engaged after its last send


def test_an_inactive_contact_gets_no_marketing_email(app):
    from automation.email.outbox import claim_batch
    from automation.email.render import VersionCache

    runtime = app.extensions["nurture"]
    msg = sent_message(app)
    with runtime.sessions() as s:
        s.execute(update(Contact).values(inactive_since=clock.now()))
        queue_message(
            s,
            dedupe_key="second",
            contact_id=msg["contact_id"],
            template_version_id=msg["version_id"],
        )
        s.commit()
        batch = claim_batch(s, settings=runtime.settings, cache=VersionCache())
        assert batch.held["inactive"] == 1 or sum(batch.held.values()) == 1
        s.commit()
        reasons = s.scalars(select(Message.reason).where(Message.dedupe_key == "second")).all()
        assert reasons == ["inactive"]


def test_the_drain_turns_garbage_collection_back_on_even_when_a_batch_fails(app):
    import gc

    from automation.tracking.draining import drain_in_batches

    queue = queue_of(app)
    queue.push_line(b"one")
    seen = []

    def failing(session: Any, lines: list[bytes]) -> None:
        seen.append(gc.isenabled())
        raise RuntimeError("the database went away")

    runtime = app.extensions["nurture"]
    with pytest.raises(RuntimeError):
        drain_in_batches(
            runtime.sessions, queue, failing, lease="test.drain", batch_size=10, max_batches=1
        )
    assert seen == [False] and gc.isenabled()
    assert queue.depth() == 1  # not acknowledged: the next drain replays it


def _hit(msg: dict[str, Any], hit_id: str, kind: str, at: datetime, **extra: Any) -> Hit:
    return Hit(
        id=hit_id,
        kind=kind,
        message_id=msg["id"],
        nonce=msg["nonce"],
        template_version_id=msg["version_id"],
        link_index=0 if kind == "click" else None,
        at=at.timestamp(),
        ip="10.0.0.1",
        user_agent=extra.pop("user_agent", HUMAN_UA),
        **extra,
    )


def _another_message(
    app: Any, msg: dict[str, Any], key: str, email: str | None = None
) -> dict[str, Any]:
    """Another sent message of ``msg``'s template: to the same contact, or to a new one at
    ``email``."""
    with app.extensions["nurture"].sessions() as s:
        contact_id = make_contact(s, email) if email else msg["contact_id"]
        message_id = queue_message(
            s, dedupe_key=key, contact_id=contact_id, template_version_id=msg["version_id"]
        )
        nonce = mark_sent(s, message_id, timedelta(hours=1))
        s.commit()
    return {**msg, "id": message_id, "contact_id": contact_id, "nonce": nonce & 0xFFFFFFFF}


def test_engagement_score_halves_every_half_life_between_engagements(app):
    """1 per message opened, 3 per message clicked, the score halving every half-life
    (7 days here) from the contact's last engagement to the new one."""
    first = sent_message(app)
    second = _another_message(app, first, "test:second")
    start = clock.now()
    runtime = app.extensions["nurture"]

    def ingest(*hits: Hit) -> float:
        with runtime.sessions() as s:
            ingest_hits(s, list(hits), half_life_days=7)
            s.commit()
            return s.get(Contact, first["contact_id"]).engagement_score

    assert ingest(_hit(first, "a", "open", start)) == 1.0
    # One half-life later, a click on the same message: 0.5 * 1 + 3.
    assert ingest(_hit(first, "b", "click", start + timedelta(days=7))) == pytest.approx(3.5)
    # Two half-lives after that, the other message is opened: 0.25 * 3.5 + 1.
    third = start + timedelta(days=21)
    assert ingest(_hit(second, "c", "open", third)) == pytest.approx(1.875)
    # Opening an already opened message adds nothing, but the score is brought up to date.
    assert ingest(_hit(second, "d", "open", third + timedelta(days=7))) == pytest.approx(0.9375)
    with runtime.sessions() as s:
        contact = s.get(Contact, first["contact_id"])
        assert (contact.opens, contact.clicks) == (2, 1)  # messages opened, clicked
        assert contact.last_open_at == third + timedelta(days=7)
        assert contact.last_click_at == start + timedelta(days=7)


# The same hits, batch by batch, for the comparison of the two write-back paths: (hit id,
# contact, message, kind, link, hours after the start, user agent). Repeats, a click
# before any open, a machine open, an older hit arriving in a later batch, several
# contacts and messages in one batch.
_PROXY_UA = "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"
_BATCHES: list[list[tuple[str, str, str, str, int | None, float, str]]] = [
    [
        ("h1", "ana", "1", "open", None, 1, HUMAN_UA),
        ("h2", "ana", "1", "open", None, 1.5, HUMAN_UA),
        ("h3", "ben", "1", "open", None, 2, _PROXY_UA),
        ("h4", "cy", "1", "click", 0, 3, HUMAN_UA),
    ],
    [
        ("h5", "ana", "1", "click", 1, 72, HUMAN_UA),
        ("h6", "ana", "2", "open", None, 80, HUMAN_UA),
        ("h7", "ben", "1", "open", None, 50, HUMAN_UA),
        ("h8", "ben", "2", "click", 0, 49, HUMAN_UA),
    ],
    [
        ("h9", "ana", "1", "open", None, 240, HUMAN_UA),
        ("h10", "cy", "1", "open", None, 2, HUMAN_UA),  # older than cy's last engagement
        ("h11", "cy", "2", "click", 1, 250, HUMAN_UA),
        ("h12", "ben", "1", "open", None, 300, _PROXY_UA),
    ],
]


def _engagement_on(url: str, tmp_path: Any) -> dict[str, Any]:
    """Run ``_BATCHES`` (the second one twice, as a replay) on the database at ``url``;
    what it left on contacts and messages, by email and message name."""
    from conftest import make_settings

    from automation.runtime import build_runtime, use_runtime

    runtime = build_runtime(make_settings(tmp_path, url))
    use_runtime(runtime)
    try:
        start = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # sent then; both runs alike
        messages: dict[tuple[str, str], tuple[int, int, int]] = {}
        with runtime.sessions() as s:
            make_identity(s)
            version_id = make_template(s).version.id
            for name in ("ana", "ben", "cy"):
                contact_id = make_contact(s, f"{name}@example.com")
                for number in ("1", "2"):
                    message_id = queue_message(
                        s,
                        dedupe_key=f"{name}:{number}",
                        contact_id=contact_id,
                        template_version_id=version_id,
                    )
                    messages[name, number] = (message_id, contact_id, version_id)
            s.execute(update(Message).values(status=MessageStatus.SENT, sent_at=start))
            nonces = {i: n for i, n in s.execute(select(Message.id, Message.token_nonce))}
            s.commit()
        for batch in [*_BATCHES[:2], _BATCHES[1], _BATCHES[2]]:
            hits = []
            for hit_id, name, number, kind, link, hours, ua in batch:
                message_id, _, version_id = messages[name, number]
                hits.append(
                    Hit(
                        hit_id,
                        kind,
                        message_id,
                        nonces[message_id] & 0xFFFFFFFF,
                        version_id,
                        link,
                        (start + timedelta(hours=hours)).timestamp(),
                        "10.0.0.1",
                        ua,
                    )
                )
            with runtime.sessions() as s:
                ingest_hits(s, hits, half_life_days=2)
                s.commit()
        with runtime.sessions() as s:
            contacts = {
                c.email: (c.opens, c.clicks, c.last_open_at, c.last_click_at, c.engagement_score)
                for c in s.scalars(select(Contact))
            }
            message_rows = {
                m.dedupe_key: (
                    m.opens,
                    m.clicks,
                    m.first_open_at,
                    m.last_open_at,
                    m.first_click_at,
                    m.last_click_at,
                )
                for m in s.scalars(select(Message))
            }
            events = sorted(
                (e.idempotency_key, e.properties["machine"]) for e in s.scalars(select(Event))
            )
        return {"contacts": contacts, "messages": message_rows, "events": events}
    finally:
        use_runtime(None)
        runtime.engine.dispose()


def test_postgresql_and_sqlite_write_back_the_same_engagement(sqlite_url, postgres_url, tmp_path):
    """``_PG_STORE`` (one statement on PostgreSQL) and ``_write_back`` (the portable path)
    must agree on every counter, time and score."""
    on_sqlite = _engagement_on(sqlite_url, tmp_path / "sqlite")
    on_postgres = _engagement_on(postgres_url, tmp_path / "postgres")
    # 12 hits, and the opens that three human clicks on unopened messages prove (h4, h8,
    # h11; Ana's h5 clicks a message she had opened).
    assert on_postgres["events"] == on_sqlite["events"] and len(on_sqlite["events"]) == 15
    assert [key for key, _ in on_sqlite["events"] if key.endswith(":open")] == [
        "hit:h11:open",
        "hit:h4:open",
        "hit:h8:open",
    ]
    assert on_postgres["messages"] == on_sqlite["messages"]
    scores = {}
    for email, (*counts, score) in on_sqlite["contacts"].items():
        *pg_counts, pg_score = on_postgres["contacts"][email]
        assert pg_counts == counts, email
        assert pg_score == pytest.approx(score, abs=1e-6), email
        scores[email] = score
    # Ben: a machine open, then (batch 2, at 49 h and 50 h) a click on message 2 (which
    # proves its open) and an open of message 1: 3 + 1 + 1; the proxy's open later moves
    # nothing.
    assert scores["ben@example.com"] == pytest.approx(5.0)
    # Cy: a click at 3 h (3 + the open it proves); in the last batch an open of message 1
    # (already opened: nothing) and a click on message 2 at 250 h: decayed from 3 h to
    # 250 h, then + 1 + 3.
    assert scores["cy@example.com"] == pytest.approx(4 * 0.5 ** (247 / 48) + 4)


def test_sunset_after_n_days_marks_only_contacts_without_human_engagement_since(app):
    """N = 30 days of marketing mail without a human open or click. Silence is counted from
    the first email that reached the contact: someone on the list for a year who got
    their first email yesterday has not had 30 days to open it."""
    from automation.tracking.sunset import apply_sunset

    runtime = app.extensions["nurture"]
    now = clock.now()
    day = timedelta(days=1)
    # name: (created, first email sent, human engagement)
    people = {
        "silent": (100, 60, None),  # mailed for two months, never engaged
        "machine_only": (100, 60, None),  # only an image proxy "opened" (a machine event)
        "opened_lately": (100, 60, 10),
        "clicked_lately": (100, 60, 29),
        "opened_long_ago": (100, 60, 45),
        "newcomer": (7, 6, None),  # joined last week
        "first_mailed_yesterday": (365, 1, None),  # an old import's first campaign
        "unsubscribed": (100, 60, None),
    }
    first = sent_message(app, "silent@example.com")
    msgs = {
        name: first
        if name == "silent"
        else _another_message(app, first, name, f"{name}@example.com")
        for name in people
    }
    with runtime.sessions() as s:
        make_contact(s, "never_mailed@example.com")
        s.execute(update(Contact).values(created_at=now - 100 * day))
        for name, (created, sent, _) in people.items():
            s.execute(
                update(Contact)
                .where(Contact.id == msgs[name]["contact_id"])
                .values(created_at=now - created * day, emails_sent=1)
            )
            s.execute(
                update(Message)
                .where(Message.id == msgs[name]["id"])
                .values(sent_at=now - sent * day)
            )
        s.execute(
            update(Contact)
            .where(Contact.email == "unsubscribed@example.com")
            .values(status=ContactStatus.UNSUBSCRIBED)
        )
        s.commit()
    hits = [
        _hit(msgs[name], name, "click" if name == "clicked_lately" else "open", now - ago * day)
        for name, (_, _, ago) in people.items()
        if ago is not None
    ]
    hits.append(_hit(msgs["machine_only"], "proxy", "open", now, user_agent=_PROXY_UA))
    with runtime.sessions() as s:
        ingest_hits(s, hits)
        s.commit()

    def sunset(at: datetime) -> set[str]:
        with runtime.sessions() as s:
            apply_sunset(s, max_sends=0, max_days=30, now=at)
            s.commit()
            marked = select(Contact.email).where(Contact.inactive_since == at)
            return {email.split("@")[0] for email in s.scalars(marked)}

    assert sunset(now) == {"silent", "machine_only", "opened_long_ago"}
    assert sunset(now + timedelta(minutes=1)) == set()  # marked once
    # 24 days on: the two who engaged lately and the newcomer are past 30 days too.
    assert sunset(now + 24 * day) == {"opened_lately", "clicked_lately", "newcomer"}
    assert sunset(now + 28 * day) == set()
    assert sunset(now + 31 * day) == {"first_mailed_yesterday"}
    with runtime.sessions() as s:  # never mailed, or not subscribed: never sunset
        kept = select(Contact.email).where(Contact.inactive_since.is_(None))
        assert set(s.scalars(kept)) == {"never_mailed@example.com", "unsubscribed@example.com"}
