"""A fixed-window rate limit in Redis, shared by every web process (form posts).

One pipelined INCR + EXPIRE per request. Without Redis (the embedded single-machine
default) the count is kept in this process.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class RateLimiter:
    def __init__(self, redis_url: str, *, limit: int, window_seconds: int = 60) -> None:
        self.limit = limit
        self.window = window_seconds
        self._redis: Any = None
        if redis_url.startswith("redis"):
            import redis

            self._redis = redis.Redis.from_url(redis_url)
        self._local: dict[str, int] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> int | None:
        """Count one request for ``key``; the seconds to wait when over the limit, else None."""
        if self.limit <= 0:
            return None
        now = int(time.time())
        window = now // self.window
        name = f"nurture:rate:{key}:{window}"
        if self._redis is not None:
            pipe = self._redis.pipeline()
            pipe.incr(name)
            pipe.expire(name, self.window + 1)
            count = int(pipe.execute()[0])
        else:
            with self._lock:
                if len(self._local) > 50_000:
                    self._local.clear()
                count = self._local[name] = self._local.get(name, 0) + 1
        if count > self.limit:
            return (window + 1) * self.window - now or 1
        return None
