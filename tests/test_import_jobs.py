"""Import jobs from the UI: a draft waits for its column mapping, then a worker runs it."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlalchemy import select

from automation import clock
from automation.contacts import hygiene
from automation.contacts.importer import ImportPermission, import_contacts, preview_csv
from automation.contacts.jobs import (
    confirm_import_job,
    draft_import_job,
    error_report_rows,
    list_import_jobs,
    move_job,
    run_import_job,
)
from automation.contacts.models import (
    Contact,
    CustomField,
    FieldType,
    ImportBasis,
    ImportJob,
    ImportStatus,
)
from automation.contacts.schema import ContactIn
from automation.contacts.service import create_contact
from automation.csvfiles import csv_text
from automation.db import make_session_factory
from automation.errors import InvalidInput

CONSENT = ImportPermission(ImportBasis.CONSENT)
CSV = b'Email,Name,Plan,=HYPERLINK("http://evil")\nana@example.com,Ana,pro,x\nbad,Bo,free,y\n'


@pytest.fixture
def plan(session):
    session.add(
        CustomField(
            name="plan",
            label="Plan",
            type=FieldType.CHOICE,
            options=["free"],
            created_at=clock.now(),
        )
    )
    session.commit()


def test_a_draft_shows_the_header_and_first_rows_and_is_never_run(session, plan):
    job, preview = draft_import_job(session, "c.csv", CSV)
    session.commit()
    assert preview.header == ["Email", "Name", "Plan", '=HYPERLINK("http://evil")']
    assert preview.rows[0] == ["ana@example.com", "Ana", "pro", "x"]
    assert job.status is ImportStatus.DRAFT
    assert list_import_jobs(session) == []
    factory = make_session_factory(session.get_bind())
    run_import_job(factory, job.id)  # a stray task for a draft does nothing
    session.expire_all()
    assert job.status is ImportStatus.DRAFT
    assert session.scalar(select(Contact.id)) is None


def test_confirming_checks_the_mapping_against_the_header(session, plan):
    job, _ = draft_import_job(session, "c.csv", CSV)
    for mapping, path in (
        ({"Name": "first_name"}, "columns"),
        ({"Email": "email", "Name": "nickname"}, "mapping.Name"),
        ({"Email": "email", "Name": "email"}, "mapping.Name"),
    ):
        with pytest.raises(InvalidInput) as exc:
            confirm_import_job(session, job.id, mapping, CONSENT)
        assert exc.value.errors[0].path == path
    assert job.status is ImportStatus.DRAFT
    confirm_import_job(
        session,
        job.id,
        {"Email": "email", "Name": "first_name", "Plan": "attributes.plan"},
        CONSENT,
    )
    assert job.status is ImportStatus.QUEUED
    assert job.mapping['=HYPERLINK("http://evil")'] == ""
    with pytest.raises(InvalidInput):
        confirm_import_job(session, job.id, {"Email": "email"}, CONSENT)


def test_a_confirmed_job_imports_and_its_error_report_is_safe_in_a_spreadsheet(session, plan):
    job, _ = draft_import_job(session, "c.csv", CSV)
    confirm_import_job(
        session,
        job.id,
        {"Email": "email", "Name": "first_name", "Plan": "attributes.plan"},
        CONSENT,
    )
    session.commit()
    report = run_import_job(make_session_factory(session.get_bind()), job.id)
    assert (report["created"], report["failed"]) == (0, 2)
    session.expire_all()
    rows = list(error_report_rows(session.get(ImportJob, job.id)))
    assert rows[0] == ["row", "column", "reason"]
    assert {(r[0], r[1]) for r in rows[1:]} == {("2", "Plan"), ("3", "Email")}
    # The CSV a user downloads never starts a cell with a formula character.
    job.report = {"errors": [{"row": 2, "column": '=HYPERLINK("x")', "reason": "+1"}]}
    out = csv_text(error_report_rows(job))
    assert "'=HYPERLINK" in out and "'+1" in out


def test_status_moves_are_checked():
    job = ImportJob(status=ImportStatus.DONE)
    with pytest.raises(InvalidInput):
        move_job(job, ImportStatus.RUNNING)
    job = ImportJob(status=ImportStatus.DRAFT)
    with pytest.raises(InvalidInput):
        move_job(job, ImportStatus.RUNNING)


def test_stale_drafts_are_dropped_when_a_new_one_arrives(session):
    old, _ = draft_import_job(session, "old.csv", b"Email\na@example.com\n")
    old.created_at = clock.now() - timedelta(days=2)
    session.commit()
    draft_import_job(session, "new.csv", b"Email\nb@example.com\n")
    session.commit()
    assert session.scalars(select(ImportJob.filename)).all() == ["new.csv"]


def test_header_names_with_spaces_around_them_still_map(session):
    data = b"Email , First Name\nana@example.com, Ana\n"
    assert preview_csv(data).header == ["Email", "First Name"]
    report = import_contacts(session, io.BufferedReader(io.BytesIO(data)), permission=CONSENT)
    assert report.created == 1
    assert session.scalar(select(Contact.first_name)) == "Ana"


def test_duplicates_of_one_contact(session):
    ana = create_contact(
        session, ContactIn(email="ana.p@gmail.com", first_name="Ana", last_name="P"), source="t"
    )
    same_inbox = create_contact(session, ContactIn(email="anap+news@googlemail.com"), source="t")
    same_name = create_contact(
        session, ContactIn(email="work@gmail.com", first_name="ana", last_name="p"), source="t"
    )
    create_contact(session, ContactIn(email="an_a%p@gmail.com"), source="t")  # LIKE characters
    create_contact(session, ContactIn(email="ana.p@example.com"), source="t")
    found = hygiene.duplicates_of(session, ana.id)
    assert [c.id for c in found] == [same_inbox.id, same_name.id]
    grouped = {frozenset(g.contact_ids) for g in hygiene.find_duplicates(session)}
    assert frozenset([ana.id, same_inbox.id]) in grouped
