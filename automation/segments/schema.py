"""The filter tree: its JSON shape (pydantic models) and the rules that need the field catalog.

A tree is ``{"conditions": [node, ...]}`` (all must hold). A node is a group (``all``,
``any``, ``not``) or a leaf: ``field``, ``tags``, ``event``, ``last_performed``, ``email``
or ``segment``. docs/segments.md is the reference with examples. Parsing happens in two
steps, both reporting errors at JSON paths such as ``conditions[2].any[0].operator``:
``Filter.model_validate`` checks the shape; ``check_filter`` checks the names, operators
and values against the declared fields and the referenced segments.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from automation.contacts.models import ContactStatus, FieldType, LifecycleStage
from automation.errors import FieldError, InvalidInput, field_errors, join_path
from automation.segments.models import SegmentKind

MAX_DEPTH = 8  # groups nested inside groups
MAX_NODES = 300  # conditions and groups in one tree
MAX_VALUES = 1000  # values in one in / not_in list
MAX_TEXT = 2000
MAX_DAYS = 36_500
MAX_SEGMENT_CHAIN = 8  # segment conditions referring to segments referring to segments ...
TOO_DEEP = "~too_deep"  # "~": left out of error paths, like union tags


class Operator(enum.StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    IN = "in"
    NOT_IN = "not_in"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    GREATER_THAN = "greater_than"
    GREATER_OR_EQUAL = "greater_or_equal"
    LESS_THAN = "less_than"
    LESS_OR_EQUAL = "less_or_equal"
    BETWEEN = "between"
    IS_SET = "is_set"
    IS_NOT_SET = "is_not_set"
    WITHIN_LAST_DAYS = "within_last_days"
    MORE_THAN_DAYS_AGO = "more_than_days_ago"
    IN_NEXT_DAYS = "in_next_days"
    ANNIVERSARY_TODAY = "anniversary_today"


class ValueType(enum.StrEnum):
    TEXT = "text"
    CHOICE = "choice"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"  # a calendar date, "YYYY-MM-DD"; relative operators use the contact's zone
    DATETIME = "datetime"  # an instant, stored in UTC


Op = Operator
_EQUALITY = (Op.EQUALS, Op.NOT_EQUALS, Op.IN, Op.NOT_IN)
_ORDER = (Op.GREATER_THAN, Op.GREATER_OR_EQUAL, Op.LESS_THAN, Op.LESS_OR_EQUAL, Op.BETWEEN)
_RELATIVE = (Op.WITHIN_LAST_DAYS, Op.MORE_THAN_DAYS_AGO, Op.IN_NEXT_DAYS)
_PRESENCE = (Op.IS_SET, Op.IS_NOT_SET)
_TEXT_MATCH = (Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH)

OPERATORS: dict[ValueType, tuple[Operator, ...]] = {
    ValueType.TEXT: (*_EQUALITY, *_TEXT_MATCH, *_PRESENCE),
    ValueType.CHOICE: (*_EQUALITY, *_PRESENCE),
    ValueType.NUMBER: (*_EQUALITY, *_ORDER, *_PRESENCE),
    ValueType.BOOLEAN: (Op.EQUALS, Op.NOT_EQUALS, *_PRESENCE),
    ValueType.DATE: (*_EQUALITY, *_ORDER, *_RELATIVE, Op.ANNIVERSARY_TODAY, *_PRESENCE),
    ValueType.DATETIME: (*_ORDER, *_RELATIVE, *_PRESENCE),
}
# Event properties have no declared type: the value given decides (text, number, boolean).
PROPERTY_OPERATORS = (*_EQUALITY, *_TEXT_MATCH, *_ORDER, *_PRESENCE)
NO_VALUE = (Op.IS_SET, Op.IS_NOT_SET, Op.ANNIVERSARY_TODAY)
NEGATIVE = {
    Op.NOT_EQUALS: Op.EQUALS,
    Op.NOT_IN: Op.IN,
    Op.NOT_CONTAINS: Op.CONTAINS,
    Op.IS_NOT_SET: Op.IS_SET,
}


@dataclass(frozen=True)
class FieldSpec:
    """A field a condition can name: a contacts column or a declared custom attribute."""

    name: str
    type: ValueType
    column: str | None = None  # contacts column; None for custom attributes
    attribute: str | None = None  # key in contacts.attributes
    options: tuple[str, ...] = ()
    # A custom attribute whose expression index is built (PostgreSQL): the compiler then
    # emits that index's expression (automation/segments/field_indexes.py).
    indexed: bool = False


def _core(name: str, kind: ValueType, options: tuple[str, ...] = ()) -> FieldSpec:
    return FieldSpec(name, kind, column=name, options=options)


CORE_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        _core("email", ValueType.TEXT),
        _core("first_name", ValueType.TEXT),
        _core("last_name", ValueType.TEXT),
        _core("external_id", ValueType.TEXT),
        _core("source", ValueType.TEXT),
        _core("time_zone", ValueType.TEXT),
        _core("status", ValueType.CHOICE, tuple(s.value for s in ContactStatus)),
        _core("lifecycle_stage", ValueType.CHOICE, tuple(s.value for s in LifecycleStage)),
        _core("score", ValueType.NUMBER),
        _core("emails_sent", ValueType.NUMBER),
        _core("opens", ValueType.NUMBER),
        _core("clicks", ValueType.NUMBER),
        _core("engagement_score", ValueType.NUMBER),
        _core("created_at", ValueType.DATETIME),
        _core("updated_at", ValueType.DATETIME),
        _core("confirmed_at", ValueType.DATETIME),
        _core("last_open_at", ValueType.DATETIME),
        _core("last_click_at", ValueType.DATETIME),
    )
}
ATTRIBUTE_PREFIX = "attributes."
CUSTOM_TYPES = {
    FieldType.TEXT: ValueType.TEXT,
    FieldType.NUMBER: ValueType.NUMBER,
    FieldType.DATE: ValueType.DATE,
    FieldType.BOOLEAN: ValueType.BOOLEAN,
    FieldType.CHOICE: ValueType.CHOICE,
}


def attribute_spec(
    name: str, kind: FieldType, options: list[str] | tuple[str, ...], *, indexed: bool = False
) -> FieldSpec:
    return FieldSpec(
        ATTRIBUTE_PREFIX + name,
        CUSTOM_TYPES[kind],
        attribute=name,
        options=tuple(options),
        indexed=indexed,
    )


# --- the tree's shape ------------------------------------------------------------------

EventName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")
]
TagName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
# Dotted path into event properties ("product.sku"). Keys are plain and never start with a
# digit, so they mean the same JSON path on both databases (PostgreSQL reads "0" as an index).
PropertyPath = Annotated[
    str,
    StringConstraints(
        max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*){0,4}$"
    ),
]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Instant = Annotated[datetime, AfterValidator(_aware)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class CountOperator(enum.StrEnum):
    PERFORMED = "performed"  # at least once
    NOT_PERFORMED = "not_performed"
    AT_LEAST = "at_least"
    AT_MOST = "at_most"
    EXACTLY = "exactly"


class TagOperator(enum.StrEnum):
    HAS_ANY = "has_any"
    HAS_ALL = "has_all"
    HAS_NONE = "has_none"  # has not any of
    HAS_NOT_ALL = "has_not_all"  # lacks at least one of


class EmailActivity(enum.StrEnum):
    RECEIVED = "received"
    OPENED = "opened"
    CLICKED = "clicked"
    RECEIVED_NOT_OPENED = "received_not_opened"


class FieldCondition(Strict):
    field: str = Field(..., max_length=120, description="A contact field or attributes.<name>")
    operator: Operator
    value: Any = None


class PropertyCondition(Strict):
    property: PropertyPath = Field(..., description="Event property, dotted for nested keys")
    operator: Operator
    value: Any = None


class Window(Strict):
    within_days: int | None = Field(
        None, ge=0, le=MAX_DAYS, description="Only events of the last N days (to now)"
    )
    since: Instant | None = Field(None, description="Only events from this instant on")


INCLUDE_MACHINE_DOC = (
    "Also count machine opens/clicks (privacy proxies, scanners); only email.opened and "
    "email.clicked carry them"
)


class EventCondition(Window):
    event: EventName
    where: tuple[PropertyCondition, ...] = Field((), max_length=20)
    operator: CountOperator = CountOperator.PERFORMED
    times: int | None = Field(None, ge=0, le=1_000_000)
    include_machine: bool = Field(False, description=INCLUDE_MACHINE_DOC)


class LastPerformedCondition(Strict):
    last_performed: EventName
    where: tuple[PropertyCondition, ...] = Field((), max_length=20)
    operator: Operator
    value: Any = None
    include_machine: bool = Field(False, description=INCLUDE_MACHINE_DOC)


class EmailCondition(Window):
    email: EmailActivity
    template_id: int | None = Field(None, ge=1)
    campaign_id: int | None = Field(None, ge=1)
    workflow_id: int | None = Field(None, ge=1)
    operator: CountOperator = CountOperator.PERFORMED
    times: int | None = Field(None, ge=0, le=1_000_000)
    include_machine: bool = Field(False, description=INCLUDE_MACHINE_DOC)


class TagCondition(Strict):
    tags: tuple[TagName, ...] = Field(..., min_length=1, max_length=100)
    operator: TagOperator = TagOperator.HAS_ANY


class SegmentCondition(Strict):
    segment: int = Field(..., ge=1, description="Member of this segment or list (by id)")


class AllGroup(Strict):
    all: tuple[Node, ...] = Field(..., min_length=1, max_length=MAX_NODES)


class AnyGroup(Strict):
    any: tuple[Node, ...] = Field(..., min_length=1, max_length=MAX_NODES)


class NotGroup(Strict):
    not_: Node = Field(..., alias="not")


class _TooDeep(Strict):
    """Stands in for a node nested beyond MAX_DEPTH, so the error lands on its path."""

    too_deep: int = Field(..., alias=TOO_DEEP)

    @field_validator("too_deep")
    @classmethod
    def _refuse(cls, value: int) -> int:
        raise ValueError(f"groups are nested deeper than {MAX_DEPTH} levels")


Leaf = (
    FieldCondition
    | TagCondition
    | EventCondition
    | LastPerformedCondition
    | EmailCondition
    | SegmentCondition
)
_KINDS: dict[str, type[BaseModel]] = {
    "all": AllGroup,
    "any": AnyGroup,
    "not": NotGroup,
    "field": FieldCondition,
    "tags": TagCondition,
    "event": EventCondition,
    "last_performed": LastPerformedCondition,
    "email": EmailCondition,
    "segment": SegmentCondition,
    TOO_DEEP: _TooDeep,
}
_TAG_OF = {model: "~" + key for key, model in _KINDS.items()}  # "~": stripped from error paths


def _node_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return _TAG_OF.get(type(value))
    if isinstance(value, dict):
        return next(("~" + key for key in _KINDS if key in value), None)
    return None


Node = Annotated[
    Annotated[AllGroup, Tag("~all")]
    | Annotated[AnyGroup, Tag("~any")]
    | Annotated[NotGroup, Tag("~not")]
    | Annotated[FieldCondition, Tag("~field")]
    | Annotated[TagCondition, Tag("~tags")]
    | Annotated[EventCondition, Tag("~event")]
    | Annotated[LastPerformedCondition, Tag("~last_performed")]
    | Annotated[EmailCondition, Tag("~email")]
    | Annotated[SegmentCondition, Tag("~segment")]
    | Annotated[_TooDeep, Tag("~" + TOO_DEEP), SkipJsonSchema()],
    Discriminator(
        _node_kind,
        custom_error_type="invalid_condition",
        custom_error_message=(
            "a condition is an object with one of the keys all, any, not, field, tags, "
            "event, last_performed, email, segment"
        ),
    ),
]


def _limit_nesting(raw: Any) -> Any:
    """A copy of the raw ``conditions`` list where nodes nested too deep are replaced by a
    marker, so validation never recurses far and the error names the offending path."""
    count = 0

    def walk(node: Any, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise ValueError(f"a filter holds at most {MAX_NODES} conditions and groups")
        if not isinstance(node, dict):
            return node
        if depth > MAX_DEPTH:
            return {TOO_DEEP: depth}
        out = dict(node)
        for key in ("all", "any"):
            if isinstance(node.get(key), list):
                out[key] = [walk(child, depth + 1) for child in node[key]]
        if "not" in node:
            out["not"] = walk(node["not"], depth + 1)
        return out

    if not isinstance(raw, list):
        return raw
    return [walk(node, 1) for node in raw]


class CarriesConditions(Strict):
    """Base of every model with a filter tree under ``conditions``: limits its nesting
    before validation recurses into it."""

    @field_validator("conditions", mode="before", check_fields=False)
    @classmethod
    def _nesting(cls, value: Any) -> Any:
        return _limit_nesting(value)


CONDITIONS_DOC = "All of these must hold; see docs/segments.md for every node type"


class Filter(CarriesConditions):
    """A complete filter tree: ``{"conditions": [...]}``."""

    conditions: tuple[Node, ...] = Field(
        ..., min_length=1, max_length=MAX_NODES, description=CONDITIONS_DOC
    )

    def as_json(self) -> dict[str, Any]:
        """The canonical JSON form (what is stored): defaults and nulls left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


