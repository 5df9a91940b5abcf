"""What the segments API and pages send and receive: segments in and out, members, counts,
samples, and the explainer's answer."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from automation.db import BigRowId
from automation.segments.models import SegmentKind
from automation.segments.schema import (
    CONDITIONS_DOC,
    MAX_NODES,
    CarriesConditions,
    Filter,
    Node,
    Strict,
)

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
    contact_id: BigRowId = Field(..., ge=1)


class SizeQuery(Strict):
    size: int = Field(20, ge=1, le=100)


class MemberMode(enum.StrEnum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


class MembersIn(Strict):
    mode: MemberMode = MemberMode.ADD
    contact_ids: list[BigRowId] = Field(default_factory=list, max_length=10_000)
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
