"""Liveness, readiness and Prometheus metrics for load balancers and monitoring."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from automation.ops.health import readiness
from automation.ops.metrics import render_metrics
from web.auth import public
from web.database import nurture

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@public
def healthz() -> Any:
    """The process answers; no dependency is checked (a restart would not fix those)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@public
def readyz() -> Any:
    """Each check's name, verdict, time and a detail that names no host (anyone can ask)."""
    checks = readiness(nurture())
    ready = all(c.ok for c in checks)
    body = {"status": "ready" if ready else "not ready", "checks": [c.public() for c in checks]}
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
@public
def metrics() -> Any:
    """Prometheus text, for the bearer of NURTURE_METRICS_TOKEN; without one only in the
    embedded default (a single machine where only its owner reaches the port)."""
    settings = nurture().settings
    token = settings.metrics_token
    if not token and not settings.embedded:
        return Response(
            "/metrics needs NURTURE_METRICS_TOKEN outside the embedded default\n",
            status=403,
            mimetype="text/plain",
        )
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            abort(401)
    payload, content_type = render_metrics(nurture().sessions, nurture().settings)
    return Response(payload, content_type=content_type)
