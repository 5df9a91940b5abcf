"""Who uses what: the registry that delete and rename guards ask.

Workflows, campaigns, segments and forms keep the ids and names of other domains' rows
inside their documents (a workflow's JSON names a segment, a template, a sender, a form,
a custom field). Those domains sit on higher floors than the ones that own the rows, so
the owner cannot import them to ask "is this still used?". Instead each domain that holds
references offers a finder per kind of target, the wiring module (``automation/wiring.py``)
registers them at start-up, and the owner asks the registry before it deletes or renames.

A foreign key cannot say this: the references live inside JSON documents and only *live*
workflows and *unsent* campaigns count, which is a rule of the referring domain, not a
property of a column. So the finders are code of the domain that holds the reference.

Asking before ``install`` raises: a guard that silently found nobody would let a delete
through that breaks a live workflow.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from sqlalchemy.orm import Session

from automation.errors import Conflict, FieldError


class Target(enum.StrEnum):
    """What can be referred to, and what its key is."""

    CUSTOM_FIELD = "custom field"  # key: the field's name
    SEGMENT = "segment"  # key: the segment's id (lists too)
    TEMPLATE = "template"  # key: the template's id
    SENDER_IDENTITY = "sender identity"  # key: the identity's id
    FORM = "form"  # key: (id, name): triggers name forms by id, older ones by name
    FORM_NAME = "form name"  # key: the name only (a rename breaks only those)


@dataclass(frozen=True, order=True)
class User:
    """One thing that refers to the target: ``workflow 'Welcome'``."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}"


Finder = Callable[[Session, Any], Iterable[User]]

_finders: dict[Target, tuple[Finder, ...]] | None = None


class NotWired(RuntimeError):
    """A guard asked the registry in a process that never installed the finders."""


def install(finders: Mapping[Target, Sequence[Finder]]) -> None:
    """Set every target's finders (the wiring module's job; idempotent)."""
    global _finders
    _finders = {target: tuple(finders.get(target, ())) for target in Target}


def users_of(session: Session, target: Target, key: Any) -> list[User]:
    """Everything that refers to ``key``, in the order the finders were installed."""
    if _finders is None:
        raise NotWired("references are not installed: call automation.wiring.install() first")
    return [user for find in _finders[target] for user in find(session, key)]


def describe(users: Sequence[User]) -> str:
    """``segment 'Pro', workflows 'Renewals', 'Win-back'``: grouped by kind, in order."""
    groups = [(kind, [u.name for u in found]) for kind, found in groupby(users, lambda u: u.kind)]
    return ", ".join(
        f"{kind}{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}"
        for kind, names in groups
    )


def refuse_if_used(
    session: Session,
    target: Target,
    key: Any,
    what: str,
    *,
    field: str | None = None,
    advice: str = "change those first",
) -> None:
    """Raise ``Conflict`` naming every user of ``key``, always in the one phrasing
    ``<what> is used by <users>; <advice>`` (``what`` names the target for people:
    ``segment 'Pro'``); ``field`` puts the error on that form field too."""
    users = users_of(session, target, key)
    if not users:
        return
    listed = describe(users)
    errors = [FieldError(field, f"used by {listed}")] if field else None
    raise Conflict(f"{what} is used by {listed}; {advice}", errors)
