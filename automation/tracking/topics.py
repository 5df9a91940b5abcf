"""Preference topics: the tags a contact may pick on the preferences page."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts import tags as tag_ops
from automation.contacts.models import ContactTag, Tag
from automation.errors import Conflict, FieldError, InvalidInput, NotFound
from automation.reactions import react_to_contact_changes
from automation.tracking.models import PreferenceTopic


def list_topics(session: Session) -> list[PreferenceTopic]:
    return list(session.scalars(select(PreferenceTopic).order_by(PreferenceTopic.label)))


def add_topic(session: Session, tag: str, label: str) -> PreferenceTopic:
    tag, label = tag.strip(), label.strip()
    errors = []
    if not 0 < len(tag) <= 100:
        errors.append(FieldError("tag", "1 to 100 characters"))
    if not 0 < len(label) <= 200:
        errors.append(FieldError("label", "1 to 200 characters"))
    if errors:
        raise InvalidInput(errors)
    if session.scalar(select(PreferenceTopic.id).where(PreferenceTopic.tag == tag)) is not None:
        raise Conflict(f"{tag!r} is already a topic", [FieldError("tag", "already a topic")])
    topic = PreferenceTopic(tag=tag, label=label, created_at=clock.now())
    session.add(topic)
    session.flush()
    return topic


def remove_topic(session: Session, topic_id: int) -> None:
    """The tag stays on contacts; it is only no longer offered on the page."""
    result = session.execute(delete(PreferenceTopic).where(PreferenceTopic.id == topic_id))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"topic {topic_id} not found")


def chosen_topics(session: Session, contact_id: int) -> set[str]:
    """The topic tags ``contact_id`` has."""
    rows = session.scalars(
        select(Tag.name)
        .join(ContactTag, ContactTag.tag_id == Tag.id)
        .join(PreferenceTopic, PreferenceTopic.tag == Tag.name)
        .where(ContactTag.contact_id == contact_id)
    )
    return set(rows)


def choose_topics(session: Session, contact_id: int, chosen: Iterable[str]) -> set[str]:
    """Set the contact's topic tags to ``chosen`` (names that are no topic are ignored);
    other tags are untouched. Returns the topics now chosen."""
    offered = {t.tag for t in list_topics(session)}
    wanted = set(chosen) & offered
    have = chosen_topics(session, contact_id)
    tag_ops.add_tags(session, [contact_id], sorted(wanted - have))
    tag_ops.remove_tags(session, [contact_id], sorted(have - wanted))
    if wanted != have:
        react_to_contact_changes(session, [contact_id])
    return wanted
