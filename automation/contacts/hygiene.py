"""Data hygiene: merge two contacts, find likely duplicates."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Contact
from automation.contacts.related import move_related_rows
from automation.contacts.service import get_contact
from automation.errors import FieldError, InvalidInput
from automation.reactions import react_to_contact_changes

_PROVIDERS_IGNORING_DOTS = {"gmail.com", "googlemail.com"}


def merge_contacts(session: Session, survivor_id: int, duplicate_id: int) -> Contact:
    """Fold ``duplicate`` into ``survivor``: every row that pointed at the duplicate moves,
    attributes the survivor lacks are taken over, engagement adds up; the duplicate is gone."""
    if survivor_id == duplicate_id:
        raise InvalidInput(FieldError("duplicate_id", "cannot merge a contact into itself"))
    survivor = get_contact(session, survivor_id)
    duplicate = get_contact(session, duplicate_id)
    move_related_rows(session, duplicate.id, survivor.id)
    survivor.attributes = {**duplicate.attributes, **survivor.attributes}
    for name in ("first_name", "last_name", "external_id"):
        if not getattr(survivor, name) and getattr(duplicate, name):
            value = getattr(duplicate, name)
            if name == "external_id":
                duplicate.external_id = None
                session.flush()
            setattr(survivor, name, value)
    survivor.score += duplicate.score
    survivor.emails_sent += duplicate.emails_sent
    survivor.opens += duplicate.opens
    survivor.clicks += duplicate.clicks
    survivor.engagement_score += duplicate.engagement_score
    survivor.last_open_at = _latest(survivor.last_open_at, duplicate.last_open_at)
    survivor.last_click_at = _latest(survivor.last_click_at, duplicate.last_click_at)
    survivor.created_at = min(survivor.created_at, duplicate.created_at)
    survivor.updated_at = clock.now()
    session.delete(duplicate)
    session.flush()
    session.refresh(survivor)
    react_to_contact_changes(session, [survivor.id])
    return survivor


def _latest(a, b):  # type: ignore[no-untyped-def]  # datetimes or None
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def canonical_address(email: str) -> str:
    """The mailbox an address delivers to: no +suffix, and no dots where the provider
    ignores them (ana.p+news@gmail.com and anap@gmail.com are one inbox)."""
    local, _, domain = email.lower().partition("@")
    local = local.split("+", 1)[0]
    if domain in _PROVIDERS_IGNORING_DOTS:
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


@dataclass(frozen=True)
class DuplicateGroup:
    reason: str
    contact_ids: list[int]
    emails: list[str]


def find_duplicates(session: Session, limit: int = 200) -> list[DuplicateGroup]:
    """Groups of contacts that are likely one person: same inbox, or same full name at
    the same domain. Streams plain rows, never ORM objects."""
    by_inbox: dict[str, list[tuple[int, str]]] = defaultdict(list)
    by_name: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)
    rows = session.execute(
        select(Contact.id, Contact.email, Contact.first_name, Contact.last_name)
        .order_by(Contact.id)
        .execution_options(yield_per=5000)
    )
    for contact_id, email, first, last in rows:
        by_inbox[canonical_address(email)].append((contact_id, email))
        if first.strip() and last.strip():
            domain = email.partition("@")[2]
            by_name[(first.strip().lower(), last.strip().lower(), domain)].append(
                (contact_id, email)
            )
    groups: list[DuplicateGroup] = []
    seen: set[frozenset[int]] = set()
    for reason, index in (("same inbox", by_inbox), ("same name and domain", by_name)):
        for members in index.values():
            ids = frozenset(m[0] for m in members)
            if len(members) > 1 and ids not in seen:
                seen.add(ids)
                groups.append(
                    DuplicateGroup(reason, [m[0] for m in members], [m[1] for m in members])
                )
                if len(groups) >= limit:
                    return groups
    return groups


def duplicates_of(session: Session, contact_id: int, limit: int = 20) -> list[Contact]:
    """Contacts that are likely the same person as this one (the rules of
    ``find_duplicates``), found by narrow address patterns instead of reading every contact.
    At a huge shared domain only the first 5,000 addresses with the same initial are compared."""
    contact = get_contact(session, contact_id)
    inbox = canonical_address(contact.email)
    local, _, domain = inbox.partition("@")
    domains = ["gmail.com", "googlemail.com"] if domain == "gmail.com" else [domain]
    # Every address of the same inbox starts with the same character at the same domain.
    candidates = session.scalars(
        select(Contact)
        .where(
            Contact.id != contact.id,
            or_(
                *[Contact.email.like(f"{_escape(local[:1])}%@{_escape(d)}", "\\") for d in domains]
            ),
        )
        .limit(5000)
    )
    found = {c.id: c for c in candidates if canonical_address(c.email) == inbox}
    first, last = contact.first_name.strip().lower(), contact.last_name.strip().lower()
    if first and last:
        same_name = session.scalars(
            select(Contact)
            .where(
                Contact.id != contact.id,
                func.lower(Contact.first_name) == first,
                func.lower(Contact.last_name) == last,
                Contact.email.like(f"%@{_escape(contact.email.partition('@')[2])}", "\\"),
            )
            .limit(limit)
        )
        found.update({c.id: c for c in same_name})
    return sorted(found.values(), key=lambda c: c.id)[:limit]


def _escape(text: str) -> str:
    """A LIKE pattern piece that matches ``text`` literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
