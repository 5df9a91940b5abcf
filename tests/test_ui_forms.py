"""Every page form with bad input: the form comes back (422) with the error next to the
field it is about, and nothing was written."""

from __future__ import annotations

import io
import re

import pytest
from conftest import login
from sqlalchemy import func, select

from automation import clock
from automation.accounts.models import ApiKey, Role, User
from automation.accounts.service import create_user
from automation.contacts.models import ConsentRecord, Contact, CustomField, FieldType, ImportJob
from automation.contacts.schema import ContactIn
from automation.contacts.service import create_contact
from automation.email.models import SenderIdentity

PASSWORD = "correct horse battery"


@pytest.fixture
def admin(app, client):
    with app.extensions["nurture"].sessions() as s:
        create_user(s, "admin@example.com", PASSWORD, role=Role.ADMIN)
        for name, kind, options in (
            ("plan", FieldType.CHOICE, ["free", "pro"]),
            ("seats", FieldType.NUMBER, []),
            ("renewal", FieldType.DATE, []),
            ("vip", FieldType.BOOLEAN, []),
        ):
            s.add(
                CustomField(
                    name=name,
                    label=name.title(),
                    type=kind,
                    options=options,
                    created_at=clock.now(),
                )
            )
        s.flush()
        create_contact(
            s,
            ContactIn(email="ana@example.com", first_name="Ana", attributes={"plan": "free"}),
            source="test",
        )
        create_contact(s, ContactIn(email="ben@example.com", first_name="Ben"), source="test")
        s.commit()
    login(client, "admin@example.com", PASSWORD)
    return client


class Form:
    """Posts a page form with its CSRF token and reads the errors shown next to fields."""

    def __init__(self, client):
        self.client = client
        html = client.get("/").get_data(as_text=True)
        self.token = re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)

    def post(self, path: str, data: dict | None = None, **kw):
        return self.client.post(path, data={"csrf_token": self.token, **(data or {})}, **kw)


def field_error(html: str, path: str) -> str:
    """The message shown under the input named ``path``."""
    match = re.search(
        rf'<p class="field-error" id="e-{re.escape(path.replace(".", "-"))}">([^<]*)</p>', html
    )
    assert match, f"no error shown for {path}"
    return match.group(1)


def count(app, model, *where) -> int:
    with app.extensions["nurture"].sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def contact(app, email: str) -> Contact:
    with app.extensions["nurture"].sessions() as s:
        return s.scalar(select(Contact).where(Contact.email == email))


# --- contacts --------------------------------------------------------------------------

GOOD_CONTACT = {
    "email": "ana@example.com",
    "first_name": "Ana",
    "last_name": "",
    "external_id": "",
    "time_zone": "UTC",
    "lifecycle_stage": "subscriber",
    "score": "0",
    "status": "subscribed",
    "attributes.plan": "free",
    "attributes.seats": "",
    "attributes.renewal": "",
    "attributes.vip": "",
}


