"""Hypothesis: random filter trees over random contacts and events select the same contacts
through the SQL compiler (SQLite and PostgreSQL) as through the Python evaluator.

The data is built to hit the edges: wrongly typed attributes, empty and non-ASCII text,
LIKE wildcards, numbers that float8 would round, events just inside and outside windows,
machine opens, contacts in zones on either side of the date line, and clocks frozen at
instants where local dates differ (including 28/29 February).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from automation import clock
from automation.contacts.models import (
    Contact,
    ContactStatus,
    ContactTag,
    CustomField,
    Event,
    FieldType,
    IndexStatus,
    LifecycleStage,
    Tag,
)
from automation.segments.catalog import (
    check_filter,
)
from automation.segments.compiler import matching_ids
from automation.segments.context import load_catalog
from automation.segments.evaluator import evaluate, load_facts
from automation.segments.fields import (
    OPERATORS,
    PROPERTY_OPERATORS,
    Operator,
    ValueType,
)
from automation.segments.models import Segment, SegmentKind, SegmentMembership
from automation.segments.schema import (
    Filter,
    parse_filter,
)

INSTANTS = [
    datetime(2026, 3, 1, 23, 30, tzinfo=UTC),
    datetime(2027, 2, 28, 13, 0, tzinfo=UTC),
    datetime(2024, 2, 29, 2, 15, 30, 123456, tzinfo=UTC),
    datetime(2026, 7, 15, 11, 45, tzinfo=UTC),
]
ZONES = [
    "UTC",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Asia/Kolkata",
    "America/New_York",
    "Australia/Adelaide",
    "Not/AZone",
]
TEXTS = [
    "",
    "ana",
    "Ana",
    "ANA",
    "bé",
    "BÉ",
    "a%b",
    "a_b",
    "x/y",
    "O'Brien",
    "'; DROP TABLE x;--",
    ".*",
    "zz",
    "Zoë",
    "É",
    "é",
    "10",
    "2026-03-01",
]
NUMBERS = [-1, 0, 1, 2, 3, 0.5, 2.5, 0.1, 0.30000000000000004, 1e-7, 100, 123456789012]
TAGS = ["vip", "beta", "trial"]
EVENT_NAMES = ["order", "page", "email.sent", "email.delivered", "email.opened", "email.clicked"]
CUSTOM = [
    ("plan", FieldType.CHOICE, ["free", "pro", "team"]),
    ("company", FieldType.TEXT, []),
    ("birthday", FieldType.DATE, []),
    ("ltv", FieldType.NUMBER, []),
    ("vip", FieldType.BOOLEAN, []),
]
LIST_ID, DYNAMIC_ID = 900, 901

text = st.one_of(st.sampled_from(TEXTS), st.text(alphabet="aAbéÉ%_/'", max_size=3))
number = st.one_of(st.sampled_from(NUMBERS), st.integers(-5, 5))


def dates_near(now: datetime) -> st.SearchStrategy[str]:
    day = now.date()
    near = st.integers(-12, 12).map(lambda d: (day + timedelta(days=d)).isoformat())
    month_days = [(day.month, day.day), (2, 28), (2, 29), (3, 1), (day.month, min(day.day, 27) + 1)]

    def valid(year: int, month_day: tuple[int, int]) -> str:
        try:
            return date(year, *month_day).isoformat()
        except ValueError:  # 29 February of a common year
            return date(year, 3, 1).isoformat()

    anniversary = st.builds(valid, st.integers(1950, 2010), st.sampled_from(month_days))
    return st.one_of(near, anniversary)


def instants_near(now: datetime) -> st.SearchStrategy[datetime]:
    exact = st.sampled_from([0, 1, 7, 30]).map(lambda d: now - timedelta(days=d))
    around = st.integers(-3 * 24 * 60, 45 * 24 * 60).map(lambda m: now - timedelta(minutes=m))
    return st.one_of(exact, around)


def attribute_value(kind: FieldType, now: datetime) -> st.SearchStrategy[Any]:
    right = {
        FieldType.CHOICE: st.sampled_from(["free", "pro", "team"]),
        FieldType.TEXT: text,
        FieldType.DATE: dates_near(now),
        FieldType.NUMBER: number,
        FieldType.BOOLEAN: st.booleans(),
    }[kind]
    wrong = st.one_of(number, st.booleans(), st.sampled_from(["x", "", "2026-3-1", "garbage"]))
    return st.one_of(right, right, wrong)


@st.composite
def contact_data(draw: Any, now: datetime) -> dict[str, Any]:
    attributes = {}
    for name, kind, _ in CUSTOM:
        if draw(st.booleans()):
            attributes[name] = draw(attribute_value(kind, now))
    properties = st.fixed_dictionaries(
        {},
        optional={
            "total": number | st.sampled_from(["30", "abc"]),
            "sku": text,
            "template_id": st.sampled_from([1, 2, "1"]),
            "campaign_id": st.sampled_from([1, 2]),
            "machine": st.booleans() | st.just("true"),
            "nested": st.fixed_dictionaries({}, optional={"k": text | number}),
        },
    )
    events = draw(
        st.lists(
            st.tuples(st.sampled_from(EVENT_NAMES), properties, instants_near(now)), max_size=5
        )
    )
    return {
        "first_name": draw(text),
        "status": draw(st.sampled_from(list(ContactStatus))),
        "lifecycle_stage": draw(st.sampled_from(list(LifecycleStage))),
        "score": draw(st.integers(-3, 3)),
        "engagement_score": draw(st.sampled_from([0.0, 0.1, 0.30000000000000004, 2.5])),
        "time_zone": draw(st.sampled_from(ZONES)),
        "created_at": draw(instants_near(now)),
        "last_open_at": draw(st.none() | instants_near(now)),
        "attributes": attributes,
        "tags": draw(st.sets(st.sampled_from(TAGS))),
        "events": events,
        "listed": draw(st.booleans()),
    }


FIELDS: dict[str, ValueType] = {
    "first_name": ValueType.TEXT,
    "email": ValueType.TEXT,
    "time_zone": ValueType.TEXT,
    "status": ValueType.CHOICE,
    "lifecycle_stage": ValueType.CHOICE,
    "score": ValueType.NUMBER,
    "engagement_score": ValueType.NUMBER,
    "created_at": ValueType.DATETIME,
    "last_open_at": ValueType.DATETIME,
    "attributes.plan": ValueType.CHOICE,
    "attributes.company": ValueType.TEXT,
    "attributes.birthday": ValueType.DATE,
    "attributes.ltv": ValueType.NUMBER,
    "attributes.vip": ValueType.BOOLEAN,
}
CHOICES = {
    "status": [s.value for s in ContactStatus],
    "lifecycle_stage": [s.value for s in LifecycleStage],
    "attributes.plan": ["free", "pro", "team"],
}


def scalar(kind: ValueType, name: str, now: datetime) -> st.SearchStrategy[Any]:
    if kind is ValueType.TEXT:
        return text
    if kind is ValueType.CHOICE:
        return st.sampled_from(CHOICES[name])
    if kind is ValueType.NUMBER:
        return number
    if kind is ValueType.BOOLEAN:
        return st.booleans()
    if kind is ValueType.DATE:
        return dates_near(now)
    return instants_near(now).map(lambda d: d.isoformat())


def value_for(kind: ValueType, name: str, op: Operator, now: datetime) -> st.SearchStrategy[Any]:
    if op in (Operator.IS_SET, Operator.IS_NOT_SET, Operator.ANNIVERSARY_TODAY):
        return st.none()
    if op in (Operator.WITHIN_LAST_DAYS, Operator.MORE_THAN_DAYS_AGO, Operator.IN_NEXT_DAYS):
        return st.sampled_from([0, 1, 2, 7, 30])
    if op in (Operator.CONTAINS, Operator.NOT_CONTAINS, Operator.STARTS_WITH, Operator.ENDS_WITH):
        return text.filter(bool)
    if op in (Operator.IN, Operator.NOT_IN):
        return st.lists(scalar(kind, name, now), min_size=1, max_size=3)
    if op is Operator.BETWEEN:
        pair = st.lists(scalar(kind, name, now), min_size=2, max_size=2)
        if kind is ValueType.DATETIME:
            return pair.map(lambda p: sorted(p, key=datetime.fromisoformat))
        return pair.map(sorted)
    return scalar(kind, name, now)


@st.composite
def field_leaf(draw: Any, now: datetime) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(FIELDS)))
    kind = FIELDS[name]
    op = draw(st.sampled_from(OPERATORS[kind]))
    node = {"field": name, "operator": op.value}
    value = draw(value_for(kind, name, op, now))
    if value is not None:
        node["value"] = value
    return node


@st.composite
def property_cond(draw: Any, now: datetime) -> dict[str, Any]:
    prop = draw(st.sampled_from(["total", "sku", "template_id", "machine", "nested.k"]))
    op = draw(st.sampled_from(PROPERTY_OPERATORS))
    kind = draw(st.sampled_from([ValueType.TEXT, ValueType.NUMBER, ValueType.BOOLEAN]))
    if op in (Operator.CONTAINS, Operator.NOT_CONTAINS, Operator.STARTS_WITH, Operator.ENDS_WITH):
        kind = ValueType.TEXT
    if kind is ValueType.BOOLEAN and op in (
        Operator.GREATER_THAN,
        Operator.GREATER_OR_EQUAL,
        Operator.LESS_THAN,
        Operator.LESS_OR_EQUAL,
        Operator.BETWEEN,
    ):
        kind = ValueType.NUMBER
    node = {"property": prop, "operator": op.value}
    value = draw(value_for(kind, "", op, now))
    if value is not None:
        node["value"] = value
    return node


def window(now: datetime) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just({}),
        st.sampled_from([0, 1, 7, 30]).map(lambda d: {"within_days": d}),
        instants_near(now).map(lambda d: {"since": d.isoformat()}),
    )


def counting() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.sampled_from([{}, {"operator": "performed"}, {"operator": "not_performed"}]),
        st.tuples(st.sampled_from(["at_least", "at_most", "exactly"]), st.integers(0, 3)).map(
            lambda p: {"operator": p[0], "times": p[1]}
        ),
    )


@st.composite
def event_leaf(draw: Any, now: datetime) -> dict[str, Any]:
    node = {"event": draw(st.sampled_from(EVENT_NAMES))}
    where = draw(st.lists(property_cond(now), max_size=2))
    if where:
        node["where"] = where
    return {**node, **draw(window(now)), **draw(counting())}


@st.composite
def last_performed_leaf(draw: Any, now: datetime) -> dict[str, Any]:
    op = draw(st.sampled_from(OPERATORS[ValueType.DATETIME]))
    node = {"last_performed": draw(st.sampled_from(EVENT_NAMES)), "operator": op.value}
    value = draw(value_for(ValueType.DATETIME, "", op, now))
    if value is not None:
        node["value"] = value
    return node


@st.composite
def email_leaf(draw: Any, now: datetime) -> dict[str, Any]:
    activity = draw(st.sampled_from(["received", "opened", "clicked", "received_not_opened"]))
    node: dict[str, Any] = {"email": activity, **draw(window(now))}
    for key in ("template_id", "campaign_id"):
        if draw(st.booleans()):
            node[key] = draw(st.sampled_from([1, 2]))
    if draw(st.booleans()):
        node["include_machine"] = True
    if activity != "received_not_opened":
        node.update(draw(counting()))
    return node


def tree_nodes(now: datetime) -> st.SearchStrategy[dict[str, Any]]:
    leaves = st.one_of(
        field_leaf(now),
        field_leaf(now),
        st.tuples(
            st.lists(st.sampled_from([*TAGS, "nope"]), min_size=1, max_size=3),
            st.sampled_from(["has_any", "has_all", "has_none", "has_not_all"]),
        ).map(lambda p: {"tags": p[0], "operator": p[1]}),
        event_leaf(now),
        last_performed_leaf(now),
        email_leaf(now),
        st.sampled_from([{"segment": LIST_ID}, {"segment": DYNAMIC_ID}]),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3).map(lambda c: {"all": c}),
            st.lists(children, min_size=1, max_size=3).map(lambda c: {"any": c}),
            children.map(lambda c: {"not": c}),
        ),
        max_leaves=6,
    )


@st.composite
def scenario(
    draw: Any,
) -> tuple[datetime, list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    now = draw(st.sampled_from(INSTANTS))
    people = draw(st.lists(contact_data(now), min_size=3, max_size=8))
    trees = draw(
        st.lists(st.lists(tree_nodes(now), min_size=1, max_size=2), min_size=4, max_size=10)
    )
    # Custom fields whose index is ready: on PostgreSQL the compiler then emits the index's
    # typed expression for them instead of JSON containment.
    indexed = draw(st.sets(st.sampled_from([name for name, _, _ in CUSTOM])))
    return now, people, [{"conditions": t} for t in trees], indexed


def _store(session: Any, now: datetime, people: list[dict[str, Any]]) -> list[int]:
    tag_ids = {}
    for name in TAGS:
        tag = Tag(name=name, created_at=now)
        session.add(tag)
        session.flush()
        tag_ids[name] = tag.id
    session.add_all(
        [
            Segment(
                id=LIST_ID,
                name="list",
                kind=SegmentKind.STATIC,
                created_at=now,
                updated_at=now,
                refreshed_at=now,
            ),
            Segment(
                id=DYNAMIC_ID,
                name="dynamic",
                kind=SegmentKind.DYNAMIC,
                created_at=now,
                updated_at=now,
                definition={
                    "conditions": [
                        {
                            "any": [
                                {"tags": ["vip"]},
                                {"field": "attributes.ltv", "operator": "greater_than", "value": 1},
                            ]
                        }
                    ]
                },
            ),
        ]
    )
    ids = []
    for i, person in enumerate(people):
        contact = Contact(
            email=f"p{i}@example.com",
            last_name="",
            updated_at=now,
            **{k: v for k, v in person.items() if k not in ("tags", "events", "listed")},
        )
        session.add(contact)
        session.flush()
        ids.append(contact.id)
        for tag in person["tags"]:
            session.add(ContactTag(contact_id=contact.id, tag_id=tag_ids[tag], added_at=now))
        if person["listed"]:
            session.add(
                SegmentMembership(segment_id=LIST_ID, contact_id=contact.id, entered_at=now)
            )
        if person["events"]:
            session.execute(
                insert(Event),
                [
                    {
                        "contact_id": contact.id,
                        "name": n,
                        "properties": p,
                        "occurred_at": at,
                        "received_at": now,
                        "source": "test",
                    }
                    for n, p, at in person["events"]
                ],
            )
    session.flush()
    return ids


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(example=scenario())
def test_sql_and_python_evaluators_select_the_same_contacts(session, example):
    now, people, trees, indexed = example
    if not session.get(CustomField, 1):
        for name, kind, options in CUSTOM:
            session.add(
                CustomField(name=name, label=name, type=kind, options=options, created_at=now)
            )
        session.commit()
    clock.set_source(lambda: now)
    try:
        for custom in session.scalars(select(CustomField)):
            custom.index_status = IndexStatus.READY if custom.name in indexed else IndexStatus.NONE
        session.flush()
        ids = _store(session, now, people)
        everything = Filter.model_validate(
            {"conditions": [{"event": n} for n in EVENT_NAMES] + [{"segment": LIST_ID}]}
        )
        base = load_catalog(session, everything)
        facts = {cid: load_facts(session, cid, everything, base) for cid in ids}
        for raw in trees:
            tree = parse_filter(raw)
            catalog = load_catalog(session, tree)
            assert check_filter(tree, catalog) == [], raw
            by_sql = set(session.scalars(matching_ids(session, tree, catalog=catalog, now=now)))
            by_python = {cid for cid in ids if evaluate(tree, facts[cid], catalog, now)}
            assert by_sql == by_python, (raw, people)
    finally:
        session.rollback()
        clock.set_source(None)
