"""The marketer's pages' blueprint: each view module of ``web.ui`` adds its routes to it."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("ui", "web.ui")
