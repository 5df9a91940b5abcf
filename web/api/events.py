"""Behaviour events over the API."""

from __future__ import annotations

from flask import Response
from sqlalchemy import select

from automation.accounts.models import Role
from automation.contacts.events import ingest_events
from automation.contacts.models import Event
from automation.contacts.schema import MAX_BATCH_BYTES, EventBatchIn, EventBatchOut, EventOut
from automation.contacts.service import get_contact
from web.api.routing import ApiBlueprint
from web.database import db

bp = ApiBlueprint("events", __name__)


@bp.operation(
    "/events",
    "POST",
    role=Role.MARKETER,
    body=EventBatchIn,
    response=EventBatchOut,
    summary="Record a batch of behaviour events (per-item results; at most 500 KB a call)",
    max_body=MAX_BATCH_BYTES,
)
def post_events(body: EventBatchIn) -> Response:
    result = ingest_events(db(), body.events, source="api")
    db().commit()
    out = EventBatchOut.model_validate(
        {
            "created": result.count("created"),
            "duplicates": result.count("duplicate"),
            "errors": result.count("error"),
            "results": [
                {
                    "index": r.index,
                    "status": r.status,
                    "id": r.id,
                    "contact_id": r.contact_id,
                    "errors": [e.as_dict() for e in r.errors],
                }
                for r in result.results
            ],
        }
    )
    # Serialised by pydantic in one call: a thousand results through model_dump and
    # jsonify cost more than storing the events.
    return Response(out.model_dump_json(), mimetype="application/json")


@bp.operation(
    "/contacts/<bigid:contact_id>/events",
    "GET",
    response=list[EventOut],
    summary="A contact's most recent events",
)
def contact_events(contact_id: int) -> list[EventOut]:
    get_contact(db(), contact_id)
    rows = db().scalars(
        select(Event)
        .where(Event.contact_id == contact_id)
        .order_by(Event.occurred_at.desc())
        .limit(200)
    )
    return [EventOut.model_validate(e) for e in rows]
