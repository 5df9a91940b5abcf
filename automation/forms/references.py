"""What a lead form refers to (the custom fields it asks for), for the guards that refuse
a delete. Installed into ``automation.references`` by the wiring module."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.forms.models import Form
from automation.references import Finder, Target, User


def _using_field(session: Session, name: str) -> list[User]:
    return [
        User("form", form.name)
        for form in session.scalars(select(Form).order_by(Form.name))
        if any(f.get("name") == name for f in form.fields)
    ]


FINDERS: dict[Target, Finder] = {Target.CUSTOM_FIELD: _using_field}
