from __future__ import annotations

from typing import Any

from flask import render_template, request
from pydantic import ValidationError
from sqlalchemy import select

from automation.contacts.models import Event
from automation.contacts.schema import ContactSearch
from automation.contacts.service import get_contact, search_contacts
from web.auth import login_required
from web.database import db
from web.ui import bp


@bp.route("/contacts")
@login_required()
def contacts() -> Any:
    args = {k: v for k, v in request.args.items() if v}
    try:
        search = ContactSearch.model_validate(args)
    except ValidationError:
        search = ContactSearch()
    items, total = search_contacts(db(), search)
    pages = max(1, -(-total // search.per_page))
    return render_template(
        "contacts/list.html", items=items, total=total, search=search, pages=pages
    )


@bp.route("/contacts/<int:contact_id>")
@login_required()
def contact_detail(contact_id: int) -> Any:
    contact = get_contact(db(), contact_id)
    events = (
        db()
        .scalars(
            select(Event)
            .where(Event.contact_id == contact_id)
            .order_by(Event.occurred_at.desc())
            .limit(100)
        )
        .all()
    )
    return render_template("contacts/detail.html", contact=contact, events=events)