for _model in (AllGroup, AnyGroup, NotGroup, Filter):
    _model.model_rebuild()


def parse_filter(raw: Any) -> Filter:
    """The tree's shape checked (names, operators and values are checked by check_filter)."""
    if isinstance(raw, Filter):
        return raw
    if not isinstance(raw, dict):
        raise InvalidInput(FieldError("conditions", 'expected {"conditions": [...]}'))
    try:
        return Filter.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc) or [FieldError("conditions", "invalid")]) from None


Path = tuple[str | int, ...]

# --- values -----------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_date_text(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def parse_instant(value: Any) -> datetime:
    """An aware UTC datetime from an ISO string with an offset, or a date (midnight UTC)."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO date or date-time")
    if is_date_text(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("expected an ISO date or date-time, e.g. 2026-01-31T09:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("a date-time needs a time zone offset, e.g. Z")
    return parsed.astimezone(UTC)


def property_kind(value: Any) -> ValueType | None:
    """The type an event property comparison takes from its value."""
    if isinstance(value, bool):
        return ValueType.BOOLEAN
    if is_number(value):
        return ValueType.NUMBER
    if isinstance(value, str):
        return ValueType.TEXT
    return None


def _scalar_error(kind: ValueType, options: tuple[str, ...], value: Any) -> str | None:
    if kind is ValueType.TEXT:
        if not isinstance(value, str):
            return "expected text"
        return f"text longer than {MAX_TEXT} characters" if len(value) > MAX_TEXT else None
    if kind is ValueType.CHOICE:
        if not isinstance(value, str):
            return "expected text"
        if options and value not in options:
            return f"expected one of {', '.join(options)}"
        return None
    if kind is ValueType.NUMBER:
        return None if is_number(value) else "expected a number"
    if kind is ValueType.BOOLEAN:
        return None if isinstance(value, bool) else "expected true or false"
    if kind is ValueType.DATE:
        return None if is_date_text(value) else "expected a date as YYYY-MM-DD"
    try:
        parse_instant(value)
    except ValueError as exc:
        return str(exc)
    return None


def _ordered(kind: ValueType, low: Any, high: Any) -> bool:
    if kind is ValueType.DATETIME:
        return parse_instant(low) <= parse_instant(high)
    return bool(low <= high)


def value_errors(
    kind: ValueType, options: tuple[str, ...], operator: Operator, value: Any
) -> list[tuple[tuple[str | int, ...], str]]:
    """(sub-path, message) for a value that does not fit the operator and the type."""
    if operator in NO_VALUE:
        return [] if value is None else [(("value",), f"{operator.value} takes no value")]
    if operator in _RELATIVE:
        if not isinstance(value, int) or isinstance(value, bool):
            return [(("value",), "expected a whole number of days")]
        if not 0 <= value <= MAX_DAYS:
            return [(("value",), f"expected 0 to {MAX_DAYS} days")]
        return []
    if operator in (Op.IN, Op.NOT_IN):
        if not isinstance(value, list) or not value:
            return [(("value",), "expected a non-empty list")]
        if len(value) > MAX_VALUES:
            return [(("value",), f"at most {MAX_VALUES} values")]
        return [
            (("value", i), message)
            for i, item in enumerate(value)
            if (message := _scalar_error(kind, options, item))
        ]
    if operator is Op.BETWEEN:
        if not isinstance(value, list) or len(value) != 2:
            return [(("value",), "expected [low, high]")]
        errors: list[tuple[Path, str]] = [
            (("value", i), message)
            for i, item in enumerate(value)
            if (message := _scalar_error(kind, options, item))
        ]
        if not errors and not _ordered(kind, value[0], value[1]):
            errors.append((("value",), "low is greater than high"))
        return errors
    if operator in _TEXT_MATCH:
        if not isinstance(value, str) or not value:
            return [(("value",), "expected non-empty text")]
        return [(("value",), f"text longer than {MAX_TEXT}")] if len(value) > MAX_TEXT else []
    message = _scalar_error(kind, options, value)
    return [(("value",), message)] if message else []


def property_value_kind(operator: Operator, value: Any) -> ValueType | None:
    """The comparison type of a (valid) property condition; None for is_set / is_not_set."""
    if operator in NO_VALUE:
        return None
    if operator in _TEXT_MATCH:
        return ValueType.TEXT
    sample = value[0] if isinstance(value, list) and value else value
    return property_kind(sample)


def property_errors(cond: PropertyCondition) -> list[tuple[tuple[str | int, ...], str]]:
    if cond.operator not in PROPERTY_OPERATORS:
        allowed = ", ".join(o.value for o in PROPERTY_OPERATORS)
        return [(("operator",), f"not valid for event properties; use one of {allowed}")]
    if cond.operator in NO_VALUE or cond.operator in _TEXT_MATCH:
        return value_errors(ValueType.TEXT, (), cond.operator, cond.value)
    sample = cond.value[0] if isinstance(cond.value, list) and cond.value else cond.value
    kind = property_kind(sample)
    if kind is None:
        return [(("value",), "expected text, a number or true/false")]
    if kind is ValueType.BOOLEAN and cond.operator in _ORDER:
        return [(("value",), "compare text or numbers, not true/false")]
    return value_errors(kind, (), cond.operator, cond.value)


# --- checks that need the catalog -------------------------------------------------------


@dataclass(frozen=True)
class SegmentRef:
    id: int
    name: str
    dynamic: bool
    tree: Filter | None  # None for static lists (and for definitions that no longer parse)


@dataclass
class Catalog:
    """What names in a tree can refer to: fields and segments (loaded by context.py)."""

    fields: dict[str, FieldSpec]
    segments: dict[int, SegmentRef] = field(default_factory=dict)
    # Tag ids by name, for the names looked up; a name looked up but absent has no tag.
    # Ids let PostgreSQL estimate tag conditions from contact_tags statistics.
    tag_ids: dict[str, int] = field(default_factory=dict)
    tags_looked_up: set[str] = field(default_factory=set)

    def field_spec(self, name: str) -> FieldSpec | None:
        return self.fields.get(name)


def walk(
    conditions: tuple[Node, ...], prefix: Path = ("conditions",)
) -> Iterator[tuple[Path, Any]]:
    """Every node of a tree with its JSON path, parents before children."""
    stack: list[tuple[Path, Any]] = [
        ((*prefix, i), node) for i, node in reversed(list(enumerate(conditions)))
    ]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, AllGroup | AnyGroup):
            key = "all" if isinstance(node, AllGroup) else "any"
            children = node.all if isinstance(node, AllGroup) else node.any
            stack.extend(((*path, key, i), c) for i, c in reversed(list(enumerate(children))))
        elif isinstance(node, NotGroup):
            stack.append(((*path, "not"), node.not_))


def _count_errors(
    node: EventCondition | EmailCondition,
) -> list[tuple[Path, str]]:
    errors: list[tuple[Path, str]] = []
    counted = node.operator in (
        CountOperator.AT_LEAST,
        CountOperator.AT_MOST,
        CountOperator.EXACTLY,
    )
    if counted and node.times is None:
        errors.append((("times",), f"{node.operator.value} needs times"))
    if not counted and node.times is not None:
        errors.append((("times",), "times goes with at_least, at_most or exactly"))
    if node.within_days is not None and node.since is not None:
        errors.append((("since",), "give within_days or since, not both"))
    return errors


def check_filter(
    tree: Filter,
    catalog: Catalog,
    *,
    segment_id: int | None = None,
    prefix: Path = ("conditions",),
) -> list[FieldError]:
    """Errors for unknown names, operators that do not fit the field's type, ill-typed
    values and segment references that are missing or lead back to ``segment_id``."""
    errors: list[FieldError] = []

    def add(path: Path, sub: Path, message: str) -> None:
        errors.append(FieldError(join_path(path + sub), message))

    for path, node in walk(tree.conditions, prefix):
        if isinstance(node, FieldCondition):
            spec = catalog.field_spec(node.field)
            if spec is None:
                add(path, ("field",), _unknown_field(node.field, catalog))
                continue
            allowed = OPERATORS[spec.type]
            if node.operator not in allowed:
                add(
                    path,
                    ("operator",),
                    f"{node.operator.value} is not valid for a {spec.type.value} field; "
                    f"use one of {', '.join(o.value for o in allowed)}",
                )
                continue
            for sub, message in value_errors(spec.type, spec.options, node.operator, node.value):
                add(path, sub, message)
        elif isinstance(node, EventCondition | EmailCondition):
            for sub, message in _count_errors(node):
                add(path, sub, message)
            if isinstance(node, EmailCondition):
                if node.email is EmailActivity.RECEIVED_NOT_OPENED and node.operator not in (
                    CountOperator.PERFORMED,
                ):
                    add(path, ("operator",), "received_not_opened takes no count")
            else:
                for i, cond in enumerate(node.where):
                    for sub, message in property_errors(cond):
                        add(path, ("where", i, *sub), message)
        elif isinstance(node, LastPerformedCondition):
            for i, cond in enumerate(node.where):
                for sub, message in property_errors(cond):
                    add(path, ("where", i, *sub), message)
            allowed = OPERATORS[ValueType.DATETIME]
            if node.operator not in allowed:
                add(
                    path,
                    ("operator",),
                    f"{node.operator.value} is not valid for a date-time; use one of "
                    + ", ".join(o.value for o in allowed),
                )
                continue
            for sub, message in value_errors(ValueType.DATETIME, (), node.operator, node.value):
                add(path, sub, message)
        elif isinstance(node, SegmentCondition):
            problem = _reference_error(node.segment, catalog, segment_id)
            if problem:
                add(path, ("segment",), problem)
    return errors


def _unknown_field(name: str, catalog: Catalog) -> str:
    if name.startswith(ATTRIBUTE_PREFIX):
        declared = sorted(s.attribute for s in catalog.fields.values() if s.attribute is not None)
        return "no custom field named {!r}; declared: {}".format(
            name.removeprefix(ATTRIBUTE_PREFIX), ", ".join(declared) or "none"
        )
    return f"unknown field {name!r}; use a contact field ({', '.join(CORE_FIELDS)}) or " + (
        "attributes.<custom field>"
    )


def tag_names(tree: Filter) -> set[str]:
    return {
        t for _, node in walk(tree.conditions) if isinstance(node, TagCondition) for t in node.tags
    }


def referenced_segments(tree: Filter) -> list[int]:
    return [node.segment for _, node in walk(tree.conditions) if isinstance(node, SegmentCondition)]


def _reference_error(target: int, catalog: Catalog, origin: int | None) -> str | None:
    """Why a reference to ``target`` is not allowed, or None."""
    ref = catalog.segments.get(target)
    if ref is None:
        return f"no segment with id {target}"
    if origin is not None and target == origin:
        return "a segment cannot refer to itself"
    # Depth-first search for a path back to the origin, or a cycle among the others.
    trail: list[int] = [target]

    def visit(segment: int) -> str | None:
        current = catalog.segments.get(segment)
        if current is None or current.tree is None:
            return None
        for nxt in referenced_segments(current.tree):
            names = " → ".join(_name(catalog, s) for s in [*trail, nxt])
            if nxt == origin:
                return f"reference cycle: this segment → {names}"
            if nxt in trail:
                return f"reference cycle: {names}"
            if len(trail) >= MAX_SEGMENT_CHAIN:
                return f"segments refer to each other more than {MAX_SEGMENT_CHAIN} levels deep"
            trail.append(nxt)
            found = visit(nxt)
            if found:
                return found
            trail.pop()
        return None

    return visit(target)


def _name(catalog: Catalog, segment_id: int) -> str:
    ref = catalog.segments.get(segment_id)
    return f"{ref.name!r} ({segment_id})" if ref else str(segment_id)


def ensure_valid(raw: Any, catalog: Catalog, *, segment_id: int | None = None) -> Filter:
    """Parse and check a tree in one go; InvalidInput lists every error with its path."""
    tree = parse_filter(raw)
    errors = check_filter(tree, catalog, segment_id=segment_id)
    if errors:
        raise InvalidInput(errors)
    return tree


# --- API shapes -------------------------------------------------------------------------

SegmentName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class SegmentIn(CarriesConditions):
    name: SegmentName
    description: str = Field("", max_length=2000)
    kind: SegmentKind = Field(
        SegmentKind.DYNAMIC, description="dynamic: members follow conditions; static: a list"
    )
    conditions: tuple[Node, ...] | None = Field(
        None, min_length=1, max_length=MAX_NODES, description=CONDITIONS_DOC
    )


class SegmentPatch(CarriesConditions):
    name: SegmentName | None = None
    description: str | None = Field(None, max_length=2000)
    conditions: tuple[Node, ...] | None = Field(
        None, min_length=1, max_length=MAX_NODES, description=CONDITIONS_DOC
    )


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    kind: SegmentKind
    conditions: list[dict[str, Any]] | None
    member_count: int = Field(description="Members at the last refresh or list change")
    refreshed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SampleIn(Filter):
    size: int = Field(20, ge=1, le=100)


class ExplainIn(Filter):
    contact_id: int = Field(..., ge=1)


class SizeQuery(Strict):
    size: int = Field(20, ge=1, le=100)


class MemberMode(enum.StrEnum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


class MembersIn(Strict):
    mode: MemberMode = MemberMode.ADD
    contact_ids: list[int] = Field(default_factory=list, max_length=10_000)
    emails: list[str] = Field(default_factory=list, max_length=10_000)


class MembersOut(BaseModel):
    entered: int
    left: int
    member_count: int
    unknown: list[str] = Field(
        default_factory=list, description="Emails or ids (up to 100) matching no contact"
    )
    unknown_count: int = 0


class CountOut(BaseModel):
    count: int


class ValidOut(BaseModel):
    valid: bool
    conditions: list[dict[str, Any]] = Field(description="The tree in canonical form")


class RefreshOut(BaseModel):
    segment_id: int
    entered: int
    left: int
    member_count: int


class ExplainNode(BaseModel):
    path: str
    kind: str
    result: bool
    observed: dict[str, Any] = Field(default_factory=dict)
    children: list[ExplainNode] = Field(default_factory=list)


class ExplainOut(BaseModel):
    contact_id: int
    matches: bool
    conditions: list[ExplainNode]
