"""The kernel's registries: reactions and references are filled by the wiring module, in
their order, and refuse to run unfilled (a process that forgot its wiring would store
events that start nothing, and let deletes through that break live workflows)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from automation import reactions, references, wiring
from automation.references import Target


@pytest.fixture
def unwired(session: Session) -> Iterator[Session]:
    """A session in a process whose registries are emptied for the test, then restored."""
    saved_reactions, saved_finders = reactions._installed, references._finders
    reactions._installed, references._finders = None, None
    try:
        yield session
    finally:
        reactions._installed, references._finders = saved_reactions, saved_finders


def test_reacting_before_the_wiring_is_installed_raises(unwired):
    with pytest.raises(reactions.NotWired):
        reactions.react_to_contact_changes(unwired, [1])
    with pytest.raises(reactions.NotWired):
        reactions.react_to_events(unwired, [])


def test_asking_who_uses_a_segment_before_the_wiring_is_installed_raises(unwired):
    with pytest.raises(references.NotWired):
        references.users_of(unwired, Target.SEGMENT, 1)


def test_segment_membership_reacts_before_workflows():
    wiring.install()
    events, contacts = reactions.installed_names()
    assert events == ["segment membership", "workflow triggers, waits and goals"]
    assert contacts == ["segment membership", "workflow triggers and goals"]


def test_every_kind_of_reference_has_a_finder():
    finders = wiring.reference_finders()
    assert all(finders[target] for target in Target), [t for t in Target if not finders[t]]
