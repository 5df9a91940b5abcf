"""Each kind of condition, on SQLite and PostgreSQL: the SQL compiler, the Python evaluator
and the expected answer agree. The clock is frozen at 2026-03-01 23:30 UTC, when it is
already 2 March in Paris and Tokyo but still 1 March in New York and UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from automation import clock
from automation.contacts import tags as tag_ops
from automation.contacts.models import Contact, CustomField, Event, FieldType
from automation.segments.compiler import condition, matching_ids
from automation.segments.evaluator import contact_matches
from automation.segments.models import Segment, SegmentKind, SegmentMembership

NOW = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


@pytest.fixture
def frozen():
    clock.set_source(lambda: NOW)
    yield NOW
    clock.set_source(None)


def ago(**kw: Any) -> datetime:
    return NOW - timedelta(**kw)


PEOPLE = {
    "ana": dict(
        first_name="Ana",
        time_zone="Europe/Paris",
        score=80,
        engagement_score=2.5,
        lifecycle_stage="lead",
        created_at=ago(days=5),
        last_click_at=ago(days=2),
        attributes={"plan": "pro", "birthday": "1990-03-02", "ltv": 250, "company": "Acme"},
    ),
    "ben": dict(
        first_name="Ben",
        time_zone="America/New_York",
        score=20,
        created_at=ago(days=40),
        attributes={"plan": "free", "birthday": "1985-03-02", "ltv": 12.5, "vip": True},
    ),
    "chloe": dict(
        first_name="Chloé",
        time_zone="Asia/Tokyo",
        score=55,
        lifecycle_stage="customer",
        created_at=ago(days=90),
        attributes={
            "plan": "pro",
            "birthday": "2000-03-01",
            "company": "100%_Off /Deals",
            "renewal": "2026-03-09",
        },
    ),
    "dan": dict(
        first_name="",
        time_zone="UTC",
        score=0,
        status="unsubscribed",
        created_at=ago(days=1),
        # wrongly typed values (a field re-declared with another type) read as missing
        attributes={"plan": 5, "ltv": "lots", "birthday": "1970-03-01", "vip": "yes"},
    ),
    "eve": dict(
        first_name="Robert'); DROP TABLE contacts;--",
        time_zone="Australia/Adelaide",
        score=-3,
        created_at=ago(days=400),
        attributes={"company": ".*", "renewal": "2026-02-20"},
    ),
}


@pytest.fixture
def world(session, frozen):
    for name, kind, options in [
        ("plan", FieldType.CHOICE, ["free", "pro", "team"]),
        ("birthday", FieldType.DATE, []),
        ("renewal", FieldType.DATE, []),
        ("ltv", FieldType.NUMBER, []),
        ("vip", FieldType.BOOLEAN, []),
        ("company", FieldType.TEXT, []),
    ]:
        session.add(CustomField(name=name, label=name, type=kind, options=options, created_at=NOW))
    ids = {}
    for name, fields in PEOPLE.items():
        contact = Contact(
            email=f"{name}@example.com",
            last_name="",
            updated_at=NOW,
            **{"status": "subscribed", "lifecycle_stage": "subscriber", **fields},
        )
        session.add(contact)
        session.flush()
        ids[name] = contact.id
    tag_ops.add_tags(session, [ids["ana"], ids["ben"]], ["vip"])
    tag_ops.add_tags(session, [ids["ben"], ids["chloe"]], ["beta"])

    def event(who: str, name: str, at: datetime, **props: Any) -> dict[str, Any]:
        return {
            "contact_id": ids[who],
            "name": name,
            "properties": props,
            "occurred_at": at,
            "received_at": NOW,
            "source": "test",
        }

    session.execute(
        insert(Event),
        [
            event("ana", "email.sent", ago(days=3), template_id=7, campaign_id=1),
            event("ana", "email.clicked", ago(days=2), template_id=7, campaign_id=1),
            # What tracking records with a person's click on an email never opened before.
            event("ana", "email.opened", ago(days=2), template_id=7, campaign_id=1, proof="click"),
            event("ana", "order_completed", ago(days=10), total=120, sku="A%1"),
            event("ben", "email.sent", ago(days=1), template_id=8, workflow_id=4),
            event("ben", "email.opened", ago(hours=20), template_id=8, machine=True),
            event("chloe", "email.sent", ago(days=3), template_id=7),
            event("chloe", "order_completed", ago(days=1), total=10, items={"sku": "B"}),
            event("chloe", "order_completed", ago(days=20), total=20),
            event("chloe", "order_completed", ago(days=60), total="30"),
            event("eve", "email.sent", ago(days=45), template_id=7),
            event("eve", "email.opened", ago(days=44), template_id=7),
        ],
    )
    static = Segment(
        id=500,
        name="Imported list",
        kind=SegmentKind.STATIC,
        definition=None,
        refreshed_at=NOW,
        created_at=NOW,
        updated_at=NOW,
    )
    dynamic = Segment(
        id=501,
        name="Pro plan",
        kind=SegmentKind.DYNAMIC,
        definition={
            "conditions": [{"field": "attributes.plan", "operator": "equals", "value": "pro"}]
        },
        created_at=NOW,
        updated_at=NOW,
    )
    session.add_all([static, dynamic])
    session.flush()
    session.add(SegmentMembership(segment_id=500, contact_id=ids["eve"], entered_at=NOW))
    session.flush()
    return ids


def field(name: str, operator: str, value: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = {"field": name, "operator": operator}
    if value is not None:
        node["value"] = value
    return node


CASES: list[tuple[str, Any, set[str]]] = [
    # text: equals is exact; contains / starts / ends fold A-Z only; wildcards are data
    ("text equals", field("first_name", "equals", "Ana"), {"ana"}),
    ("text equals is exact", field("first_name", "equals", "ana"), set()),
    ("text in", field("email", "in", ["ana@example.com", "dan@example.com"]), {"ana", "dan"}),
    ("contains folds ascii case", field("first_name", "contains", "N"), {"ana", "ben", "eve"}),
    ("non-ascii case is not folded", field("first_name", "contains", "É"), set()),
    ("starts with", field("first_name", "starts_with", "ch"), {"chloe"}),
    ("ends with", field("email", "ends_with", "E@EXAMPLE.COM"), {"chloe", "eve"}),
    ("percent and underscore are data", field("attributes.company", "contains", "%_"), {"chloe"}),
    ("slash is data", field("attributes.company", "contains", " /d"), {"chloe"}),
    ("regex is data", field("attributes.company", "equals", ".*"), {"eve"}),
    ("sql is data", field("first_name", "contains", "'); DROP TABLE"), {"eve"}),
    (
        "not contains includes empty",
        field("first_name", "not_contains", "a"),
        {"ben", "chloe", "dan"},
    ),
    ("empty text is not set", field("first_name", "is_not_set"), {"dan"}),
    # choice and the negations that include missing values
    ("choice equals", field("attributes.plan", "equals", "pro"), {"ana", "chloe"}),
    (
        "not equals includes missing",
        field("attributes.plan", "not_equals", "pro"),
        {"ben", "dan", "eve"},
    ),
    ("wrong type reads as missing", field("attributes.plan", "is_set"), {"ana", "ben", "chloe"}),
    ("status", field("status", "in", ["unsubscribed", "bounced"]), {"dan"}),
    ("lifecycle", field("lifecycle_stage", "equals", "customer"), {"chloe"}),
    # numbers
    ("number greater", field("score", "greater_than", 20), {"ana", "chloe"}),
    (
        "float against integer column",
        field("score", "greater_or_equal", 19.5),
        {"ana", "ben", "chloe"},
    ),
    ("number between inclusive", field("score", "between", [0, 20]), {"ben", "dan"}),
    ("float column in", field("engagement_score", "in", [-1, 2.5]), {"ana"}),
    ("float column against big int", field("engagement_score", "in", [4, 123456789012]), set()),
    (
        "int column against big int",
        field("score", "less_than", 123456789012),
        {"ana", "ben", "chloe", "dan", "eve"},
    ),
    ("attribute number", field("attributes.ltv", "less_than", 100), {"ben"}),
    ("attribute number in", field("attributes.ltv", "in", [12.5, 250]), {"ana", "ben"}),
    (
        "number not in includes missing",
        field("attributes.ltv", "not_in", [12.5]),
        {"ana", "chloe", "dan", "eve"},
    ),
    ("boolean", field("attributes.vip", "equals", True), {"ben"}),
    (
        "boolean wrong type is missing",
        field("attributes.vip", "is_not_set"),
        {"ana", "chloe", "dan", "eve"},
    ),
    # date-times
    ("created within", field("created_at", "within_last_days", 30), {"ana", "dan"}),
    ("created more than", field("created_at", "more_than_days_ago", 60), {"chloe", "eve"}),
    ("created before", field("created_at", "less_than", "2026-01-01"), {"chloe", "eve"}),
    (
        "created between",
        field("created_at", "between", ["2026-01-15T00:00:00Z", "2026-02-27T00:00:00+01:00"]),
        {"ana", "ben"},
    ),
    ("last click set", field("last_click_at", "is_set"), {"ana"}),
    ("last click within", field("last_click_at", "within_last_days", 7), {"ana"}),
    # calendar dates in the contact's zone
    (
        "birthday today in own zone",
        field("attributes.birthday", "anniversary_today"),
        {"ana", "dan"},
    ),
    ("renewal in next days", field("attributes.renewal", "in_next_days", 7), {"chloe"}),
    ("renewal within last days", field("attributes.renewal", "within_last_days", 10), {"eve"}),
    ("date equals", field("attributes.birthday", "equals", "2000-03-01"), {"chloe"}),
    ("date after", field("attributes.birthday", "greater_than", "1989-12-31"), {"ana", "chloe"}),
    # tags
    ("has any", {"tags": ["vip", "nope"]}, {"ana", "ben"}),
    ("has all", {"tags": ["vip", "beta"], "operator": "has_all"}, {"ben"}),
    ("has none", {"tags": ["vip", "beta"], "operator": "has_none"}, {"dan", "eve"}),
    (
        "has not all",
        {"tags": ["vip", "beta"], "operator": "has_not_all"},
        {"ana", "chloe", "dan", "eve"},
    ),
    # behaviour
    ("performed ever", {"event": "order_completed"}, {"ana", "chloe"}),
    ("performed within", {"event": "order_completed", "within_days": 7}, {"chloe"}),
    ("at least", {"event": "order_completed", "operator": "at_least", "times": 3}, {"chloe"}),
    (
        "at most includes never",
        {"event": "order_completed", "operator": "at_most", "times": 1},
        {"ana", "ben", "dan", "eve"},
    ),
    (
        "exactly",
        {"event": "order_completed", "operator": "exactly", "times": 2, "within_days": 30},
        {"chloe"},
    ),
    (
        "exactly zero",
        {"event": "order_completed", "operator": "exactly", "times": 0},
        {"ben", "dan", "eve"},
    ),
    (
        "not performed since",
        {"event": "order_completed", "operator": "not_performed", "since": "2026-02-25"},
        {"ana", "ben", "dan", "eve"},
    ),
    (
        "where number",
        {
            "event": "order_completed",
            "where": [{"property": "total", "operator": "greater_or_equal", "value": 20}],
        },
        {"ana", "chloe"},
    ),
    (
        "where string number is not a number",
        {
            "event": "order_completed",
            "where": [{"property": "total", "operator": "equals", "value": 30}],
        },
        set(),
    ),
    (
        "where text wildcard is data",
        {
            "event": "order_completed",
            "where": [{"property": "sku", "operator": "starts_with", "value": "a%"}],
        },
        {"ana"},
    ),
    (
        "where nested",
        {
            "event": "order_completed",
            "where": [{"property": "items.sku", "operator": "equals", "value": "B"}],
        },
        {"chloe"},
    ),
    (
        "where not set",
        {
            "event": "order_completed",
            "operator": "at_least",
            "times": 2,
            "where": [{"property": "sku", "operator": "is_not_set"}],
        },
        {"chloe"},
    ),
    (
        "last performed within",
        {"last_performed": "order_completed", "operator": "within_last_days", "value": 5},
        {"chloe"},
    ),
    (
        "last performed more than",
        {"last_performed": "order_completed", "operator": "more_than_days_ago", "value": 5},
        {"ana"},
    ),
    (
        "never performed",
        {"last_performed": "order_completed", "operator": "is_not_set"},
        {"ben", "dan", "eve"},
    ),
    # email engagement
    ("clicked any", {"email": "clicked", "within_days": 30}, {"ana"}),
    ("machine opens do not count", {"email": "opened"}, {"ana", "eve"}),
    (
        "machine opens when asked",
        {"email": "opened", "include_machine": True},
        {"ana", "ben", "eve"},
    ),
    # The same rule when a condition names the engagement event itself.
    ("machine opens as an event do not count", {"event": "email.opened"}, {"ana", "eve"}),
    (
        "machine opens as an event when asked",
        {"event": "email.opened", "include_machine": True},
        {"ana", "ben", "eve"},
    ),
    (
        "last human open",
        {"last_performed": "email.opened", "operator": "within_last_days", "value": 60},
        {"ana", "eve"},
    ),
    (
        "last open of any kind",
        {
            "last_performed": "email.opened",
            "operator": "within_last_days",
            "value": 60,
            "include_machine": True,
        },
        {"ana", "ben", "eve"},
    ),
    ("received template", {"email": "received", "template_id": 7}, {"ana", "chloe", "eve"}),
    ("received campaign", {"email": "received", "campaign_id": 1}, {"ana"}),
    ("received workflow", {"email": "received", "workflow_id": 4}, {"ben"}),
    (
        "received, neither opened nor clicked",
        {"email": "received_not_opened", "within_days": 30},
        {"ben", "chloe"},
    ),
    (
        "received count",
        {"email": "received", "operator": "at_least", "times": 1, "within_days": 30},
        {"ana", "ben", "chloe"},
    ),
    # segments and lists
    ("static list", {"segment": 500}, {"eve"}),
    ("dynamic segment inlined", {"segment": 501}, {"ana", "chloe"}),
    ("not in dynamic segment", {"not": {"segment": 501}}, {"ben", "dan", "eve"}),
    # groups
    ("any", {"any": [field("score", "less_than", 0), {"tags": ["beta"]}]}, {"ben", "chloe", "eve"}),
    ("all", {"all": [{"tags": ["vip"]}, field("attributes.plan", "equals", "pro")]}, {"ana"}),
    (
        "not of a nullable comparison",
        {"not": field("attributes.ltv", "greater_than", 100)},
        {"ben", "chloe", "dan", "eve"},
    ),
    ("double negation", {"not": {"not": {"tags": ["vip"]}}}, {"ana", "ben"}),
    ("not any", {"not": {"any": [{"tags": ["vip"]}, {"segment": 500}]}}, {"chloe", "dan"}),
]


@pytest.mark.parametrize("label,node,expected", CASES, ids=[c[0] for c in CASES])
def test_compiler_and_evaluator_agree_with_expected(session, world, label, node, expected):
    tree = {"conditions": [node]}
    names = {cid: name for name, cid in world.items()}
    by_sql = {names[i] for i in session.scalars(matching_ids(session, tree))}
    by_python = {name for name, cid in world.items() if contact_matches(session, tree, cid)}
    assert by_sql == expected, label
    assert by_python == expected, label
    complement = {
        names[i]
        for i in session.scalars(select(Contact.id).where(condition(session, tree, negated=True)))
    }
    assert complement == set(world) - expected
    among = [world["ana"], world["chloe"], world["eve"]]
    narrowed = {names[i] for i in session.scalars(matching_ids(session, tree, among_ids=among))}
    assert narrowed == expected & {"ana", "chloe", "eve"}


def test_birthday_on_29_february_is_celebrated_on_28th_in_other_years(session, world):
    session.get(Contact, world["ben"]).attributes = {"birthday": "1992-02-29"}
    session.flush()
    tree = {"conditions": [field("attributes.birthday", "anniversary_today")]}
    # 28 Feb 2027, 20:00 UTC: still the 28th in New York (Ben), already 1 March in Tokyo.
    clock.set_source(lambda: datetime(2027, 2, 28, 20, 0, tzinfo=UTC))
    assert world["ben"] in set(session.scalars(matching_ids(session, tree)))
    assert contact_matches(session, tree, world["ben"])
    # In a leap year the 29th is the day, not the 28th.
    clock.set_source(lambda: datetime(2028, 2, 28, 20, 0, tzinfo=UTC))
    assert world["ben"] not in set(session.scalars(matching_ids(session, tree)))
    assert not contact_matches(session, tree, world["ben"])


def test_local_date_moves_with_the_clock_per_time_zone(session, world):
    tree = {"conditions": [field("attributes.birthday", "anniversary_today")]}
    names = {cid: name for name, cid in world.items()}
    # 2 March 05:00 UTC: New York is at midnight of 2 March (Ben's birthday), Paris too.
    clock.set_source(lambda: datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    assert {names[i] for i in session.scalars(matching_ids(session, tree))} == {"ana", "ben"}
    # 1 March 22:59 UTC: only UTC contacts and zones still on 1 March (Dan); Paris is on the 1st
    # until 23:00 UTC.
    clock.set_source(lambda: datetime(2026, 3, 1, 22, 59, tzinfo=UTC))
    assert {names[i] for i in session.scalars(matching_ids(session, tree))} == {"dan"}
