"""`db.one_of` sends a list as one array parameter on PostgreSQL (text and ids built as
array literals): whatever the values hold — quotes, backslashes, braces, commas, the word
NULL, accents — the rows matched are exactly those an IN list matches."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from automation import clock
from automation.contacts.models import Tag
from automation.db import Base, make_engine, make_session_factory, one_of

pytestmark = pytest.mark.postgres

AWKWARD = ['a"b', "back\\slash", "{brace}", "com,ma", "NULL", "", " space ", "é'é", '\\"', "}{"]
names = st.one_of(
    st.sampled_from(AWKWARD), st.text(min_size=0, max_size=6).filter(lambda t: "\x00" not in t)
)


@pytest.fixture
def sessions(postgres_url):
    engine = make_engine(postgres_url)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stored=st.sets(names, min_size=1, max_size=8), asked=st.lists(names, max_size=8))
def test_text_lists_match_exactly_what_an_in_list_matches(sessions, stored, asked):
    with sessions() as s:
        s.query(Tag).delete()
        s.add_all(Tag(name=n, created_at=clock.now()) for n in stored)
        s.flush()
        got = set(s.scalars(select(Tag.name).where(one_of(s, Tag.name, asked))))
        ids = list(s.scalars(select(Tag.id)))
        by_id = set(s.scalars(select(Tag.id).where(one_of(s, Tag.id, ids[:3]))))
        s.rollback()
    assert got == stored & set(asked)
    assert by_id == set(ids[:3])
