"""The marketer's pages. Each area's module adds its views to the blueprint (``bp``, in
``web.ui.blueprint``) and an entry to NAV; importing this package loads them all."""

from __future__ import annotations

from flask import current_app, g
from sqlalchemy.exc import SQLAlchemyError

from automation.accounts.models import Role
from automation.ops.backlog import paused_sender_count as count
from web.database import db

# Each area's module adds its views to ``bp`` when imported: imported for that alone.
from web.ui import (  # noqa: F401
    accounts,
    campaigns,
    contacts,
    dashboard,
    email_templates,
    imports,
    lead_forms,
    outbox,
    segments,
    sent_mail,
    settings,
    website,
    workflows,
    workspace,
)
from web.ui.blueprint import bp

__all__ = ["NAV", "bp", "can", "nav_items", "paused_sender_count"]

# (endpoint, label): an entry shows only once its endpoint exists.
NAV: list[tuple[str, str]] = [
    ("ui.dashboard", "Dashboard"),
    ("ui.contacts", "Contacts"),
    ("ui.segments", "Segments"),
    ("ui.templates", "Templates"),
    ("ui.workflows", "Workflows"),
    ("ui.campaigns", "Campaigns"),
    ("ui.lead_forms", "Forms"),
    ("ui.outbox", "Operations"),
    ("ui.settings", "Settings"),
    ("ui.sent_mail", "Sent mail (local)"),
]


def nav_items() -> list[tuple[str, str]]:
    return [(endpoint, label) for endpoint, label in NAV if endpoint in current_app.view_functions]


def can(role: str) -> bool:
    """In templates: whether the logged-in user has at least ``role`` (shows or hides actions;
    the views check again)."""
    user = getattr(g, "user", None)
    return user is not None and user.role.allows(Role(role))


def paused_sender_count() -> int:
    """For the banner in base.html (logged-in pages only): how many senders the complaint
    guard paused. One small query per page, asked once per request."""
    if "paused_sender_count" not in g:
        try:
            g.paused_sender_count = count(db())
        except SQLAlchemyError:
            # An error page rendered after a failed statement: the banner must not turn it
            # into a second crash (the session needs a rollback the view did not do).
            g.paused_sender_count = 0
    return int(g.paused_sender_count)