def test_contact_edit_shows_every_bad_field_and_saves_nothing(app, admin):
    form = Form(admin)
    ana = contact(app, "ana@example.com")
    response = form.post(
        f"/contacts/{ana.id}/edit",
        {
            **GOOD_CONTACT,
            "email": "not-an-email",
            "first_name": "Changed",
            "time_zone": "Mars/Base",
            "score": "lots",
            "attributes.plan": "gold",
            "attributes.seats": "many",
            "attributes.renewal": "31/12/2027",
            "attributes.vip": "perhaps",
        },
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "email" in field_error(html, "email").lower() or field_error(html, "email")
    assert field_error(html, "time_zone")
    assert "integer" in field_error(html, "score")
    assert field_error(html, "attributes.plan") == "expected one of free, pro"
    assert field_error(html, "attributes.seats") == "expected a number"
    assert field_error(html, "attributes.renewal") == "expected a date as YYYY-MM-DD"
    assert field_error(html, "attributes.vip") == "expected true/false"
    assert 'value="Changed"' in html  # what the user typed is kept
    after = contact(app, "ana@example.com")
    assert (after.first_name, after.attributes) == ("Ana", {"plan": "free"})


def test_contact_edit_to_an_email_in_use_is_shown_at_the_email_field(app, admin):
    form = Form(admin)
    ana = contact(app, "ana@example.com")
    response = form.post(
        f"/contacts/{ana.id}/edit",
        {**GOOD_CONTACT, "email": "ben@example.com", "first_name": "Changed"},
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert field_error(html, "email") == "a contact with this email already exists"
    assert contact(app, "ana@example.com").first_name == "Ana"


def test_refused_status_change_rolls_back_the_other_edits(app, admin):
    form = Form(admin)
    ana = contact(app, "ana@example.com")
    form.post(f"/contacts/{ana.id}/edit", {**GOOD_CONTACT, "status": "complained"})
    response = form.post(
        f"/contacts/{ana.id}/edit",
        {**GOOD_CONTACT, "status": "subscribed", "first_name": "Changed", "attributes.seats": "3"},
    )
    assert response.status_code == 422
    assert field_error(response.get_data(as_text=True), "status") == (
        "cannot change from complained to subscribed"
    )
    after = contact(app, "ana@example.com")
    assert (after.first_name, after.attributes, after.status.value) == (
        "Ana",
        {"plan": "free"},
        "complained",
    )


def test_contact_edit_saves_typed_values_and_records_consent(app, admin):
    form = Form(admin)
    ana = contact(app, "ana@example.com")
    response = form.post(
        f"/contacts/{ana.id}/edit",
        {
            **GOOD_CONTACT,
            "first_name": "Ana María",
            "score": "12",
            "status": "unsubscribed",
            "consent_text": "Asked by phone",
            "attributes.plan": "pro",
            "attributes.seats": "3",
            "attributes.renewal": "2027-01-31",
            "attributes.vip": "true",
        },
    )
    assert response.status_code == 302
    after = contact(app, "ana@example.com")
    assert after.first_name == "Ana María" and after.score == 12
    assert after.attributes == {"plan": "pro", "seats": 3, "renewal": "2027-01-31", "vip": True}
    assert count(app, ConsentRecord, ConsentRecord.consent_text == "Asked by phone") == 1
    # An emptied input removes the attribute.
    form.post(
        f"/contacts/{ana.id}/edit",
        {**GOOD_CONTACT, "status": "unsubscribed", "attributes.plan": ""},
    )
    assert contact(app, "ana@example.com").attributes == {}


def test_new_contact_with_bad_input_creates_nothing(app, admin):
    form = Form(admin)
    before = count(app, Contact)
    response = form.post(
        "/contacts/new",
        {**GOOD_CONTACT, "email": "", "attributes.seats": "x", "tags": "a, b"},
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert field_error(html, "email")
    assert field_error(html, "attributes.seats") == "expected a number"
    assert count(app, Contact) == before
    ok = form.post("/contacts/new", {**GOOD_CONTACT, "email": "new@example.com", "tags": "a, b"})
    assert ok.status_code == 302
    assert [t.name for t in contact(app, "new@example.com").tags] == ["a", "b"]


def test_tag_add_refuses_empty_and_too_long_names(app, admin):
    form = Form(admin)
    ana = contact(app, "ana@example.com")
    for bad in ("   ", "x" * 101):
        response = form.post(f"/contacts/{ana.id}/tags", {"tag": bad})
        assert response.status_code == 422
        assert field_error(response.get_data(as_text=True), "tag")
    assert contact(app, "ana@example.com").tags == []
    assert form.post(f"/contacts/{ana.id}/tags", {"tag": "vip"}).status_code == 302
    assert form.post(f"/contacts/{ana.id}/tags/remove", {"tag": "vip"}).status_code == 302
    assert contact(app, "ana@example.com").tags == []


def test_merge_refuses_itself_a_missing_pick_and_a_gone_contact(app, admin):
    form = Form(admin)
    ana = contact(app, "ana@example.com")
    for data, message in (
        ({"duplicate_id": str(ana.id)}, "cannot merge a contact into itself"),
        ({}, "pick the contact to merge in"),
        ({"duplicate_id": "999999"}, "that contact no longer exists"),
        ({"duplicate_id": "abc"}, "pick the contact to merge in"),
    ):
        response = form.post(f"/contacts/{ana.id}/merge", data)
        assert response.status_code == 422
        assert field_error(response.get_data(as_text=True), "duplicate_id") == message
    assert count(app, Contact) == 2


def test_merge_moves_the_duplicate_and_returns_to_a_safe_next_page(app, admin):
    form = Form(admin)
    ana, ben = contact(app, "ana@example.com"), contact(app, "ben@example.com")
    response = form.post(
        f"/contacts/{ana.id}/merge",
        {"duplicate_id": str(ben.id), "next": "https://evil.example/"},
    )
    assert response.headers["Location"] == f"/contacts/{ana.id}"
    assert contact(app, "ben@example.com") is None


@pytest.mark.parametrize("action", ["delete", "erase"])
def test_delete_and_erase_need_the_typed_address(app, admin, action):
    form = Form(admin)
    ana = contact(app, "ana@example.com")
    response = form.post(f"/contacts/{ana.id}/{action}", {"confirm": "ben@example.com"})
    assert response.status_code == 422
    assert field_error(response.get_data(as_text=True), "confirm")
    assert contact(app, "ana@example.com") is not None
    done = form.post(f"/contacts/{ana.id}/{action}", {"confirm": " ANA@example.com "})
    assert done.status_code == 302
    assert contact(app, "ana@example.com") is None


def test_export_downloads_the_contacts_data_as_json(app, admin):
    ana = contact(app, "ana@example.com")
    response = admin.get(f"/contacts/{ana.id}/export")
    assert response.headers["Content-Disposition"] == f"attachment; filename=contact-{ana.id}.json"
    assert response.json["profile"]["email"] == "ana@example.com"
    assert response.json["consent_records"]


# --- import ----------------------------------------------------------------------------


def upload(form, content: bytes, name: str = "c.csv", **data):
    return form.post(
        "/contacts/import",
        {"file": (io.BytesIO(content), name), **data},
        content_type="multipart/form-data",
    )


def test_import_upload_refuses_missing_empty_and_undecodable_files(app, admin):
    form = Form(admin)
    for data, message in (
        ({}, "choose a CSV file to upload"),
        ({"file": (io.BytesIO(b""), "empty.csv")}, "the file is empty"),
        ({"file": (io.BytesIO("Email\nJos\xe9\n".encode("latin-1")), "l.csv")}, "not valid utf-8"),
        (
            {"file": (io.BytesIO(b"Email\na@example.com\n"), "c.csv"), "encoding": "ebcdic"},
            "encodings",
        ),
    ):
        response = form.post("/contacts/import", data, content_type="multipart/form-data")
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        path = "encoding" if "encoding" in data else "file"
        assert message in field_error(html, path)
    assert count(app, ImportJob) == 0


def test_mapping_step_suggests_fields_and_refuses_bad_mappings(app, admin):
    form = Form(admin)
    response = upload(form, b"E-mail,Given name,Plan,Shoe size\nana@example.com,Ana,pro,42\n")
    assert response.status_code == 302
    mapping_url = response.headers["Location"]
    page = admin.get(mapping_url).get_data(as_text=True)
    selected = {
        name: re.search(r'<option value="([^"]*)" selected', block).group(1)
        for name, block in re.findall(r'<select id="(column-\d)"(.*?)</select>', page, re.S)
        if " selected" in block
    }
    assert selected == {"column-0": "email", "column-2": "attributes.plan"}
    assert "<code>ana@example.com</code>" in page  # sample values
    for data, path, message in (
        ({"column-1": "first_name"}, "columns", "the file has no email column"),
        (
            {"column-0": "email", "column-3": "attributes.shoe"},
            "mapping.Shoe size",
            "unknown target",
        ),
        ({"column-0": "email", "column-1": "email"}, "mapping.Given name", "already mapped"),
    ):
        bad = form.post(mapping_url, data)
        assert bad.status_code == 422
        html = bad.get_data(as_text=True)
        shown = (
            field_error(html, path)
            if path == "columns"
            else re.search(r'class="field-error" id="e-column-\d">([^<]*)<', html).group(1)
        )
        assert message in shown
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(ImportJob.status)).value == "draft"
    queued = form.post(
        mapping_url, {"column-0": "email", "column-1": "first_name", "permission": "consent"}
    )
    assert queued.status_code == 302
    with app.extensions["nurture"].sessions() as s:
        job = s.scalar(select(ImportJob))
        assert job.status.value == "queued"
        assert job.mapping == {
            "E-mail": "email",
            "Given name": "first_name",
            "Plan": "",
            "Shoe size": "",
        }
    # The mapping of a queued job cannot be changed any more.
    assert admin.get(mapping_url).status_code == 302


def test_a_file_that_is_not_csv_is_refused_at_upload(app, admin):
    form = Form(admin)
    response = upload(form, b'"unclosed\n', name="x.csv")
    # A lone quoted field is still one CSV column; what matters is that nothing is queued.
    assert response.status_code in (302, 422)
    assert count(app, ImportJob, ImportJob.status != "draft") == 0


# --- settings --------------------------------------------------------------------------


def test_sender_identity_form_names_each_bad_field(app, admin):
    form = Form(admin)
    response = form.post(
        "/settings/senders/new",
        {
            "name": "",
            "from_name": "Shop",
            "from_email": "nope",
            "reply_to": "also nope",
            "max_per_minute": "0",
        },
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    for path in ("name", "from_email", "reply_to", "max_per_minute"):
        assert field_error(html, path)
    assert count(app, SenderIdentity) == 0
    good = {
        "name": "News",
        "from_name": "Shop",
        "from_email": "news@example.com",
        "max_per_minute": "60",
    }
    assert form.post("/settings/senders/new", good).status_code == 302
    dup = form.post("/settings/senders/new", good)
    assert dup.status_code == 422
    assert (
        field_error(dup.get_data(as_text=True), "name") == "another sender identity has this name"
    )
    assert count(app, SenderIdentity) == 1


def test_sender_identity_edit_with_bad_input_keeps_the_stored_values(app, admin):
    form = Form(admin)
    good = {
        "name": "News",
        "from_name": "Shop",
        "from_email": "news@example.com",
        "max_per_minute": "60",
    }
    form.post("/settings/senders/new", good)
    with app.extensions["nurture"].sessions() as s:
        sender_id = s.scalar(select(SenderIdentity.id))
    response = form.post(
        f"/settings/senders/{sender_id}", {**good, "from_email": "x@", "from_name": "New"}
    )
    assert response.status_code == 422
    with app.extensions["nurture"].sessions() as s:
        assert s.get(SenderIdentity, sender_id).from_name == "Shop"


def test_custom_field_form_names_each_bad_field(app, admin):
    form = Form(admin)
    before = count(app, CustomField)
    for data, path, message in (
        ({"name": "Bad Name", "label": "X", "type": "text"}, "name", "pattern"),
        ({"name": "x", "label": "", "type": "text"}, "label", "at least 1"),
        ({"name": "x", "label": "X", "type": "colour"}, "type", "text"),
        (
            {"name": "x", "label": "X", "type": "choice", "options": ""},
            "options",
            "at least one option",
        ),
        ({"name": "plan", "label": "Plan", "type": "text"}, "name", "already exists"),
    ):
        response = form.post("/settings/fields", data)
        assert response.status_code == 422, data
        assert message in field_error(response.get_data(as_text=True), path), data
    assert count(app, CustomField) == before
    ok = form.post(
        "/settings/fields",
        {"name": "size", "label": "Size", "type": "choice", "options": "S\nM, L"},
    )
    assert ok.status_code == 302
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(CustomField.options).where(CustomField.name == "size")) == [
            "S",
            "M",
            "L",
        ]


def test_a_custom_field_a_segment_uses_is_kept_and_the_page_says_why(app, admin):
    from automation.segments.models import Segment, SegmentKind

    with app.extensions["nurture"].sessions() as s:
        s.add(
            Segment(
                name="Pro",
                kind=SegmentKind.DYNAMIC,
                definition={
                    "conditions": [{"field": "attributes.plan", "operator": "equals", "value": "x"}]
                },
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )
        s.commit()
    response = Form(admin).post("/settings/fields/plan/delete", {})
    assert response.status_code == 302
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "custom field &#39;plan&#39; is used by segment &#39;Pro&#39;" in page
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(CustomField.id).where(CustomField.name == "plan")) is not None


def test_user_form_names_each_bad_field(app, admin):
    form = Form(admin)
    for data, path, message in (
        ({"email": "nope", "role": "marketer", "password": "long enough pw"}, "email", ""),
        (
            {"email": "m@example.com", "role": "marketer", "password": "short"},
            "password",
            "at least 10",
        ),
        (
            {"email": "m@example.com", "role": "owner", "password": "long enough pw"},
            "role",
            "viewer",
        ),
        (
            {"email": "admin@example.com", "role": "viewer", "password": "long enough pw"},
            "email",
            "exists",
        ),
    ):
        response = form.post("/settings/users", data)
        assert response.status_code == 422, data
        html = response.get_data(as_text=True)
        assert message in field_error(html, path), data
        assert "long enough pw" not in html  # a typed password is never echoed back
    assert count(app, User) == 1


def test_a_blank_password_is_generated_and_shown_once(app, admin):
    form = Form(admin)
    response = form.post(
        "/settings/users", {"email": "m@example.com", "role": "marketer", "password": ""}
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    password = re.search(r'id="new-password">([^<]+)<', response.get_data(as_text=True)).group(1)
    other = type(admin)(app)  # a fresh browser
    assert login(other, "m@example.com", password).status_code == 302


def test_the_last_admin_cannot_be_demoted_or_deactivated(app, admin):
    form = Form(admin)
    with app.extensions["nurture"].sessions() as s:
        admin_id = s.scalar(select(User.id))
    demote = form.post(f"/settings/users/{admin_id}/role", {"role": "viewer"})
    assert demote.status_code == 422
    assert "last active admin" in demote.get_data(as_text=True)
    self_off = form.post(f"/settings/users/{admin_id}/active", {"active": "false"})
    assert self_off.status_code == 422
    assert "your own account" in self_off.get_data(as_text=True)
    bad_role = form.post(f"/settings/users/{admin_id}/role", {"role": "owner"})
    assert bad_role.status_code == 422
    with app.extensions["nurture"].sessions() as s:
        user = s.get(User, admin_id)
        assert (user.role, user.is_active) == (Role.ADMIN, True)


def test_a_deactivated_user_is_logged_out_at_once(app, admin, user_factory):
    form = Form(admin)
    email, password = user_factory("m@example.com", role="marketer")
    marketer = type(admin)(app)
    login(marketer, email, password)
    assert marketer.get("/contacts").status_code == 200
    with app.extensions["nurture"].sessions() as s:
        user_id = s.scalar(select(User.id).where(User.email == email))
    assert form.post(f"/settings/users/{user_id}/active", {"active": "false"}).status_code == 302
    assert marketer.get("/contacts").status_code == 302
    assert login(type(admin)(app), email, password).status_code == 401


def test_api_key_form_refuses_a_missing_or_long_name_and_a_bad_role(app, admin):
    form = Form(admin)
    for data, path in (
        ({"name": " ", "role": "viewer"}, "name"),
        ({"name": "x" * 101, "role": "viewer"}, "name"),
        ({"name": "shop", "role": "root"}, "role"),
    ):
        response = form.post("/settings/api-keys", data)
        assert response.status_code == 422
        assert field_error(response.get_data(as_text=True), path)
    assert count(app, ApiKey) == 0


def test_a_created_api_key_is_shown_once_and_works(app, admin):
    form = Form(admin)
    response = form.post("/settings/api-keys", {"name": "shop", "role": "viewer"})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    token = re.search(r'id="new-key">([^<]+)<', response.get_data(as_text=True)).group(1)
    listing = admin.get("/settings/api-keys").get_data(as_text=True)
    assert token not in listing and token.split("_")[1] in listing
    fresh = type(admin)(app)
    assert (
        fresh.get("/api/v1/contacts", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    with app.extensions["nurture"].sessions() as s:
        key_id = s.scalar(select(ApiKey.id))
    assert form.post(f"/settings/api-keys/{key_id}/revoke").status_code == 302
    assert (
        fresh.get("/api/v1/contacts", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )


def test_custom_fields_page_indexes_a_field_and_shows_its_status(app, admin, db_url):
    from automation.contacts.models import IndexStatus
    from automation.segments.field_indexes import sync_field_indexes

    form = Form(admin)
    assert form.post("/settings/fields/plan/index", {"indexed": "1"}).status_code == 302
    sync_field_indexes(app.extensions["nurture"].engine)  # the queued task's work
    expected = "ready" if db_url.startswith("postgresql") else "unsupported"
    page = admin.get("/settings/fields").get_data(as_text=True)
    row = re.search(r"<tr><td>Plan</td>.*?</tr>", page, re.S).group(0)
    assert f'<span class="status {expected}">{expected}</span>' in row
    assert "Drop index" in row
    ok = form.post(
        "/settings/fields",
        {"name": "region", "label": "Region", "type": "text", "indexed": "1"},
    )
    assert ok.status_code == 302
    with app.extensions["nurture"].sessions() as s:
        region = s.scalar(select(CustomField).where(CustomField.name == "region"))
        assert region.indexed and region.index_status is not IndexStatus.NONE
    assert form.post("/settings/fields/plan/index", {"indexed": "0"}).status_code == 302
    assert form.post("/settings/fields/region/index", {"indexed": "0"}).status_code == 302
    sync_field_indexes(app.extensions["nurture"].engine)  # drops what it built
    page = admin.get("/settings/fields").get_data(as_text=True)
    row = re.search(r"<tr><td>Plan</td>.*?</tr>", page, re.S).group(0)
    assert "—" in row and ">Index<" in row


def test_mapping_page_previews_rows_as_stored_and_asks_for_the_permission(app, admin):
    form = Form(admin)
    response = upload(form, b"E-mail,Plan,Renewal\nana@example.com,PRO,11/25/2026\n")
    mapping_url = response.headers["Location"]
    page = admin.get(mapping_url).get_data(as_text=True)
    assert 'id="stored-preview"' in page and "choose the permission" in page
    chosen = {"column-0": "email", "column-1": "attributes.plan", "column-2": "attributes.renewal"}
    shown = form.post(
        mapping_url,
        {**chosen, "permission": "consent", "date_format": "%m/%d/%Y", "action": "preview"},
    )
    assert shown.status_code == 200
    html = shown.get_data(as_text=True)
    assert "plan=pro" in html and "renewal=2026-11-25" in html and "subscribed" in html
    with app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(ImportJob.status)).value == "draft"  # a preview queues nothing
    refused = form.post(mapping_url, {"column-1": "attributes.plan", "action": "import"})
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert "declare what permission" in field_error(html, "permission")
    assert "no email column" in field_error(html, "columns")  # both in one answer
    queued = form.post(mapping_url, {**chosen, "permission": "none", "action": "import"})
    assert queued.status_code == 302
    with app.extensions["nurture"].sessions() as s:
        job = s.scalar(select(ImportJob))
        assert (job.status.value, job.permission_basis.value) == ("queued", "none")
