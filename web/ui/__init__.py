"""The marketer's pages. Each area adds its views to this blueprint and an entry to NAV."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

bp = Blueprint("ui", __name__)

# (endpoint, label): an entry shows only once its endpoint exists.
NAV: list[tuple[str, str]] = [
    ("ui.dashboard", "Dashboard"),
    ("ui.contacts", "Contacts"),
    ("ui.segments", "Segments"),
    ("ui.templates", "Templates"),
    ("ui.workflows", "Workflows"),
    ("ui.campaigns", "Campaigns"),
    ("ui.settings", "Settings"),
    ("ui.sent_mail", "Sent mail (local)"),
]


def nav_items() -> list[tuple[str, str]]:
    return [(endpoint, label) for endpoint, label in NAV if endpoint in current_app.view_functions]


def _load_views() -> Any:
    from web.ui import contacts, dashboard, sent_mail

    return contacts, dashboard, sent_mail


_load_views()
