"""What a live workflow refers to, for the guards that refuse a delete or rename.

Only the live version of a workflow that is not archived counts: a draft is checked again
when it is published, and an archived workflow never runs. The finders are installed into
``automation.references`` by the wiring module.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.contacts.service import names_field
from automation.db import json_objects
from automation.references import Finder, Target, User
from automation.workflows.models import Workflow, WorkflowStatus, WorkflowVersion


def live_definitions(session: Session, *conditions: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, live version's document) of the workflows that are not archived."""
    rows = session.execute(
        select(Workflow.name, WorkflowVersion.definition)
        .join(WorkflowVersion, WorkflowVersion.id == Workflow.active_version_id)
        .where(Workflow.status != WorkflowStatus.ARCHIVED, *conditions)
        .order_by(Workflow.name)
    )
    return [(name, definition) for name, definition in rows]


def workflows_triggered_by_form(session: Session, form_id: int | None, form_name: str) -> list[str]:
    """Names of the workflows (not archived) whose live version starts on this form, named
    by id or by name (``form_id`` None: only those naming it by name)."""
    names = []
    for name, definition in live_definitions(
        session, WorkflowVersion.trigger_type == "form_submitted"
    ):
        trigger = definition.get("trigger", {})
        if (form_id is not None and trigger.get("form_id") == form_id) or trigger.get(
            "form"
        ) == form_name:
            names.append(name)
    return names


def _sending(session: Session, key: str, value: int) -> list[str]:
    """Names of the workflows (not archived) whose live version has a send node whose
    ``key`` is ``value``."""
    return [
        name
        for name, definition in live_definitions(session)
        if any(
            node.get("type") == "send_email" and node.get(key) == value
            for node in definition.get("nodes", [])
        )
    ]


def workflows_sending_from(session: Session, identity_id: int) -> list[str]:
    """Workflows whose live version sends from this sender identity."""
    return _sending(session, "sender_identity_id", identity_id)


def workflows_sending_template(session: Session, template_id: int) -> list[str]:
    """Workflows whose live version sends this template."""
    return _sending(session, "template_id", template_id)


def _segment_refs(definition: dict[str, Any]) -> set[int]:
    """Every segment or static list a workflow document names: its trigger, its list
    steps, and ``{"segment": id}`` leaves of any condition (branches, the goal)."""
    found: set[int] = set()
    trigger = definition.get("trigger") or {}
    if isinstance(trigger.get("segment_id"), int):
        found.add(trigger["segment_id"])
    for node in definition.get("nodes", []):
        for key in ("add_to_lists", "remove_from_lists"):
            found.update(i for i in node.get(key, []) if isinstance(i, int))
    for value in json_objects([definition.get("nodes", []), definition.get("settings", {})]):
        if isinstance(value.get("segment"), int):
            found.add(value["segment"])
    return found


def workflows_using_segment(session: Session, segment_id: int) -> list[str]:
    """Names of the workflows (not archived) whose live version names this segment."""
    return [
        name
        for name, definition in live_definitions(session)
        if segment_id in _segment_refs(definition)
    ]


def _users(names: list[str]) -> list[User]:
    return [User("workflow", name) for name in names]


def _using_field(session: Session, name: str) -> list[User]:
    return _users([n for n, d in live_definitions(session) if names_field(d, name)])


def _using_form(session: Session, key: tuple[int, str]) -> list[User]:
    return _users(workflows_triggered_by_form(session, *key))


FINDERS: dict[Target, Finder] = {
    Target.CUSTOM_FIELD: _using_field,
    Target.SEGMENT: lambda session, segment_id: _users(
        workflows_using_segment(session, segment_id)
    ),
    Target.TEMPLATE: lambda session, template_id: _users(
        workflows_sending_template(session, template_id)
    ),
    Target.SENDER_IDENTITY: lambda session, identity_id: _users(
        workflows_sending_from(session, identity_id)
    ),
    Target.FORM: _using_form,
    Target.FORM_NAME: lambda session, name: _users(
        workflows_triggered_by_form(session, None, name)
    ),
}
