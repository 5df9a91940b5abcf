"""Sender identities and account management, as domain functions."""

from __future__ import annotations

import pytest

from automation.accounts.models import Role
from automation.accounts.service import (
    authenticate,
    change_role,
    create_user,
    reset_password,
    set_active,
)
from automation.email import identities
from automation.errors import Conflict, InvalidInput, NotFound


def test_sender_input_is_validated_field_by_field():
    with pytest.raises(InvalidInput) as exc:
        identities.parse_sender_identity(
            {"name": "", "from_name": "x" * 101, "from_email": "no", "max_per_minute": 0}
        )
    assert {e.path for e in exc.value.errors} == {
        "name",
        "from_name",
        "from_email",
        "max_per_minute",
    }
    clean = identities.parse_sender_identity(
        {"name": " News ", "from_name": "Shop", "from_email": "News@Example.COM", "reply_to": None}
    )
    assert (clean.name, clean.from_email, clean.max_per_minute) == ("News", "news@example.com", 600)


def test_sender_crud_keeps_names_unique(session):
    data = identities.parse_sender_identity(
        {"name": "News", "from_name": "Shop", "from_email": "n@example.com"}
    )
    sender = identities.create_sender_identity(session, data)
    assert identities.format_address(sender) == "Shop <n@example.com>"
    with pytest.raises(Conflict) as exc:
        identities.create_sender_identity(session, data)
    assert exc.value.errors[0].path == "name"
    other = identities.create_sender_identity(session, data.model_copy(update={"name": "Other"}))
    with pytest.raises(Conflict):
        identities.update_sender_identity(session, other.id, data)
    renamed = identities.update_sender_identity(
        session, sender.id, data.model_copy(update={"name": "Renamed"})
    )
    assert [s.name for s in identities.list_sender_identities(session)] == ["Other", "Renamed"]
    identities.delete_sender_identity(session, renamed.id)
    with pytest.raises(NotFound):
        identities.get_sender_identity(session, renamed.id)


def test_the_last_active_admin_stays_an_active_admin(session):
    admin = create_user(session, "a@example.com", "long enough pw", role=Role.ADMIN)
    with pytest.raises(Conflict) as exc:
        change_role(session, admin.id, Role.VIEWER)
    assert exc.value.errors[0].path == "role"
    with pytest.raises(Conflict):
        set_active(session, admin.id, False)
    second = create_user(session, "b@example.com", "long enough pw", role=Role.ADMIN)
    change_role(session, admin.id, Role.MARKETER)
    with pytest.raises(Conflict):
        set_active(session, second.id, False)
    assert (admin.role, second.is_active) == (Role.MARKETER, True)


def test_a_deactivated_user_cannot_log_in_and_a_reset_password_works(session):
    create_user(session, "a@example.com", "long enough pw", role=Role.ADMIN)
    user = create_user(session, "m@example.com", "long enough pw", role=Role.MARKETER)
    password = reset_password(session, user.id)
    assert authenticate(session, "m@example.com", "long enough pw", "1.1.1.1") is None
    assert authenticate(session, "m@example.com", password, "1.1.1.1") is user
    set_active(session, user.id, False)
    assert authenticate(session, "m@example.com", password, "1.1.1.2") is None
    with pytest.raises(NotFound):
        set_active(session, 999, True)


def test_a_sender_identity_with_mail_waiting_to_go_out_from_it_is_kept(session):
    """Deleting it would null the messages' sender: they would leave from the default
    sender instead, unannounced."""
    from emailkit import make_contact, make_template
    from sqlalchemy import update

    from automation.email.models import Message, MessageStatus
    from automation.email.outbox import queue_message

    data = identities.parse_sender_identity(
        {"name": "Founder", "from_name": "Alex", "from_email": "alex@example.com"}
    )
    founder = identities.create_sender_identity(session, data)
    template = make_template(session, name="Hello")
    contact = make_contact(session, "reader@example.com")
    message = queue_message(
        session, dedupe_key="hello:1", contact_id=contact, template_version_id=template.version.id
    )
    session.execute(
        update(Message).where(Message.id == message).values(sender_identity_id=founder.id)
    )
    with pytest.raises(Conflict) as refused:
        identities.delete_sender_identity(session, founder.id)
    assert str(refused.value) == (
        "sender identity 'Founder' has 1 message(s) waiting to be sent from it; they must go "
        "out (or be cancelled) first"
    )
    session.execute(update(Message).where(Message.id == message).values(status=MessageStatus.SENT))
    identities.delete_sender_identity(session, founder.id)
    with pytest.raises(NotFound):
        identities.get_sender_identity(session, founder.id)
