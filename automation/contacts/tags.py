"""Tags: created on first use, attached and detached set-wise."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from automation import clock
from automation.bulk import insert_rows
from automation.contacts.models import ContactTag, Tag
from automation.db import dialect_insert


def ensure_tags(session: Session, names: Iterable[str]) -> dict[str, int]:
    """Ids of the named tags, creating the missing ones (safe under concurrent callers)."""
    wanted = sorted({n.strip() for n in names if n.strip()})
    if not wanted:
        return {}
    # Usually every tag exists already: one SELECT, and the INSERT only for the others.
    found = dict(session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(wanted))).all())
    missing = [n for n in wanted if n not in found]
    if not missing:
        return found
    now = clock.now()
    session.execute(
        dialect_insert(session, Tag)
        .values([{"name": n, "created_at": now} for n in missing])
        .on_conflict_do_nothing(index_elements=["name"])
    )
    rows = session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(missing)))
    return {**found, **{name: tag_id for name, tag_id in rows}}


def add_tags(session: Session, contact_ids: Iterable[int], names: Iterable[str]) -> None:
    ids = list(contact_ids)
    tag_ids = ensure_tags(session, names)
    if not ids or not tag_ids:
        return
    now = clock.now()
    rows = [{"contact_id": c, "tag_id": t, "added_at": now} for c in ids for t in tag_ids.values()]
    # One statement of arrays on PostgreSQL, executemany on SQLite (automation/bulk.py).
    insert_rows(session, ContactTag, rows, skip_conflicts=True)


def remove_tags(session: Session, contact_ids: Iterable[int], names: Iterable[str]) -> None:
    ids = list(contact_ids)
    names = list(names)
    if not ids or not names:
        return
    tag_ids = select(Tag.id).where(Tag.name.in_(names))
    session.execute(
        delete(ContactTag).where(ContactTag.contact_id.in_(ids), ContactTag.tag_id.in_(tag_ids))
    )


def delete_unused_tags(session: Session) -> list[str]:
    """Remove tags no contact carries; returns their names."""
    unused = select(Tag.id).where(~Tag.id.in_(select(ContactTag.tag_id).distinct()))
    names = list(session.scalars(select(Tag.name).where(Tag.id.in_(unused)).order_by(Tag.name)))
    if names:
        session.execute(delete(Tag).where(Tag.name.in_(names)))
    return names


def list_tags(session: Session) -> list[tuple[str, int]]:
    """Every tag with how many contacts carry it."""
    from sqlalchemy import func

    rows = session.execute(
        select(Tag.name, func.count(ContactTag.contact_id))
        .outerjoin(ContactTag, ContactTag.tag_id == Tag.id)
        .group_by(Tag.name)
        .order_by(Tag.name)
    )
    return [(name, count) for name, count in rows]
