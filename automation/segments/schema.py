"""The filter tree's shape: its JSON form as pydantic models, parsed with errors at JSON paths.

A tree is ``{"conditions": [node, ...]}`` (all must hold). A node is a group (``all``,
``any``, ``not``) or a leaf: ``field``, ``tags``, ``event``, ``last_performed``, ``email``
or ``segment``. docs/segments.md is the reference with examples. Parsing happens in two
steps, both reporting errors at JSON paths such as ``conditions[2].any[0].operator``:
``parse_filter`` checks the shape; ``catalog.check_filter`` checks the names, operators
and values against the declared fields and the referenced segments.

Code that does something per node kind matches on the node and ends in
``case _: assert_never(node)``, so mypy names every place a new kind must reach: ``walk``
here, ``check_filter``, the compiler's ``Compiler.node`` and the evaluator's
``Evaluator.node``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, assert_never

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

from automation.db import RowId
from automation.errors import FieldError, InvalidInput, field_errors
from automation.segments.fields import Operator

MAX_DEPTH = 8  # groups nested inside groups
MAX_NODES = 300  # conditions and groups in one tree
MAX_DAYS = 36_500
TOO_DEEP = "~too_deep"  # "~": left out of error paths, like union tags

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
    template_id: RowId | None = Field(None, ge=1)
    campaign_id: RowId | None = Field(None, ge=1)
    workflow_id: RowId | None = Field(None, ge=1)
    operator: CountOperator = CountOperator.PERFORMED
    times: int | None = Field(None, ge=0, le=1_000_000)
    include_machine: bool = Field(False, description=INCLUDE_MACHINE_DOC)


class TagCondition(Strict):
    tags: tuple[TagName, ...] = Field(..., min_length=1, max_length=100)
    operator: TagOperator = TagOperator.HAS_ANY


class SegmentCondition(Strict):
    segment: RowId = Field(..., ge=1, description="Member of this segment or list (by id)")


class AllGroup(Strict):
    all: tuple[Node, ...] = Field(..., min_length=1, max_length=MAX_NODES)


class AnyGroup(Strict):
    any: tuple[Node, ...] = Field(..., min_length=1, max_length=MAX_NODES)


class NotGroup(Strict):
    not_: Node = Field(..., alias="not")


class TooDeep(Strict):
    """Stands in for a node nested beyond MAX_DEPTH, so the error lands on its path. Its
    validator always refuses it, so no parsed tree holds one."""

    too_deep: int = Field(..., alias=TOO_DEEP)

    @field_validator("too_deep")
    @classmethod
    def _refuse(cls, value: int) -> int:
        raise ValueError(f"groups are nested deeper than {MAX_DEPTH} levels")


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
    TOO_DEEP: TooDeep,
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
    | Annotated[TooDeep, Tag("~" + TOO_DEEP), SkipJsonSchema()],
    Discriminator(
        _node_kind,
        custom_error_type="invalid_condition",
        custom_error_message=(
            "a condition is an object with one of the keys all, any, not, field, tags, "
            "event, last_performed, email, segment"
        ),
    ),
]


def limit_nesting(raw: Any) -> Any:
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
        return limit_nesting(value)


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


def walk(
    conditions: tuple[Node, ...], prefix: Path = ("conditions",)
) -> Iterator[tuple[Path, Node]]:
    """Every node of a tree with its JSON path, parents before children."""
    stack: list[tuple[Path, Node]] = [
        ((*prefix, i), node) for i, node in reversed(list(enumerate(conditions)))
    ]
    while stack:
        path, node = stack.pop()
        yield path, node
        match node:
            case AllGroup():
                stack.extend(((*path, "all", i), c) for i, c in reversed(list(enumerate(node.all))))
            case AnyGroup():
                stack.extend(((*path, "any", i), c) for i, c in reversed(list(enumerate(node.any))))
            case NotGroup():
                stack.append(((*path, "not"), node.not_))
            case (
                FieldCondition()
                | TagCondition()
                | EventCondition()
                | LastPerformedCondition()
                | EmailCondition()
                | SegmentCondition()
                | TooDeep()
            ):
                pass  # a leaf
            case _:
                assert_never(node)


def tag_names(tree: Filter) -> set[str]:
    return {
        t for _, node in walk(tree.conditions) if isinstance(node, TagCondition) for t in node.tags
    }


def referenced_segments(tree: Filter) -> list[int]:
    return [node.segment for _, node in walk(tree.conditions) if isinstance(node, SegmentCondition)]
