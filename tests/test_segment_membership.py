"""Materialised membership: full and incremental refresh, entered/left events, static lists."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from automation import clock
from automation.contacts.events import ingest_events
from automation.contacts.models import Contact, CustomField, Event, FieldType
from automation.contacts.schema import ContactIn, ContactPatch
from automation.contacts.service import create_contact, delete_contact, update_contact
from automation.errors import Conflict
from automation.segments.membership import (
    add_members,
    audience_ids,
    refresh_segment,
    remove_members,
    replace_members,
)
from automation.segments.models import Segment, SegmentKind, SegmentMembership
from automation.segments.service import create_segment
from automation.segments.shapes import (
    SegmentIn,
)

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def advance(self, **kw: Any) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def frozen():
    c = Clock()
    clock.set_source(lambda: c.now)
    yield c
    clock.set_source(None)


@pytest.fixture
def people(session, frozen):
    session.add(
        CustomField(
            name="plan", label="Plan", type=FieldType.CHOICE, options=["free", "pro"], created_at=T0
        )
    )
    session.flush()
    ids = {}
    for name, plan in [("ana", "pro"), ("ben", "free"), ("chloe", "pro"), ("dan", "free")]:
        contact = create_contact(
            session,
            ContactIn(email=f"{name}@example.com", first_name=name, attributes={"plan": plan}),
            source="test",
        )
        ids[name] = contact.id
    session.commit()
    return ids


def dynamic(session, name: str, conditions: list[Any]) -> int:
    segment = create_segment(session, SegmentIn(name=name, conditions=conditions))
    return segment.id


def members(session, segment_id: int) -> set[int]:
    return set(
        session.scalars(
            select(SegmentMembership.contact_id).where(SegmentMembership.segment_id == segment_id)
        )
    )


def segment_events(session, name: str | None = None) -> list[tuple[int, str, dict[str, Any]]]:
    query = select(Event.contact_id, Event.name, Event.properties).where(
        Event.name.in_([name] if name else ["segment.entered", "segment.left"])
    )
    return sorted((c, n, p) for c, n, p in session.execute(query.order_by(Event.id)))


PRO = [{"field": "attributes.plan", "operator": "equals", "value": "pro"}]


def test_first_refresh_stores_members_without_entered_events(session, people):
    segment_id = dynamic(session, "Pro", PRO)
    result = refresh_segment(session, segment_id)
    assert sorted(result.entered) == sorted([people["ana"], people["chloe"]])
    assert members(session, segment_id) == {people["ana"], people["chloe"]}
    assert segment_events(session) == []
    assert session.get_one(Segment, segment_id).member_count == 2


def test_refresh_records_who_entered_and_who_left(session, people, frozen):
    segment_id = dynamic(session, "Pro", PRO)
    refresh_segment(session, segment_id)
    session.get(Contact, people["ana"]).attributes = {"plan": "free"}
    session.get(Contact, people["dan"]).attributes = {"plan": "pro"}
    session.flush()  # changed behind the hooks' back: only a full refresh sees it
    frozen.advance(minutes=10)
    result = refresh_segment(session, segment_id)
    assert result.entered == [people["dan"]] and result.left == [people["ana"]]
    props = {"segment_id": segment_id, "segment": "Pro"}
    assert segment_events(session) == sorted(
        [(people["dan"], "segment.entered", props), (people["ana"], "segment.left", props)]
    )
    entered_at = session.scalar(
        select(SegmentMembership.entered_at).where(
            SegmentMembership.segment_id == segment_id,
            SegmentMembership.contact_id == people["dan"],
        )
    )
    assert entered_at == frozen.now
    # nothing changed: nothing happens
    again = refresh_segment(session, segment_id)
    assert again.entered == [] and again.left == []
    assert len(segment_events(session)) == 2


def test_contact_edits_refresh_membership_in_the_same_transaction(session, people):
    segment_id = dynamic(session, "Pro", PRO)
    refresh_segment(session, segment_id)
    update_contact(session, people["ben"], ContactPatch(attributes={"plan": "pro"}), source="test")
    assert people["ben"] in members(session, segment_id)
    assert segment_events(session, "segment.entered")[0][0] == people["ben"]
    update_contact(session, people["ben"], ContactPatch(add_tags=["x"]), source="test")
    assert len(segment_events(session)) == 1  # still matching: no new event
    new = create_contact(
        session, ContactIn(email="eve@example.com", attributes={"plan": "pro"}), source="test"
    )
    assert new.id in members(session, segment_id)


def test_new_events_refresh_only_segments_that_look_at_them(session, people, frozen):
    buyers = dynamic(session, "Buyers", [{"event": "order_completed", "within_days": 30}])
    pro = dynamic(session, "Pro", PRO)
    refresh_segment(session, buyers)
    refresh_segment(session, pro)
    ingest_events(
        session,
        [
            {"name": "order_completed", "email": "ben@example.com"},
            {"name": "page_viewed", "email": "dan@example.com"},
        ],
        source="test",
    )
    assert members(session, buyers) == {people["ben"]}
    assert segment_events(session) == [
        (people["ben"], "segment.entered", {"segment_id": buyers, "segment": "Buyers"})
    ]
    # An email identifying a new contact creates it; it gets evaluated too.
    ingest_events(session, [{"name": "order_completed", "email": "new@example.com"}], source="t")
    new_id = session.scalar(select(Contact.id).where(Contact.email == "new@example.com"))
    assert new_id in members(session, buyers)


def test_time_passing_is_caught_by_the_periodic_refresh(session, people, frozen):
    recent = dynamic(session, "Recent buyers", [{"event": "order_completed", "within_days": 7}])
    refresh_segment(session, recent)
    ingest_events(session, [{"name": "order_completed", "email": "ana@example.com"}], source="t")
    assert members(session, recent) == {people["ana"]}
    frozen.advance(days=8)
    result = refresh_segment(session, recent)
    assert result.left == [people["ana"]]
    assert segment_events(session, "segment.left")[0][0] == people["ana"]


def test_segments_not_yet_materialised_are_left_to_their_first_refresh(session, people):
    segment_id = dynamic(session, "Pro", PRO)
    update_contact(session, people["ben"], ContactPatch(attributes={"plan": "pro"}), source="t")
    assert members(session, segment_id) == set()
    assert segment_events(session) == []


def test_static_list_add_remove_replace(session, people):
    listed = create_segment(session, SegmentIn(name="VIPs", kind=SegmentKind.STATIC)).id
    result = add_members(session, listed, [people["ana"], people["ben"], 987654])
    assert sorted(result.entered) == sorted([people["ana"], people["ben"]])
    assert add_members(session, listed, [people["ana"]]).entered == []
    assert remove_members(session, listed, [people["ben"]]).left == [people["ben"]]
    result = replace_members(session, listed, [people["chloe"], people["dan"]])
    assert sorted(result.entered) == sorted([people["chloe"], people["dan"]])
    assert result.left == [people["ana"]]
    assert members(session, listed) == {people["chloe"], people["dan"]}
    names = [n for _, n, _ in segment_events(session)]
    assert names.count("segment.entered") == 4 and names.count("segment.left") == 2


def test_dynamic_segment_follows_the_static_list_it_uses(session, people):
    listed = create_segment(session, SegmentIn(name="VIPs", kind=SegmentKind.STATIC)).id
    vip_pros = dynamic(session, "VIP pros", [{"segment": listed}, *PRO])
    refresh_segment(session, vip_pros)
    add_members(session, listed, [people["ana"], people["ben"]])
    assert members(session, vip_pros) == {people["ana"]}
    remove_members(session, listed, [people["ana"]])
    assert members(session, vip_pros) == set()


def test_deleted_contacts_leave_and_counts_recover(session, people):
    segment_id = dynamic(session, "Pro", PRO)
    refresh_segment(session, segment_id)
    delete_contact(session, people["ana"])
    assert members(session, segment_id) == {people["chloe"]}
    refresh_segment(session, segment_id)
    assert session.get_one(Segment, segment_id).member_count == 1


def test_audience_is_union_of_includes_minus_excludes(session, people):
    pro = dynamic(session, "Pro", PRO)
    listed = create_segment(session, SegmentIn(name="Suppressed", kind=SegmentKind.STATIC)).id
    add_members(session, listed, [people["chloe"]])
    everyone_named_d = dynamic(
        session, "D", [{"field": "first_name", "operator": "starts_with", "value": "d"}]
    )
    audience = set(session.scalars(audience_ids(session, [pro, everyone_named_d], [listed])))
    assert audience == {people["ana"], people["dan"]}


@pytest.mark.postgres
def test_concurrent_full_and_incremental_refresh_record_each_change_once(
    tmp_path, postgres_url, frozen
):
    """A full refresh and an event-driven one racing on the same segment: the segment row
    lock serialises them, so each contact enters exactly once."""
    from automation.db import make_engine, make_session_factory

    engine = make_engine(postgres_url, pool_size=10)
    sessions = make_session_factory(engine)
    with sessions() as s:
        segment_id = dynamic(s, "Buyers", [{"event": "order_completed"}])
        refresh_segment(s, segment_id)
        s.commit()
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def buy(i: int) -> None:
        try:
            with sessions() as s:
                barrier.wait()
                ingest_events(
                    s, [{"name": "order_completed", "email": f"b{i}@example.com"}], source="t"
                )
                s.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reconcile() -> None:
        try:
            with sessions() as s:
                barrier.wait()
                refresh_segment(s, segment_id)
                s.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=reconcile) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sessions() as s:
        entered = s.execute(
            select(Event.contact_id, func.count())
            .where(Event.name == "segment.entered")
            .group_by(Event.contact_id)
        ).all()
        assert len(entered) == 4 and all(n == 1 for _, n in entered)
        assert len(members(s, segment_id)) == 4
    engine.dispose()


def test_a_segment_broken_by_a_deleted_field_does_not_break_ingestion(session, people):
    from automation.contacts.models import CustomField
    from automation.contacts.service import delete_field

    segment_id = dynamic(session, "Pro", PRO)
    refresh_segment(session, segment_id)
    with pytest.raises(Conflict) as refused:
        delete_field(session, "plan")
    assert str(refused.value) == "custom field 'plan' is used by segment 'Pro'; change those first"
    # Removed anyway (behind the application's back): ingestion goes on.
    session.execute(CustomField.__table__.delete().where(CustomField.name == "plan"))
    result = ingest_events(session, [{"name": "x", "email": "ana@example.com"}], source="t")
    assert result.count("created") == 1
    update_contact(session, people["ben"], ContactPatch(first_name="Benjamin"), source="t")
    with pytest.raises(Conflict):
        refresh_segment(session, segment_id)
