"""Webhook calls from workflows: signed, retried with exponential backoff, and behind a
small HTTP interface so tests call a real local server.

Receivers verify ``X-Nurture-Signature: t=<unix time>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 of ``"<t>." + body`` under the workflow's webhook secret, and may use the
``Idempotency-Key`` header (one per enrolment and node): a call can be repeated after a
crash, never lost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

MAX_BODY = 64 * 1024
MAX_BACKOFF = timedelta(hours=6)
SIGNATURE_HEADER = "X-Nurture-Signature"


@dataclass(frozen=True)
class HttpResponse:
    status: int | None  # None: no answer (connection refused, timeout)
    body: bytes = b""
    error: str | None = None


class HttpClient(Protocol):
    def request(
        self, method: str, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> HttpResponse: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer (3xx), not somewhere to resend the contact


class UrllibClient:
    """The standard library's HTTP client; no redirects followed, body read up to 64 KB."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect())

    def request(
        self, method: str, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> HttpResponse:
        request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310  # http(s) only, checked by the schema
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return HttpResponse(response.status, response.read(MAX_BODY))
        except urllib.error.HTTPError as exc:
            return HttpResponse(exc.code, exc.read(MAX_BODY) if exc.fp else b"")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return HttpResponse(None, b"", str(reason)[:200])


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, now: datetime) -> str:
    timestamp = int(now.timestamp())
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: datetime, tolerance: int = 300
) -> bool:
    """What a receiver does: recompute the HMAC, refuse old timestamps (replays)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now.timestamp() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), parts.get("v1", ""))


@dataclass(frozen=True)
class WebhookCall:
    key: int  # the enrolment id
    method: str
    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float


def build_call(
    *,
    enrollment_id: int,
    node_id: str,
    method: str,
    url: str,
    payload: dict[str, Any],
    secret: str,
    timeout: float,
    now: datetime,
) -> WebhookCall:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Nurture-Webhook/1",
        "Idempotency-Key": f"nurture-{enrollment_id}-{node_id}",
        SIGNATURE_HEADER: signature_header(secret, body, now),
    }
    return WebhookCall(enrollment_id, method, url, body, headers, timeout)


def perform(
    calls: Sequence[WebhookCall], client: HttpClient, *, concurrency: int = 8
) -> dict[int, HttpResponse]:
    """Run the calls concurrently; every call gets a response (errors included)."""
    if not calls:
        return {}

    def one(call: WebhookCall) -> tuple[int, HttpResponse]:
        return call.key, client.request(
            call.method, call.url, call.body, call.headers, call.timeout
        )

    if len(calls) == 1:
        return dict([one(calls[0])])
    with ThreadPoolExecutor(max_workers=min(concurrency, len(calls))) as pool:
        return dict(pool.map(one, calls))


def retryable(response: HttpResponse) -> bool:
    """No answer, a server error or "slow down" may succeed later; other answers will not."""
    return response.status is None or response.status >= 500 or response.status == 429


def result_of(response: HttpResponse, attempts: int) -> dict[str, Any]:
    """What later branches see: ``ok``, ``status``, the JSON ``body`` (or null)."""
    body: Any = None
    if response.body:
        try:
            body = json.loads(response.body)
        except ValueError:
            body = None
    ok = response.status is not None and 200 <= response.status < 300
    result: dict[str, Any] = {"ok": ok, "status": response.status, "body": body}
    result["attempts"] = attempts
    if response.error:
        result["error"] = response.error
    return result


def backoff(attempt: int, base_seconds: int) -> timedelta:
    """Wait before attempt ``attempt + 1``: base, 2 x base, 4 x base ... at most 6 hours."""
    return min(timedelta(seconds=base_seconds * 2 ** max(attempt - 1, 0)), MAX_BACKOFF)
