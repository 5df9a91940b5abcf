"""The workspace's settings: the account time zone.

Storage stays UTC (docs/architecture.md, principle 10); the account time zone is how people
read it: every page and chart shows dates in it and counts "per day" from its midnights.
Contacts keep their own zones for sending (send windows, quiet hours, date triggers)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from automation import clock
from automation.accounts.models import WorkspaceSettings
from automation.addresses import validate_time_zone

ROW_ID = 1
DEFAULT_TIME_ZONE = "UTC"


class WorkspaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_zone: str = Field(
        ..., max_length=64, description="IANA name (zoneinfo), e.g. Asia/Seoul; default UTC"
    )

    @field_validator("time_zone")
    @classmethod
    def _known(cls, value: str) -> str:
        return validate_time_zone(value.strip())


class WorkspaceOut(BaseModel):
    time_zone: str


def time_zone_name(session: Session) -> str:
    row = session.get(WorkspaceSettings, ROW_ID)
    return row.time_zone if row is not None else DEFAULT_TIME_ZONE


def account_zone(session: Session) -> ZoneInfo:
    """The account time zone (one primary-key lookup)."""
    return ZoneInfo(time_zone_name(session))


def save_workspace(session: Session, data: WorkspaceIn, *, user_id: int | None) -> WorkspaceOut:
    row = session.get(WorkspaceSettings, ROW_ID)
    if row is None:
        row = WorkspaceSettings(id=ROW_ID)
        session.add(row)
    row.time_zone = data.time_zone
    row.updated_at = clock.now()
    row.updated_by_id = user_id
    session.flush()
    return WorkspaceOut(time_zone=row.time_zone)


__all__ = ["WorkspaceIn", "WorkspaceOut", "account_zone", "save_workspace", "time_zone_name"]
