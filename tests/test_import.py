from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from automation import clock
from automation.contacts.importer import ImportPermission, import_contacts
from automation.contacts.models import Contact, CustomField, FieldType, ImportBasis
from automation.errors import InvalidInput


@pytest.fixture
def declared(session):
    session.add_all(
        [
            CustomField(
                name="plan",
                label="Plan",
                type=FieldType.CHOICE,
                options=["free", "pro"],
                created_at=clock.now(),
            ),
            CustomField(name="seats", label="Seats", type=FieldType.NUMBER, created_at=clock.now()),
        ]
    )
    session.commit()


def run(session, text: str | bytes, **kw):
    data = text.encode() if isinstance(text, str) else text
    kw.setdefault("permission", ImportPermission(ImportBasis.CONSENT))
    report = import_contacts(session, io.BufferedReader(io.BytesIO(data)), **kw)
    session.commit()
    return report


GOOD = (
    "Email,First Name,Last Name,Plan,Seats,Tags,Time Zone,Favourite colour\n"
    "ana@example.com,Ana,Pérez,pro,3,vip;trial,Europe/Madrid,blue\n"
    "BEN@example.com,Ben,Okafor,free,,newsletter,America/New_York,red\n"
    "not-an-email,Bad,Row,pro,1,,UTC,green\n"
    "chloe@example.com,Chloé,Martin,gold,2,,UTC,\n"
    "dmitri@example.com,Dmitri,Ivanov,pro,many,,Mars/Base,\n"
    "eve@example.com,Eve,Adams,,,,,\n"
)


def test_import_upserts_good_rows_and_reports_each_bad_one(session, declared):
    report = run(session, GOOD)
    assert (report.rows, report.created, report.failed) == (6, 3, 3)
    assert report.ignored_columns == ["Favourite colour"]
    errors = {(e.row, e.column) for e in report.errors}
    assert errors == {(4, "Email"), (5, "Plan"), (6, "Seats"), (6, "Time Zone")}
    ana = session.scalar(select(Contact).where(Contact.email == "ana@example.com"))
    assert ana.last_name == "Pérez"
    assert ana.attributes == {"plan": "pro", "seats": 3}
    assert [t.name for t in ana.tags] == ["trial", "vip"]
    assert (
        session.scalar(select(Contact.time_zone).where(Contact.email == "ben@example.com"))
        == "America/New_York"
    )


def test_reimporting_the_same_file_changes_nothing(session, declared):
    run(session, GOOD)
    before = {c.email: c.updated_at for c in session.scalars(select(Contact))}
    report = run(session, GOOD)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 3)
    session.expire_all()
    after = {c.email: c.updated_at for c in session.scalars(select(Contact))}
    assert before == after


def test_reimport_with_changed_values_updates_only_those_rows(session, declared):
    run(session, GOOD)
    changed = GOOD.replace("ana@example.com,Ana,Pérez,pro,3", "ana@example.com,Ana,Pérez,pro,5")
    report = run(session, changed)
    assert (report.updated, report.unchanged) == (1, 2)
    ana = session.scalar(select(Contact).where(Contact.email == "ana@example.com"))
    assert ana.attributes["seats"] == 5


def test_explicit_mapping_and_ignored_columns(session, declared):
    csv_text = "E,Given,Ignore me\nzoe@example.com,Zoë,x\n"
    report = run(session, csv_text, mapping={"E": "email", "Given": "first_name", "Ignore me": ""})
    assert report.created == 1
    assert session.scalar(select(Contact.first_name)) == "Zoë"


def test_missing_email_column_is_refused_before_anything_is_written(session, declared):
    with pytest.raises(InvalidInput) as exc:
        run(session, "Name,Plan\nAna,pro\n")
    assert exc.value.errors[0].path == "columns"
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_mapping_to_unknown_field_names_the_column(session, declared):
    with pytest.raises(InvalidInput) as exc:
        run(session, "Email,Shoe\na@example.com,42\n", mapping={"Shoe": "attributes.shoe"})
    assert exc.value.errors[0].path == "mapping.Shoe"


def test_wrong_encoding_is_refused_with_a_clear_error(session, declared):
    latin1 = "Email,First Name\nana@example.com,Jos\xe9\n".encode("latin-1")
    with pytest.raises(InvalidInput) as exc:
        run(session, latin1)
    assert "not valid utf-8" in exc.value.errors[0].message
    assert session.scalar(select(func.count()).select_from(Contact)) == 0
    report = run(session, latin1, encoding="latin-1")
    assert report.created == 1
    assert session.scalar(select(Contact.first_name)) == "José"


def test_rows_with_more_values_than_columns_are_reported(session, declared):
    report = run(session, "Email,First Name\na@example.com,Ann,extra\nb@example.com,Bo\n")
    assert report.created == 1
    assert report.errors[0].row == 2 and "more values" in report.errors[0].reason


