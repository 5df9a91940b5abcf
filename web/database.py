"""The request's database session: opened on first use, closed (and rolled back if not
committed) when the request ends. Views commit explicitly once their work is done."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from automation.runtime import Runtime


def nurture(app: Flask | None = None) -> Runtime:
    runtime: Runtime = (app or current_app).extensions["nurture"]
    return runtime


def db() -> Session:
    if "db_session" not in g:
        g.db_session = nurture().sessions()
    session: Session = g.db_session
    return session


def close_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
