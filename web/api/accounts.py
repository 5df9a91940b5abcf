"""Users and API keys (admin only)."""

from __future__ import annotations

from datetime import datetime

from flask import g
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from automation.accounts import service as accounts
from automation.accounts.models import ApiKey, Role, User
from automation.addresses import Email
from web.api.routing import ApiBlueprint
from web.database import db

bp = ApiBlueprint("accounts", __name__)


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Email
    password: str = Field(..., min_length=accounts.MIN_PASSWORD, max_length=200)
    name: str = Field("", max_length=100)
    role: Role = Role.MARKETER


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    name: str
    role: Role
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


@bp.operation("/users", "GET", summary="List users", role=Role.ADMIN, response=list[UserOut])
def list_users() -> list[UserOut]:
    return [UserOut.model_validate(u) for u in db().scalars(select(User).order_by(User.id))]


@bp.operation(
    "/users",
    "POST",
    summary="Create a user",
    role=Role.ADMIN,
    body=UserIn,
    response=UserOut,
    status=201,
)
def create_user(body: UserIn) -> UserOut:
    user = accounts.create_user(db(), body.email, body.password, role=body.role, name=body.name)
    db().commit()
    return UserOut.model_validate(user)


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=100)
    role: Role = Role.MARKETER


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiKeyOut(ApiKeyOut):
    token: str = Field(description="The key itself; shown this once, never again")


@bp.operation(
    "/api-keys", "GET", summary="List API keys", role=Role.ADMIN, response=list[ApiKeyOut]
)
def list_keys() -> list[ApiKeyOut]:
    keys = db().scalars(select(ApiKey).order_by(ApiKey.id))
    return [ApiKeyOut.model_validate(k) for k in keys]


@bp.operation(
    "/api-keys",
    "POST",
    summary="Create an API key (returned once)",
    role=Role.ADMIN,
    body=ApiKeyIn,
    response=NewApiKeyOut,
    status=201,
)
def create_key(body: ApiKeyIn) -> NewApiKeyOut:
    new = accounts.create_api_key(
        db(), body.name, role=body.role, created_by_id=g.principal.user_id
    )
    db().commit()
    return NewApiKeyOut(**ApiKeyOut.model_validate(new.key).model_dump(), token=new.token)


@bp.operation(
    "/api-keys/<int:key_id>", "DELETE", summary="Revoke an API key", role=Role.ADMIN, status=204
)
def revoke_key(key_id: int) -> None:
    accounts.revoke_api_key(db(), key_id)
    db().commit()
