"""Each import declares the permission it rests on; new contacts get consent records with
that source and basis, rows without permission are imported not mailable, values are read
as a person would write them, and the first rows can be seen as they will be stored
before anything runs."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import select

from automation.contacts.jobs import run_import_job
from automation.contacts.models import ConsentRecord, Contact, ImportJob

HEADER = "Email,First Name,Plan,Renewal,Seats,Score,Opt-in\n"


@pytest.fixture
def fields(api: Any) -> None:
    for body in (
        {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]},
        {"name": "renewal", "label": "Renewal", "type": "date"},
        {"name": "seats", "label": "Seats", "type": "number"},
    ):
        assert api.post("/fields", body).status_code == 201


def _form(csv: str, **form: str) -> dict[str, Any]:
    return {"file": (io.BytesIO(csv.encode()), "list.csv"), **form}


def _post(api: Any, path: str, csv: str, **form: str) -> Any:
    return api.client.post(
        "/api/v1" + path,
        headers=api._headers(),
        data=_form(csv, **form),
        content_type="multipart/form-data",
    )


def _import(api: Any, app: Any, csv: str, **form: str) -> dict[str, Any]:
    response = _post(api, "/imports", csv, **form)
    assert response.status_code == 202, response.json
    run_import_job(app.extensions["nurture"].sessions, response.json["id"])
    job = api.get(f"/imports/{response.json['id']}").json
    assert job["status"] == "done", job
    return job


def _contacts(app: Any) -> dict[str, Contact]:
    with app.extensions["nurture"].sessions() as s:
        return {c.email: c for c in s.scalars(select(Contact))}


def _consents(app: Any) -> dict[str, list[tuple[str | None, str, str, str | None]]]:
    with app.extensions["nurture"].sessions() as s:
        rows = s.execute(
            select(
                Contact.email,
                ConsentRecord.basis,
                ConsentRecord.source,
                ConsentRecord.status_to,
                ConsentRecord.consent_text,
            )
            .join(Contact, Contact.id == ConsentRecord.contact_id)
            .order_by(ConsentRecord.id)
        )
        out: dict[str, list[Any]] = {}
        for email, *rest in rows:
            out.setdefault(email, []).append(tuple(rest))
        return out


def test_an_import_that_declares_no_permission_is_refused_naming_the_field(api, app):
    for form in ({}, {"permission": "we-bought-a-list"}):
        response = _post(api, "/imports", "Email\na@example.com\n", **form)
        assert response.status_code == 422
        assert [d["path"] for d in response.json["error"]["details"]] == ["permission"]
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(ImportJob.id)) is None
    assert api.get("/contacts").json["total"] == 0


def test_new_contacts_get_a_consent_record_with_the_source_and_basis(api, app):
    job = _import(
        api,
        app,
        "Email\nana@example.com\nbo@example.com\n",
        permission="customers",
        consent_text="Bought from us in 2025",
    )
    assert job["report"]["created"] == 2
    contacts = _contacts(app)
    assert {c.status.value for c in contacts.values()} == {"subscribed"}
    assert {c.confirmed_at for c in contacts.values()} == {None}  # nobody double-opted in
    source = f"import:{job['id']}"
    assert _consents(app) == {
        "ana@example.com": [("customers", source, "subscribed", "Bought from us in 2025")],
        "bo@example.com": [("customers", source, "subscribed", "Bought from us in 2025")],
    }


def test_rows_without_permission_are_imported_but_not_mailable(api, app, fields):
    csv = (
        HEADER + "yes@example.com,Y,,,,,Yes\nno@example.com,N,,,,,no\n"
        "blank@example.com,B,,,,,\nodd@example.com,O,,,,,maybe\n"
    )
    job = _import(api, app, csv, permission="consent")
    assert (job["report"]["created"], job["report"]["failed"]) == (3, 1)
    [error] = job["report"]["errors"]
    assert (error["row"], error["column"]) == (5, "Opt-in") and "yes or no" in error["reason"]
    statuses = {e: c.status.value for e, c in _contacts(app).items()}
    assert statuses == {
        "yes@example.com": "subscribed",
        "no@example.com": "pending",
        "blank@example.com": "pending",
    }
    consents = _consents(app)
    assert consents["yes@example.com"][0][:1] == ("consent",)
    assert consents["no@example.com"][0][:1] == ("none",)
    # With no permission at all, the whole file is kept and nobody is mailable.
    job = _import(api, app, "Email\nkeep@example.com\n", permission="none")
    assert _contacts(app)["keep@example.com"].status.value == "pending"
    # A consent column with no basis to rest on is refused before anything runs.
    refused = _post(api, "/imports", csv, permission="none")
    assert refused.status_code == 202  # checked by the job against the mapping
    run_import_job(app.extensions["nurture"].sessions, refused.json["id"])
    failed = api.get(f"/imports/{refused.json['id']}").json
    assert failed["status"] == "failed"
    assert failed["report"]["errors"][0]["path"] == "permission"


def test_an_import_records_opt_outs_but_never_re_subscribes(api, app):
    gone = api.post("/contacts", {"email": "gone@example.com"}).json
    assert api.patch(f"/contacts/{gone['id']}", {"status": "unsubscribed"}).status_code == 200
    api.post("/contacts", {"email": "stay@example.com"})
    csv = "Email,Status\ngone@example.com,subscribed\nstay@example.com,Unsubscribed\n"
    _import(api, app, csv, permission="consent")
    contacts = _contacts(app)
    assert contacts["gone@example.com"].status.value == "unsubscribed"
    assert contacts["stay@example.com"].status.value == "unsubscribed"
    assert _consents(app)["stay@example.com"][-1][1:3] == (
        f"import:{_last_job(app)}",
        "unsubscribed",
    )


def _last_job(app: Any) -> int:
    with app.extensions["nurture"].sessions() as s:
        return int(s.scalar(select(ImportJob.id).order_by(ImportJob.id.desc())))


def test_values_are_read_as_a_person_writes_them(api, app, fields):
    csv = HEADER + 'a@example.com,Ann,PRO,11/25/2026,"1,234","1,000",yes\n'
    csv += "b@example.com,Bob,Free,2026-01-31,12,-3,yes\n"
    csv += "c@example.com,Cy,pro,25/11/2026,x,,yes\n"
    job = _import(api, app, csv, permission="consent", date_format="%m/%d/%Y")
    contacts = _contacts(app)
    assert contacts["a@example.com"].attributes == {
        "plan": "pro",
        "renewal": "2026-11-25",
        "seats": 1234,
    }
    assert contacts["a@example.com"].score == 1000
    assert contacts["b@example.com"].attributes == {
        "plan": "free",
        "renewal": "2026-01-31",
        "seats": 12,
    }
    errors = {(e["row"], e["column"]): e["reason"] for e in job["report"]["errors"]}
    assert set(errors) == {(4, "Renewal"), (4, "Seats")}
    assert "%m/%d/%Y" in errors[(4, "Renewal")] and "11/25/2026" in errors[(4, "Renewal")]
    decimal = _import(
        api,
        app,
        'Email,Seats\nd@example.com,"1.234,5"\n',
        permission="consent",
        decimal_comma="true",
    )
    assert decimal["report"]["created"] == 1
    assert _contacts(app)["d@example.com"].attributes == {"seats": 1234.5}
    bad = _post(api, "/imports", csv, permission="consent", date_format="%Y")
    assert bad.status_code == 422
    assert [d["path"] for d in bad.json["error"]["details"]] == ["date_format"]


def test_the_preview_shows_the_first_rows_as_they_will_be_stored_and_writes_nothing(
    api, app, fields
):
    api.post("/contacts", {"email": "known@example.com", "first_name": "Kay"})
    csv = HEADER + 'new@example.com,Nia,PRO,11/25/2026,"2,500",,yes\n'
    csv += "known@example.com,Kay,free,,,,yes\nlater@example.com,Leo,,,,,no\n"
    csv += "bad,Bad,,,,,\n"
    response = _post(api, "/imports/preview", csv, permission="consent", date_format="%m/%d/%Y")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["mapping"]["Opt-in"] == "consent"
    rows = body["rows"]
    assert [(r["row"], r["action"], r["status"], r["basis"]) for r in rows] == [
        (2, "create", "subscribed", "consent"),
        (3, "update", "subscribed", None),
        (4, "create", "pending", "none"),
        (5, "skip", None, None),
    ]
    assert rows[0]["contact"] == {
        "email": "new@example.com",
        "first_name": "Nia",
        "attributes": {"plan": "pro", "renewal": "2026-11-25", "seats": 2500},
    }
    assert rows[3]["errors"][0]["column"] == "Email"
    assert api.get("/contacts").json["total"] == 1
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(ImportJob.id)) is None
    # Bad options are named.
    bad = _post(api, "/imports/preview", csv, permission="consent", date_format="%d")
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "date_format"