def test_empty_file_is_refused(session):
    with pytest.raises(InvalidInput) as exc:
        run(session, "")
    assert exc.value.errors[0].path == "file"


def test_large_import_is_streamed_in_batches(session, declared):
    rows = "".join(f"user{i}@example.com,User,{i},pro,{i % 7}\n" for i in range(2500))
    batches = []
    report = run(
        session,
        "Email,First Name,Last Name,Plan,Seats\n" + rows,
        batch_size=1000,
        on_batch=lambda r: batches.append(r.rows),
    )
    assert report.created == 2500
    assert batches[:3] == [1000, 2000, 2500]
    assert session.scalar(select(func.count()).select_from(Contact)) == 2500


def test_import_job_via_api_reports_progress_and_errors(api, app):
    from automation.contacts.jobs import run_import_job

    response = api.client.post(
        "/api/v1/imports",
        headers=api._headers(),
        data={
            "file": (io.BytesIO(b"Email,First Name\na@example.com,A\nbad,B\n"), "people.csv"),
            "permission": "consent",
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    job_id = response.json["id"]
    assert response.json["status"] == "queued"
    # The worker's task body; a real worker runs it in test_worker.py.
    run_import_job(app.extensions["nurture"].sessions, job_id)
    job = api.get(f"/imports/{job_id}").json
    assert job["status"] == "done"
    assert job["report"]["created"] == 1
    assert job["report"]["errors"] == [
        {"row": 3, "column": "Email", "reason": job["report"]["errors"][0]["reason"]}
    ]


def test_import_upload_bad_input(api):
    no_file = api.client.post(
        "/api/v1/imports", headers=api._headers(), data={}, content_type="multipart/form-data"
    )
    assert no_file.status_code == 422
    assert no_file.json["error"]["details"][0]["path"] == "file"
    latin = api.client.post(
        "/api/v1/imports",
        headers=api._headers(),
        data={
            "file": (io.BytesIO("Email\nJos\xe9@example.com\n".encode("latin-1")), "x.csv"),
            "permission": "consent",
        },
        content_type="multipart/form-data",
    )
    assert latin.status_code == 422
    bad_mapping = api.client.post(
        "/api/v1/imports",
        headers=api._headers(),
        data={
            "file": (io.BytesIO(b"Email\na@example.com\n"), "x.csv"),
            "mapping": "[1]",
            "permission": "consent",
        },
        content_type="multipart/form-data",
    )
    assert bad_mapping.status_code == 422
    assert bad_mapping.json["error"]["details"][0]["path"] == "mapping"


def _upload(api, content: bytes, filename: str = "x.csv", **form: str):
    return api.client.post(
        "/api/v1/imports",
        headers=api._headers(),
        data={"file": (io.BytesIO(content), filename), "permission": "consent", **form},
        content_type="multipart/form-data",
    )


@pytest.mark.parametrize(
    "encoding", ["bz2", "zlib", "base64", "hex", "rot13", "undefined", "uu", "no-such-codec", ""]
)
def test_an_import_in_anything_but_a_text_encoding_is_refused_naming_the_field(api, encoding):
    import bz2

    response = _upload(api, bz2.compress(b"Email\n" + b"a@example.com\n" * 100), encoding=encoding)
    assert response.status_code == 422, response.json
    assert [d["path"] for d in response.json["error"]["details"]] == ["encoding"]
    assert api.get("/contacts").json["total"] == 0


@pytest.mark.parametrize(
    "encoding,codec",
    [
        ("utf-16", "utf-16"),
        ("latin-1", "latin-1"),
        ("CP1252", "cp1252"),
        ("euc-kr", "euc-kr"),
        ("shift_jis", "shift_jis"),
    ],
)
def test_an_import_in_a_declared_text_encoding_is_read_in_it(api, app, encoding, codec):
    from automation.contacts.jobs import run_import_job

    name = {"euc-kr": "민준", "shift_jis": "はると"}.get(codec, "José")
    response = _upload(
        api, f"Email,First Name\na@example.com,{name}\n".encode(codec), encoding=encoding
    )
    assert response.status_code == 202, response.json
    run_import_job(app.extensions["nurture"].sessions, response.json["id"])
    assert api.get(f"/imports/{response.json['id']}").json["status"] == "done"
    assert api.get("/contacts").json["items"][0]["first_name"] == name


def test_an_import_file_name_with_a_nul_is_refused(api):
    response = _upload(api, b"Email\na@example.com\n", filename="a\x00.csv")
    assert 400 <= response.status_code < 500
    assert response.json["error"]["details"][0]["path"] == "file.filename"
    assert api.get("/contacts").json["total"] == 0


def test_an_import_upload_larger_than_the_bound_is_refused(api):
    from automation.contacts.jobs import MAX_UPLOAD_BYTES

    response = _upload(api, b"Email\n" + b"a" * MAX_UPLOAD_BYTES)
    assert response.status_code in (413, 422)
    assert response.is_json and "error" in response.json
