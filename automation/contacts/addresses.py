"""Email address and time zone validation shared by every input path."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email


def normalize_email(value: str) -> str:
    """Validated, lower-cased address; raises ValueError with a readable reason."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("email is required")
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return result.normalized.lower()


def email_hash(email: str) -> str:
    """Stable digest of a normalised address (suppressions keep only this after erasure)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def known_time_zones() -> frozenset[str]:
    """Every IANA zone name a contact may have."""
    return _zones()


def validate_time_zone(value: str) -> str:
    if value not in _zones():
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Paris'")
    return value
