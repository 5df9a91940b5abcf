"""Users, passwords, logins (throttled by ``throttle``), sessions and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from automation import clock
from automation.accounts import throttle
from automation.accounts.models import ApiKey, Role, User
from automation.addresses import normalize_email
from automation.errors import Conflict, FieldError, InvalidInput, NotFound

MIN_PASSWORD = 10
KEY_PREFIX = "nrt"
# Compared against when the account does not exist, so timing does not reveal it.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def create_user(
    session: Session, email: str, password: str, *, role: Role = Role.MARKETER, name: str = ""
) -> User:
    try:
        address = normalize_email(email)
    except ValueError as exc:
        raise InvalidInput(FieldError("email", str(exc))) from None
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(FieldError("password", f"at least {MIN_PASSWORD} characters"))
    if len(name) > 100:
        raise InvalidInput(FieldError("name", "at most 100 characters"))
    if session.scalar(select(User.id).where(User.email == address)):
        raise Conflict(
            f"a user with email {address} exists",
            [FieldError("email", "a user with this email already exists")],
        )
    user = User(
        email=address,
        name=name,
        password_hash=generate_password_hash(password),
        role=role,
        created_at=clock.now(),
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user_id: int, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(FieldError("password", f"at least {MIN_PASSWORD} characters"))
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    user.password_hash = generate_password_hash(password)
    revoke_sessions(session, user_id)


def authenticate(session: Session, email: str, password: str, client_ip: str) -> User | None:
    """The active user with these credentials, None otherwise; LoginThrottled while a
    failure counter of this client or account imposes a delay (see ``throttle``)."""
    address = email.strip().lower()
    throttle.check(session, address, client_ip)
    user = session.scalar(select(User).where(User.email == address))
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    if not (user and ok and user.is_active):
        throttle.record_failure(session, address, client_ip)
        return None
    throttle.record_success(session, address, client_ip)
    user.last_login_at = clock.now()
    return user


def revoke_sessions(session: Session, user_id: int) -> None:
    """Every session cookie issued to the user so far stops working (logout, a new
    password, a deactivation): the cookie's generation no longer matches."""
    user = session.get(User, user_id)
    if user is not None:
        user.session_generation += 1


def session_user(session: Session, user_id: int, generation: object) -> User | None:
    """The active user a session cookie names, if the cookie is of its current generation."""
    user = session.get(User, user_id)
    if user is None or not user.is_active or user.session_generation != generation:
        return None
    return user


def _digest(secret: str) -> str:
    # API keys carry 256 bits of randomness, so a plain SHA-256 is as strong as a slow hash.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    token: str  # shown once, never stored


def create_api_key(
    session: Session, name: str, *, role: Role, created_by_id: int | None = None
) -> NewApiKey:
    if not name.strip():
        raise InvalidInput(FieldError("name", "a name is required"))
    if len(name.strip()) > 100:
        raise InvalidInput(FieldError("name", "at most 100 characters"))
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = f"{KEY_PREFIX}_{prefix}_{secret}"
    key = ApiKey(
        name=name.strip(),
        prefix=prefix,
        key_hash=_digest(token),
        role=role,
        created_by_id=created_by_id,
        created_at=clock.now(),
    )
    session.add(key)
    session.flush()
    return NewApiKey(key, token)


def verify_api_key(session: Session, token: str) -> ApiKey | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.key_hash, _digest(token)):
        return None
    now = clock.now()
    # Written at most every few minutes: a write per API request would be a hot-path cost.
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=5):
        key.last_used_at = now
    return key


def revoke_api_key(session: Session, key_id: int) -> None:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} not found")
    key.revoked_at = clock.now()


def ensure_admin(session: Session, email: str) -> str | None:
    """Create the first admin when there are no users; returns its generated password."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    password = secrets.token_urlsafe(12)
    create_user(session, email, password, role=Role.ADMIN, name="Admin")
    return password


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)))


def _refuse_losing_last_admin(session: Session, user: User) -> None:
    """Nobody could manage users any more once the last active admin is gone."""
    if user.role is not Role.ADMIN or not user.is_active:
        return
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.ADMIN, User.is_active.is_(True), User.id != user.id)
    )
    if not others:
        raise Conflict(
            "the last active admin cannot be demoted or deactivated",
            [FieldError("role", "the last active admin must stay an active admin")],
        )


def change_role(session: Session, user_id: int, role: Role) -> User:
    user = get_user(session, user_id)
    if role is not user.role:
        _refuse_losing_last_admin(session, user)
        user.role = role
        session.flush()
    return user


def set_active(session: Session, user_id: int, active: bool) -> User:
    """Deactivate (the user is logged out on the next request) or reactivate an account."""
    user = get_user(session, user_id)
    if not active:
        _refuse_losing_last_admin(session, user)
        user.session_generation += 1
    user.is_active = active
    session.flush()
    return user


def new_password() -> str:
    """A random password for a new or reset account, shown once."""
    return secrets.token_urlsafe(12)


def reset_password(session: Session, user_id: int) -> str:
    """Give the user a new random password and return it (shown once to the admin)."""
    password = new_password()
    set_password(session, user_id, password)
    return password


def list_api_keys(session: Session) -> list[ApiKey]:
    """Active keys first, newest first."""
    return list(
        session.scalars(
            select(ApiKey).order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc())
        )
    )
