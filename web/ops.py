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
    checks = readiness(nurture())
    ready = all(c.ok for c in checks)
    body = {"status": "ready" if ready else "not ready", "checks": [c.__dict__ for c in checks]}
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
@public
def metrics() -> Any:
    token = nurture().settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given, token):
            abort(401)
    payload, content_type = render_metrics(nurture().sessions, nurture().settings)
    return Response(payload, content_type=content_type)
