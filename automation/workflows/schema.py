"""The workflow document: trigger, nodes with their exits, settings (docs/workflows.md).

A node names the node each of its exits leads to (``next``; ``yes``/``no`` for a branch;
``happened``/``timed_out`` for a wait for an event; one ``next`` per split path), and the
trigger leads to ``start``. An exit set to null ends the contact's enrolment there.
Conditions (branch, goal, trigger and wait filters) are trees of the segment language,
checked by ``automation.workflows.conditions`` when the document is validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal, assert_never, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    Tag,
    model_serializer,
    model_validator,
)

from automation.addresses import validate_time_zone
from automation.contacts.models import LifecycleStage
from automation.db import BigRowId, PageNumber, RowId
from automation.forms.models import SUBMITTED_EVENT

FORMAT = "nurture.workflow/1"
MAX_NODES = 500

NodeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")]
EventName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")]
TimeZone = Annotated[str, AfterValidator(validate_time_zone)]
Condition = Annotated[
    dict[str, Any],
    Field(description='A segment-language filter tree, {"conditions": [...]} (docs/segments.md)'),
]
PropertyConditions = Annotated[
    list[dict[str, Any]],
    Field(
        description="Conditions on the event's properties, all of which must hold: "
        '[{"property": "total", "operator": "greater_than", "value": 50}]',
        max_length=20,
    ),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _parse_local_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = time.fromisoformat(value)
        except ValueError:
            raise ValueError("expected a local time as HH:MM") from None
        if parsed.tzinfo is not None:
            raise ValueError("a local time has no offset; the contact's time zone applies")
        return parsed.replace(second=0, microsecond=0)
    return value


LocalTime = Annotated[
    time,
    BeforeValidator(_parse_local_time),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class Duration(Strict):
    """Days are calendar days in the contact's time zone (a 09:00 send stays at 09:00
    across a daylight-saving change); hours and minutes are elapsed time."""

    days: int = Field(0, ge=0, le=3650)
    hours: int = Field(0, ge=0, le=100_000)
    minutes: int = Field(0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _positive(self) -> Duration:
        if not (self.days or self.hours or self.minutes):
            raise ValueError("a duration must be longer than zero")
        return self

    def label(self) -> str:
        parts = [
            f"{n} {unit}{'s' if n != 1 else ''}"
            for n, unit in ((self.days, "day"), (self.hours, "hour"), (self.minutes, "minute"))
            if n
        ]
        return " ".join(parts)

    @property
    def elapsed(self) -> timedelta:
        return timedelta(hours=self.hours, minutes=self.minutes)


# --- triggers ----------------------------------------------------------------------------


class EventTrigger(Strict):
    type: Literal["event"]
    event: EventName
    where: PropertyConditions = Field(default_factory=list)


class SegmentTrigger(Strict):
    type: Literal["segment_entered", "segment_left"]
    segment_id: RowId = Field(..., ge=1)


class FieldChangedTrigger(Strict):
    """Fires when a contact field (``lifecycle_stage``) or attribute (``attributes.plan``)
    changes. Leave out ``from`` / ``to`` to accept any old / new value; null means unset."""

    type: Literal["field_changed"]
    field: str = Field(..., min_length=1, max_length=80)
    from_: Any = Field(None, alias="from")
    to: Any = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Leaving out from/to means "any value": keep them out of the stored document.
        data: dict[str, Any] = handler(self)
        for name, key in (("from_", "from"), ("to", "to")):
            if name not in self.model_fields_set:
                data.pop(key, None)
                data.pop(name, None)
        return data

    def matches(self, old: Any, new: Any) -> bool:
        if old == new:
            return False
        if "from_" in self.model_fields_set and old != self.from_:
            return False
        return not ("to" in self.model_fields_set and new != self.to)


class DateTrigger(Strict):
    """``offset_days`` before (negative) or after (positive) a date attribute, at a local
    time: ``{"field": "renewal_date", "offset_days": -7, "time": "09:00"}``."""

    type: Literal["date"]
    field: str = Field(..., min_length=1, max_length=80)
    offset_days: int = Field(0, ge=-3650, le=3650)
    time: LocalTime = time(9, 0)


class AnniversaryTrigger(Strict):
    """Every year on the month and day of a date attribute (a birthday), at a local time."""

    type: Literal["anniversary"]
    field: str = Field(..., min_length=1, max_length=80)
    time: LocalTime = time(9, 0)


class EmailEngagementTrigger(Strict):
    """The contact opened / clicked an email made from the given template (any when null)."""

    type: Literal["email_opened", "email_clicked"]
    template_id: RowId | None = Field(None, ge=1)


class FormTrigger(Strict):
    """A submission of one of Nurture's lead forms, i.e. the ``form.submitted`` event it
    stores: at the submission with single opt-in, at the confirmation with double opt-in
    (only then is the contact subscribed and the event stored). The form is named by
    ``form_id``, which survives a rename, or by its name ``form``, as older documents do."""

    type: Literal["form_submitted"]
    form_id: RowId | None = Field(None, ge=1, description="The form (by id); or give its name")
    form: str | None = Field(
        None, min_length=1, max_length=200, description="The form's name (form_id is preferred)"
    )

    @model_validator(mode="after")
    def _one_form(self) -> FormTrigger:
        if (self.form_id is None) == (self.form is None):
            raise ValueError("name one form: form_id (or its name, form)")
        return self

    @model_serializer(mode="wrap")
    def _omit_unnamed(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Only the way the document names its form is stored, so a document written
        # before form_id existed is stored (and compared with its versions) unchanged.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class ManualTrigger(Strict):
    """Only manual, API or bulk (segment) enrolment. Every workflow accepts those too."""

    type: Literal["manual"]


# The event each event-like trigger listens to (the trigger index is keyed by it).
FORM_EVENT = SUBMITTED_EVENT
EMAIL_EVENTS = {"email_opened": "email.opened", "email_clicked": "email.clicked"}
SEGMENT_EVENTS = {"segment_entered": "segment.entered", "segment_left": "segment.left"}


AnyTrigger = (
    EventTrigger
    | SegmentTrigger
    | FieldChangedTrigger
    | DateTrigger
    | AnniversaryTrigger
    | EmailEngagementTrigger
    | FormTrigger
    | ManualTrigger
)
Trigger = Annotated[AnyTrigger, Field(discriminator="type")]
# The trigger's "type" values, which pydantic puts in error locations (trigger.<type>.field).
TRIGGER_TAGS = frozenset(
    tag for model in get_args(AnyTrigger) for tag in get_args(model.model_fields["type"].annotation)
)


def trigger_event_name(trigger: AnyTrigger) -> str | None:
    """The event an event-like trigger listens to (the trigger index is keyed by it)."""
    match trigger:
        case EventTrigger():
            return trigger.event
        case FormTrigger():
            return FORM_EVENT
        case EmailEngagementTrigger():
            return EMAIL_EVENTS[trigger.type]
        case SegmentTrigger():
            return SEGMENT_EVENTS[trigger.type]
        case FieldChangedTrigger() | DateTrigger() | AnniversaryTrigger() | ManualTrigger():
            return None
        case _:
            assert_never(trigger)


# --- nodes -------------------------------------------------------------------------------


class NodeBase(Strict):
    id: NodeId
    name: str = Field("", max_length=100, description="Shown in the editor and statistics")

    def exits(self) -> dict[str, str | None]:
        """Exit label -> the node it leads to (None ends the enrolment)."""
        return {}

    @property
    def title(self) -> str:
        return self.name or self.id


class SendEmailNode(NodeBase):
    type: Literal["send_email"]
    template_id: RowId = Field(..., ge=1)
    sender_identity_id: RowId | None = Field(None, ge=1)
    next: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"next": self.next}


class WaitBase(NodeBase):
    """What every wait is: a node whose contacts stay until ``nodes.wait_until`` says. A
    ``case WaitBase()`` matches every kind of wait, so a new one needs no new case there."""


class WaitDurationNode(WaitBase):
    type: Literal["wait"]
    mode: Literal["duration"]
    duration: Duration
    next: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"next": self.next}


class WaitTimeOfDayNode(WaitBase):
    """Until the next local ``time`` on one of ``weekdays`` (now, if it is that moment)."""

    type: Literal["wait"]
    mode: Literal["time_of_day"]
    time: LocalTime
    weekdays: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    next: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"next": self.next}


class WaitDateFieldNode(WaitBase):
    """Until ``offset_days`` from a date attribute, at a local time. A date already past,
    or missing, lets the contact through at once."""

    type: Literal["wait"]
    mode: Literal["date_field"]
    field: str = Field(..., min_length=1, max_length=80)
    offset_days: int = Field(0, ge=-3650, le=3650)
    time: LocalTime = time(9, 0)
    next: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"next": self.next}


class WaitEventNode(WaitBase):
    """Until the contact performs ``event`` (``happened``) or ``timeout`` passes
    (``timed_out``), whichever comes first."""

    type: Literal["wait"]
    mode: Literal["event"]
    event: EventName
    where: PropertyConditions = Field(default_factory=list)
    timeout: Duration
    happened: NodeId | None = None
    timed_out: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"happened": self.happened, "timed_out": self.timed_out}


class BranchNode(NodeBase):
    """``yes`` for contacts matching ``condition``, ``no`` for the others. Besides the
    segment language, a condition may test ``{"workflow_email": "opened", "node": ID}``
    (the email sent at node ID) and ``{"webhook": ID, "path": "status", "operator": ...}``."""

    type: Literal["branch"]
    condition: Condition
    yes: NodeId | None = None
    no: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"yes": self.yes, "no": self.no}


class SplitPath(Strict):
    name: str = Field(..., min_length=1, max_length=40)
    weight: float
    next: NodeId | None = None


class SplitNode(NodeBase):
    """Weighted random paths; a contact always takes the same path (hash of contact and
    node), so re-running a batch never moves anyone to another arm."""

    type: Literal["split"]
    paths: list[SplitPath] = Field(..., min_length=2, max_length=10)

    def exits(self) -> dict[str, str | None]:
        return {path.name: path.next for path in self.paths}


class UpdateContactNode(NodeBase):
    type: Literal["update_contact"]
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="first_name, last_name, time_zone, or attributes.<name>; null unsets an "
        "attribute",
    )
    add_tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list
    )
    remove_tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list
    )
    score_change: int = Field(0, ge=-100_000, le=100_000)
    lifecycle_stage: LifecycleStage | None = None
    add_to_lists: list[RowId] = Field(default_factory=list, description="Static segment ids")
    remove_from_lists: list[RowId] = Field(default_factory=list)
    next: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"next": self.next}


class WebhookNode(NodeBase):
    """POST the contact (and ``payload``) to ``url``, signed with the workflow's secret
    (``X-Nurture-Signature``). Failures are retried with exponential backoff; the result
    (``ok``, ``status``, JSON ``body``) is kept for later branches."""

    type: Literal["webhook"]
    url: str = Field(..., min_length=8, max_length=2000, pattern=r"^https?://")
    method: Literal["POST", "PUT"] = "POST"
    payload: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float = Field(10.0, gt=0, le=30)
    max_attempts: int = Field(5, ge=1, le=20)
    retry_backoff_seconds: int = Field(60, ge=1, le=86_400)
    next: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"next": self.next}


class GoalNode(NodeBase):
    """A checkpoint: a contact meeting ``condition`` (or any, without one) counts as
    converted here and goes on; the others go on, end, or wait until they meet it."""

    type: Literal["goal"]
    condition: Condition | None = None
    otherwise: Literal["continue", "end", "wait"] = "continue"
    next: NodeId | None = None

    def exits(self) -> dict[str, str | None]:
        return {"converted": self.next, "not_met": self.next}


class ExitNode(NodeBase):
    type: Literal["exit"]


def _node_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind, mode = value.get("type"), value.get("mode")
    else:
        kind, mode = getattr(value, "type", None), getattr(value, "mode", None)
    if kind == "wait":
        return f"wait:{mode}"
    return kind if isinstance(kind, str) else None


Node = Annotated[
    Annotated[SendEmailNode, Tag("send_email")]
    | Annotated[WaitDurationNode, Tag("wait:duration")]
    | Annotated[WaitTimeOfDayNode, Tag("wait:time_of_day")]
    | Annotated[WaitDateFieldNode, Tag("wait:date_field")]
    | Annotated[WaitEventNode, Tag("wait:event")]
    | Annotated[BranchNode, Tag("branch")]
    | Annotated[SplitNode, Tag("split")]
    | Annotated[UpdateContactNode, Tag("update_contact")]
    | Annotated[WebhookNode, Tag("webhook")]
    | Annotated[GoalNode, Tag("goal")]
    | Annotated[ExitNode, Tag("exit")],
    Discriminator(
        _node_kind,
        custom_error_type="node_type",
        custom_error_message="unknown node type; use send_email, wait (mode duration, "
        "time_of_day, date_field or event), branch, split, update_contact, webhook, goal or exit",
    ),
]

# The same closed unions for the type checker: code that does something per node kind
# matches on these with ``case _: assert_never(node)``, so mypy names every place a new kind
# must reach (the engine's executors, the dry run, validation, the editor's kinds.py).
WaitNode = WaitDurationNode | WaitTimeOfDayNode | WaitDateFieldNode | WaitEventNode
WorkflowNode = (
    SendEmailNode
    | WaitNode
    | BranchNode
    | SplitNode
    | UpdateContactNode
    | WebhookNode
    | GoalNode
    | ExitNode
)
WAIT_NODES = (WaitDurationNode, WaitTimeOfDayNode, WaitDateFieldNode, WaitEventNode)
# The discriminator tags of Node (a type, or wait:<mode>), read from the union itself.
NODE_TAGS = frozenset(
    meta.tag
    for member in get_args(get_args(Node)[0])
    for meta in get_args(member)[1:]
    if isinstance(meta, Tag)
)

# --- settings ----------------------------------------------------------------------------


class Reentry(Strict):
    """once: a contact goes through at most once; always: again whenever the trigger fires
    and they are not in it; cooldown: again once ``cooldown`` has passed since they entered."""

    mode: Literal["once", "always", "cooldown"] = "once"
    cooldown: Duration | None = None

    @model_validator(mode="after")
    def _cooldown_given(self) -> Reentry:
        if self.mode == "cooldown" and self.cooldown is None:
            raise ValueError("re-entry after a cool-down needs a cooldown duration")
        return self


class Goal(Strict):
    """A contact who meets it leaves at once, wherever they are, counted as converted:
    ``event`` performed after enrolling (whose properties meet ``event_where``), or a
    ``condition`` on the contact (segment language)."""

    event: EventName | None = None
    event_where: PropertyConditions = Field(default_factory=list)
    condition: Condition | None = None

    @model_validator(mode="after")
    def _something(self) -> Goal:
        if self.event is None and self.condition is None:
            raise ValueError("a goal needs an event or a condition")
        return self


class TimeWindow(Strict):
    """From ``start`` to ``end`` local time; may wrap midnight (21:00 to 08:00)."""

    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class SendWindow(TimeWindow):
    weekdays: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)


class WorkflowSettings(Strict):
    reentry: Reentry = Field(default_factory=Reentry)
    goal: Goal | None = None
    quiet_hours: TimeWindow | None = Field(None, description="No email between these times")
    send_window: SendWindow | None = Field(None, description="Email only in these hours/days")
    fallback_time_zone: TimeZone = Field(
        "UTC", description="Used for contacts whose time zone is not known (unset or 'UTC')"
    )
    priority: int = Field(5, ge=1, le=10, description="For the global frequency cap; 10 wins")


class WorkflowDefinition(Strict):
    """What a version holds; also the export / import format (plus ``format``)."""

    format: Literal["nurture.workflow/1"] = "nurture.workflow/1"
    name: str = Field(..., min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    trigger: Trigger
    start: NodeId | None = Field(None, description="The node the trigger leads to")
    nodes: list[Node] = Field(default_factory=list, max_length=MAX_NODES)
    settings: WorkflowSettings = Field(default_factory=WorkflowSettings)


# --- API shapes --------------------------------------------------------------------------


class WorkflowSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: str
    trigger_type: str
    active_version: int | None = Field(description="Number of the version new contacts enter")
    created_at: datetime
    updated_at: datetime


class WorkflowOut(WorkflowSummary):
    definition: dict[str, Any] = Field(description="The draft (the next version to publish)")
    webhook_secret: str = Field(description="Verifies X-Nurture-Signature on webhook calls")
    has_unpublished_changes: bool


class VersionOut(BaseModel):
    id: int
    number: int
    definition: dict[str, Any]
    published_at: datetime
    published_by_id: int | None


class ValidationOut(BaseModel):
    valid: bool
    errors: list[dict[str, str]]


class WorkflowDocumentIn(BaseModel):
    """A workflow document (see WorkflowDefinition). Accepted as-is and validated by the
    workflow validator, whose errors name the node they are about."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return WorkflowDefinition.model_json_schema(*args, **kwargs)

    def document(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MigrationIn(Strict):
    from_version: RowId = Field(..., ge=1)
    to_version: RowId | None = Field(None, ge=1, description="Default: the active version")
    node_map: dict[str, str] = Field(
        default_factory=dict, description="Old node id -> new node id; same ids map by default"
    )


class MoveOut(BaseModel):
    from_node: str
    from_name: str
    to_node: str
    to_name: str
    waiting: int
    pending: int
    message: str


class MigrationOut(BaseModel):
    from_version: int
    to_version: int
    contacts: int
    moves: list[MoveOut]
    applied: bool


class EnrollIn(Strict):
    contact_ids: list[BigRowId] = Field(default_factory=list, max_length=10_000)
    emails: list[str] = Field(
        default_factory=list, max_length=10_000, description="Enrol contacts by email address"
    )
    segment_id: RowId | None = Field(None, ge=1, description="Enrol every member of a segment")


class EnrollOut(BaseModel):
    enrolled: int


class EnrollmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    contact_id: int
    workflow_version_id: int
    status: str
    current_node: str | None
    waiting_since: datetime | None
    next_run_at: datetime | None
    enrolled_at: datetime
    converted_at: datetime | None
    finished_at: datetime | None


class EnrollmentQuery(Strict):
    status: str | None = None
    page: PageNumber = Field(1, ge=1)
    per_page: int = Field(50, ge=1, le=500)


class VersionQuery(Strict):
    version: RowId | None = Field(None, ge=1)


class ImportQuery(Strict):
    publish: bool = False


class TimelineEventIn(Strict):
    at: datetime
    name: EventName
    properties: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aware(self) -> TimelineEventIn:
        if self.at.tzinfo is None:
            raise ValueError("at needs a time zone offset, e.g. Z")
        return self


class DryRunIn(Strict):
    contact_id: BigRowId
    timeline: list[TimelineEventIn] = Field(default_factory=list, max_length=500)
    start_at: datetime | None = Field(None, description="When the contact enters; default now")
    version: RowId | None = Field(None, ge=1, description="A published version; default the draft")
    horizon_days: int = Field(120, ge=1, le=1000)


@dataclass
class DryRunStep:
    """One node a dry run passed: when (UTC and the contact's local time), which, by which
    exit. The dry run builds these and the API returns them as they are."""

    at: datetime
    local_time: str
    node_id: str
    name: str
    type: str
    exit: str | None
    note: str = ""


@dataclass
class DryRunEmail:
    at: datetime
    local_time: str
    node_id: str
    template_id: int


class DryRunOut(BaseModel):
    outcome: str
    steps: list[DryRunStep]
    emails: list[DryRunEmail]


class NodeStatsOut(BaseModel):
    node_id: str
    name: str
    type: str
    entered: int
    waiting: int
    completed: int
    exited: int
    converted: int
    exits: dict[str, int]
    email: dict[str, int] | None = None


class StatsOut(BaseModel):
    workflow_id: int
    version: int | None
    totals: dict[str, int]
    nodes: list[NodeStatsOut]
