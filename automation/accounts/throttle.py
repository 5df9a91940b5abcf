"""Login throttling: failures slow down whoever makes them, never everyone.

Three counters of failed logins (rows of ``login_failures``) over a sliding window:

- **an address** (any account): a client that fails often, guessing many accounts, is
  slowed; nobody else is (behind a reverse proxy the address is the client's only when
  ``NURTURE_TRUSTED_PROXIES`` says how many proxies to trust);
- **an account from one address**: one client guessing one password is slowed, and only
  that client: the owner logging in from elsewhere is not;
- **an account from everywhere** (a guess spread over many addresses): the account is
  slowed for everyone, the only counter a stranger can trip for somebody else, so its
  threshold is higher and its delay starts short.

Past its threshold each counter imposes a delay after its latest failure that doubles
with every further failure (``FIRST_DELAY``, then twice, four times, … up to ``MAX_DELAY``), instead
of a flat block. An attempt refused for a delay checks no password and counts as no
failure, so one client cannot drive the account-wide counter on its own. The database
keeps the rows (not Redis): the embedded default has no Redis, and a restart must not
forget them. A successful login clears the account's own counters, not the address's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from automation import clock
from automation.accounts.models import LoginFailure

WINDOW = timedelta(hours=24)
FIRST_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=1)


@dataclass(frozen=True)
class Counter:
    prefix: str
    threshold: int  # failures allowed before a delay


ADDRESS = Counter("ip", 20)
ACCOUNT_FROM_ADDRESS = Counter("account-ip", 5)
ACCOUNT = Counter("account", 10)


class LoginThrottled(Exception):
    def __init__(self, retry_after: timedelta) -> None:
        super().__init__("too many failed logins")
        self.retry_after = retry_after


def _keys(email: str, client_ip: str) -> dict[Counter, str]:
    email, client_ip = email[:200], client_ip[:45]  # the column holds 300 characters
    return {
        ADDRESS: f"{ADDRESS.prefix}:{client_ip}",
        ACCOUNT_FROM_ADDRESS: f"{ACCOUNT_FROM_ADDRESS.prefix}:{email}|{client_ip}",
        ACCOUNT: f"{ACCOUNT.prefix}:{email}",
    }


def delay_after(failures: int, threshold: int) -> timedelta:
    """The wait after the latest of ``failures``: none up to the threshold, then doubling."""
    if failures < threshold:
        return timedelta(0)
    return min(MAX_DELAY, FIRST_DELAY * 2 ** min(failures - threshold, 20))


def _state(session: Session, key: str, since: datetime) -> tuple[int, datetime | None]:
    count, latest = session.execute(
        select(func.count(), func.max(LoginFailure.at)).where(
            LoginFailure.key == key, LoginFailure.at >= since
        )
    ).one()
    return int(count or 0), latest


def check(session: Session, email: str, client_ip: str) -> None:
    """Raise LoginThrottled with the longest wait any of the three counters imposes."""
    now = clock.now()
    wait = timedelta(0)
    for counter, key in _keys(email, client_ip).items():
        count, latest = _state(session, key, now - WINDOW)
        if latest is not None:
            wait = max(wait, latest + delay_after(count, counter.threshold) - now)
    if wait > timedelta(0):
        raise LoginThrottled(wait)


def record_failure(session: Session, email: str, client_ip: str) -> None:
    now = clock.now()
    keys = list(_keys(email, client_ip).values())
    # Rows past the window count for nothing: drop this client's and account's old ones.
    session.execute(
        delete(LoginFailure).where(LoginFailure.key.in_(keys), LoginFailure.at < now - WINDOW)
    )
    session.add_all([LoginFailure(key=key, at=now) for key in keys])


def record_success(session: Session, email: str, client_ip: str) -> None:
    keys = _keys(email, client_ip)
    session.execute(
        delete(LoginFailure).where(
            LoginFailure.key.in_([keys[ACCOUNT], keys[ACCOUNT_FROM_ADDRESS]])
        )
    )
