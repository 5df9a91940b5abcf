"""The node kinds as the workflow editor shows them: a label and icon per node type, and per
kind (a type, or ``wait:<mode>``) the document keys its exits are stored under, the settings
it owns and what a new node of it starts with. The canvas reads this (embedded in its page,
and at ``GET /api/v1/workflows/node-kinds``) instead of keeping its own copy; a kind added
to the schema without an entry here fails tests/test_node_kinds.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from automation.workflows import schema


@dataclass(frozen=True)
class NodeType:
    label: str
    icon: str
    id_base: str  # new nodes get the ids <id_base>-1, <id_base>-2, ...


@dataclass(frozen=True)
class NodeKind:
    tag: str  # the schema's discriminator tag: the type, or wait:<mode>
    model: type[schema.NodeBase]
    exits: tuple[str, ...] = ("next",)  # keys naming the next node, in exits() order
    exit_items: str | None = None  # a list whose items are exits (name, next): split paths
    starter: dict[str, Any] = field(default_factory=dict)  # a new node's settings
    heading: str | None = None  # the panel's heading, when not the type's label
    mode_label: str | None = None  # a wait's mode, as the mode menu offers it

    @property
    def type(self) -> str:
        return self.tag.split(":")[0]

    @property
    def mode(self) -> str | None:
        return self.tag.split(":")[1] if ":" in self.tag else None

    def fields(self) -> list[str]:
        """The settings this kind owns (its keys besides id, name, type, mode and exits)."""
        common = {*schema.NodeBase.model_fields, "type", "mode", *self.exits}
        if self.exit_items is not None:
            common.discard(self.exit_items)
        return [
            info.alias or name
            for name, info in self.model.model_fields.items()
            if name not in common
        ]


TYPES: dict[str, NodeType] = {
    "send_email": NodeType("Send email", "✉", "email"),
    "wait": NodeType("Wait", "◷", "wait"),
    "branch": NodeType("Branch", "◇", "branch"),
    "split": NodeType("A/B split", "⋔", "split"),
    "update_contact": NodeType("Update contact", "✎", "update"),
    "webhook": NodeType("Webhook", "⇄", "webhook"),
    "goal": NodeType("Goal", "★", "goal"),
    "exit": NodeType("Exit", "■", "end"),
}

# Starters leave a blank ("" or null, or an empty condition) where only the page knows the
# value: the first template, the first date field, a condition on the email sent upstream.
KINDS: dict[str, NodeKind] = {
    kind.tag: kind
    for kind in (
        NodeKind("send_email", schema.SendEmailNode, starter={"template_id": None}),
        NodeKind(
            "wait:duration",
            schema.WaitDurationNode,
            starter={"duration": {"days": 1}},
            mode_label="A duration",
        ),
        NodeKind(
            "wait:time_of_day",
            schema.WaitTimeOfDayNode,
            starter={"time": "09:00", "weekdays": list(schema.WEEKDAYS[:5])},
            mode_label="Until a time of day",
        ),
        NodeKind(
            "wait:date_field",
            schema.WaitDateFieldNode,
            starter={"field": "", "offset_days": 0, "time": "09:00"},
            mode_label="Until a date field",
        ),
        NodeKind(
            "wait:event",
            schema.WaitEventNode,
            exits=("happened", "timed_out"),
            starter={"event": "", "timeout": {"days": 1}},
            heading="Wait for event",
            mode_label="Until an event (or a timeout)",
        ),
        NodeKind(
            "branch",
            schema.BranchNode,
            exits=("yes", "no"),
            starter={"condition": {"conditions": []}},
        ),
        NodeKind(
            "split",
            schema.SplitNode,
            exits=(),
            exit_items="paths",
            starter={"paths": [{"name": "A", "weight": 50}, {"name": "B", "weight": 50}]},
        ),
        NodeKind("update_contact", schema.UpdateContactNode, starter={"add_tags": []}),
        NodeKind("webhook", schema.WebhookNode, starter={"url": "", "method": "POST"}),
        NodeKind("goal", schema.GoalNode, starter={"otherwise": "continue"}),
        NodeKind("exit", schema.ExitNode, exits=()),
    )
}

# What the "+" menu offers, in its order: (key, label, kind).
PALETTE: tuple[tuple[str, str, str], ...] = (
    ("wait", "Wait (a duration)", "wait:duration"),
    ("wait_time", "Wait until a time of day", "wait:time_of_day"),
    ("wait_event", "Wait for an event", "wait:event"),
    ("send_email", "Send email", "send_email"),
    ("branch", "Branch (yes / no)", "branch"),
    ("split", "A/B split", "split"),
    ("update_contact", "Update contact", "update_contact"),
    ("webhook", "Webhook", "webhook"),
    ("goal", "Goal (checkpoint)", "goal"),
    ("exit", "Exit", "exit"),
)


# --- the API shape ----------------------------------------------------------------------


class NodeTypeOut(BaseModel):
    label: str
    icon: str
    id_base: str = Field(description="New nodes get the ids <id_base>-1, <id_base>-2, ...")


class NodeKindOut(BaseModel):
    type: str
    mode: str | None
    exits: list[str] = Field(description="Keys naming the next node, in the engine's order")
    exit_items: str | None = Field(
        description="A list whose items are exits (their name the label, next the target)"
    )
    fields: list[str] = Field(description="The settings this kind owns")
    starter: dict[str, Any] = Field(description="A new node's settings")
    heading: str | None
    mode_label: str | None


class PaletteEntryOut(BaseModel):
    key: str
    label: str
    kind: str


class NodeKindsOut(BaseModel):
    types: dict[str, NodeTypeOut]
    kinds: dict[str, NodeKindOut] = Field(description="By kind: the type, or wait:<mode>")
    palette: list[PaletteEntryOut] = Field(description='What the editor\'s "+" menu offers')


def node_kinds() -> NodeKindsOut:
    return NodeKindsOut(
        types={
            name: NodeTypeOut(label=t.label, icon=t.icon, id_base=t.id_base)
            for name, t in TYPES.items()
        },
        kinds={
            tag: NodeKindOut(
                type=kind.type,
                mode=kind.mode,
                exits=list(kind.exits),
                exit_items=kind.exit_items,
                fields=kind.fields(),
                starter=kind.starter,
                heading=kind.heading,
                mode_label=kind.mode_label,
            )
            for tag, kind in KINDS.items()
        },
        palette=[PaletteEntryOut(key=k, label=label, kind=kind) for k, label, kind in PALETTE],
    )
