"""The suppression list: addresses never to be mailed, whoever they belong to. It is kept
by address hash, so an erased contact's address stays listed without the address itself.
Everything that lists an address goes through :func:`suppress`; the outbox reads the list
at claim time with :func:`suppression_reasons`."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from automation import clock
from automation.addresses import email_hash
from automation.db import Base, BigId, UTCDateTime, dialect_insert, one_of
from automation.enums import str_enum


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    MANUAL = "manual"
    ERASED = "erased"  # GDPR erasure: only the hash remains, so a re-import is not mailed


class Suppression(Base):
    """An address never to be mailed. Keyed by a hash so erased addresses can stay listed."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    reason: Mapped[SuppressionReason] = mapped_column(str_enum(SuppressionReason))
    source: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


def suppress(
    session: Session,
    addresses: Iterable[str],
    reason: SuppressionReason,
    *,
    source: str,
    now: datetime | None = None,
) -> None:
    """List the addresses (one INSERT). An address already listed keeps its first reason,
    except for an erasure: that one forgets the address and keeps only its hash."""
    now = now or clock.now()
    erased = reason is SuppressionReason.ERASED
    rows = {
        email_hash(address): {
            "email_hash": email_hash(address),
            "email": None if erased else address,
            "reason": reason,
            "source": source,
            "created_at": now,
        }
        for address in addresses
    }
    if not rows:
        return
    insert = dialect_insert(session, Suppression).values(list(rows.values()))
    if erased:
        stmt = insert.on_conflict_do_update(
            index_elements=["email_hash"], set_={"email": None, "reason": reason}
        )
    else:
        stmt = insert.on_conflict_do_nothing(index_elements=["email_hash"])
    session.execute(stmt)


def erased_addresses(session: Session, addresses: Iterable[str]) -> set[str]:
    """Those of ``addresses`` that belonged to an erased contact (found by hash: the list
    keeps no erased address). Such an address is never re-created by events, imports or
    forms without a new explicit consent (docs/contacts.md, "Erasure")."""
    by_hash = {email_hash(address): address for address in addresses}
    reasons = suppression_reasons(session, by_hash.values())
    return {by_hash[h] for h, reason in reasons.items() if reason is SuppressionReason.ERASED}


def forget_erasure(session: Session, address: str) -> None:
    """A new explicit consent arrived for an erased address: its tombstone goes, so the new
    contact (with that consent recorded) can be mailed."""
    session.execute(
        delete(Suppression).where(
            Suppression.email_hash == email_hash(address),
            Suppression.reason == SuppressionReason.ERASED,
        )
    )


def suppression_reasons(session: Session, addresses: Iterable[str]) -> dict[str, SuppressionReason]:
    """Address hash → why it is listed, for those of ``addresses`` on the list."""
    hashes = {email_hash(address) for address in addresses}
    if not hashes:
        return {}
    return {
        digest: SuppressionReason(reason)
        for digest, reason in session.execute(
            select(Suppression.email_hash, Suppression.reason).where(
                one_of(session, Suppression.email_hash, hashes)
            )
        )
    }
