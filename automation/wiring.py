"""The one place where lower floors are told about higher ones.

Reactions (what runs after events arrive or contacts change) and references (who uses a
segment, a template, a form …) are registries in the kernel; the domains that fill them
sit higher up. ``install`` fills both, in their order, and ``build_runtime`` calls it, so
every process (web, worker, beat, CLI, tests) is wired before its first transaction.
Adding a reaction or a kind of reference means adding a line here.
"""

from __future__ import annotations

import automation.models  # noqa: F401  # every mapper registered (contacts/related.py reads them)
from automation import reactions, references
from automation.campaigns.references import FINDERS as CAMPAIGN_REFERENCES
from automation.forms.references import FINDERS as FORM_REFERENCES
from automation.references import Finder, Target
from automation.segments.membership import refresh_contacts, refresh_for_events
from automation.segments.references import FINDERS as SEGMENT_REFERENCES
from automation.workflows.references import FINDERS as WORKFLOW_REFERENCES
from automation.workflows.triggers import on_contact_changes, on_events

# Segment membership first: "entered segment" triggers read it. Workflows see people only.
EVENT_SUBSCRIBERS = (
    reactions.EventSubscriber("segment membership", refresh_for_events),
    reactions.EventSubscriber("workflow triggers, waits and goals", on_events, human_only=True),
)
CONTACT_SUBSCRIBERS = (
    reactions.ContactSubscriber("segment membership", refresh_contacts),
    reactions.ContactSubscriber("workflow triggers and goals", on_contact_changes),
)

# The order of the users a refusal names: segments, workflows, campaigns, forms.
REFERENCE_HOLDERS = (SEGMENT_REFERENCES, WORKFLOW_REFERENCES, CAMPAIGN_REFERENCES, FORM_REFERENCES)


def reference_finders() -> dict[Target, list[Finder]]:
    return {
        target: [holder[target] for holder in REFERENCE_HOLDERS if target in holder]
        for target in Target
    }


def install() -> None:
    """Install every subscriber and reference finder in this process (idempotent)."""
    reactions.install(EVENT_SUBSCRIBERS, CONTACT_SUBSCRIBERS)
    references.install(reference_finders())
