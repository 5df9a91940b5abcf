from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from automation.db import Base, BigId, UTCDateTime
from automation.enums import str_enum


class Role(enum.StrEnum):
    VIEWER = "viewer"
    MARKETER = "marketer"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = [Role.VIEWER, Role.MARKETER, Role.ADMIN]
        return order.index(self) >= order.index(needed)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(str_enum(Role), default=Role.MARKETER)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A session cookie names the generation it was issued in; logout, a new password or a
    # deactivation bumps it, so every earlier cookie of the user stops working at once.
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")


class ApiKey(Base):
    """An API key; only a SHA-256 of the secret is kept, the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[Role] = mapped_column(str_enum(Role), default=Role.MARKETER)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginFailure(Base):
    """Failed logins by client address, by account, and by account from one address; the
    throttle (``automation.accounts.throttle``) counts them over a sliding window."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkspaceSettings(Base):
    """The workspace's own settings (one row, id 1): the account time zone in which pages
    and charts show dates and count per day. Absent row: UTC."""

    __tablename__ = "workspace_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_by_id: Mapped[int | None] = mapped_column(Integer)
