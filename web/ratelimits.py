"""Request rates of the public and costly endpoints (site collect, form posts, test sends),
counted with the ``limits`` package: the storage and windows Flask-Limiter is built on, in
Redis when Redis is configured (shared by every web process), in this process otherwise
(the embedded single-machine default).

Flask-Limiter's decorators key a limit before the view runs; these keys come from inside
the request (the visitor id in a collect body, the principal of an API call), so the views
ask for them themselves. Login failures are throttled apart, in the database
(``automation.accounts.throttle``): they count failures, not requests, and back off.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from flask import Flask, current_app
from limits import RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from automation.config import Settings
from automation.tracking.hits import tracking_redis_url

log = logging.getLogger(__name__)


class RateLimits:
    """One app's limiter: ``hit(limit, *key)`` counts a request."""

    def __init__(self, settings: Settings) -> None:
        url = tracking_redis_url(settings)
        # A Redis that does not answer within a second costs a request one second.
        options: dict[str, Any] = (
            {
                "key_prefix": "nurture:rate",
                "wrap_exceptions": True,
                "socket_connect_timeout": 1.0,
                "socket_timeout": 1.0,
            }
            if url
            else {}
        )
        self._limiter = FixedWindowRateLimiter(storage_from_string(url or "memory://", **options))

    def hit(self, per_minute: int, *key: str) -> int | None:
        """Count one request against ``per_minute`` for ``key``: None when allowed, else the
        seconds until the window resets (for Retry-After). 0 or less means no limit."""
        if per_minute <= 0:
            return None
        item = RateLimitItemPerMinute(per_minute)
        try:
            if self._limiter.hit(item, *key):
                return None
            reset = self._limiter.get_window_stats(item, *key).reset_time
        except StorageError as exc:
            # Redis unreachable: let the request through (the hit spool and the database
            # still work) rather than turn every public request into a 500.
            log.warning("rate limit not counted (%s): %s", key[0], exc)
            return None
        return max(1, math.ceil(reset - time.time()))


def rate_limits(app: Flask | None = None) -> RateLimits:
    """This app's limiter, built on first use from the app's own settings."""
    app = app or current_app
    found: RateLimits | None = app.extensions.get("nurture_rate_limits")
    if found is None:
        found = RateLimits(app.extensions["nurture"].settings)
        app.extensions["nurture_rate_limits"] = found
    return found
