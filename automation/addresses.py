"""Email address and time zone validation shared by every input path."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Annotated
from zoneinfo import available_timezones

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import AfterValidator, WithJsonSchema

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# Plain ASCII addresses (nearly all of them) that email_validator accepts unchanged;
# checking those with a regex first saves ~0.3 ms an address on a 100k-row import.
_PLAIN = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[a-z]{{2,63}}")
_SPECIAL = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def normalize_email(value: str) -> str:
    """Validated, lower-cased address; raises ValueError with a readable reason."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("email is required")
    candidate = value.strip().lower()
    if (
        len(candidate) <= 254
        and _PLAIN.fullmatch(candidate)
        and len(candidate.partition("@")[0]) <= 64
        and candidate.rpartition(".")[2] not in _SPECIAL
        # "ab--" labels are reserved (IDNA: only valid punycode "xn--"): the validator decides.
        and "--" not in candidate
    ):
        return candidate
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


# An address field of any input model: validated and lower-cased, documented as an email.
Email = Annotated[
    str,
    AfterValidator(normalize_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]
