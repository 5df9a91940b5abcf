"""Operations: the outbox backlog and tick lag, this host's tracking spools, senders
(identities and the default sender) paused by the complaint guard (resumed by an admin;
the banner on every page links here), then the outbox itself:
messages by status, `unknown` ones resent by hand (they may have been delivered once
already), deferred ones with their reason and next attempt."""

from __future__ import annotations

import math
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from automation.accounts.models import Role
from automation.contacts.models import Contact
from automation.email import outbox
from automation.email.models import MessageStatus
from automation.ops.backlog import outbox_backlog, paused_senders, spool_backlogs, tick_lag
from automation.tracking.bounces import resume_default, resume_identity
from web.auth import login_required
from web.database import db, nurture
from web.ids import page_number
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, errors_of

PER_PAGE = 50


@bp.route("/outbox", endpoint="outbox")
@login_required()
def outbox_list() -> Any:
    raw = request.args.get("status", "")
    status = MessageStatus(raw) if raw in set(MessageStatus) else None
    page = request.args.get("page", 1, type=page_number)
    messages, total = outbox.search_messages(db(), status=status, page=page, per_page=PER_PAGE)
    ids = {m.contact_id for m in messages}
    emails = (
        dict(db().execute(select(Contact.id, Contact.email).where(Contact.id.in_(ids))).all())
        if ids
        else {}
    )
    return render_template(
        "outbox/list.html",
        messages=messages,
        emails=emails,
        total=total,
        page=page,
        pages=max(math.ceil(total / PER_PAGE), 1),
        per_page=PER_PAGE,
        status=status.value if status else "",
        statuses=[s.value for s in MessageStatus],
        invalid_status=bool(raw) and status is None,
        backlog=outbox_backlog(db()),
        lag=tick_lag(db()),
        paused=paused_senders(db(), nurture().settings),
        spools=spool_backlogs(nurture().settings),
    )


@bp.route("/outbox/senders/<int:identity_id>/resume", methods=["POST"])
@login_required(Role.ADMIN)
def outbox_resume_sender(identity_id: int) -> Any:
    identity = resume_identity(db(), identity_id)
    db().commit()
    flash(f"Sender identity {identity.name} resumed: its waiting messages go out again.", "success")
    return redirect(url_for("ui.outbox"))


@bp.route("/outbox/senders/default/resume", methods=["POST"])
@login_required(Role.ADMIN)
def outbox_resume_default_sender() -> Any:
    sender = resume_default(db(), nurture().settings)
    db().commit()
    flash(
        f"Default sender {sender.from_email} resumed: its waiting messages go out again.",
        "success",
    )
    return redirect(url_for("ui.outbox"))


@bp.route("/outbox/<bigid:message_id>/resend", methods=["POST"])
@login_required(Role.MARKETER)
def outbox_resend(message_id: int) -> Any:
    try:
        outbox.resend_message(db(), message_id)
    except FORM_ERRORS as exc:
        db().rollback()
        flash(next(iter(errors_of(exc).values())), "error")
    else:
        db().commit()
        flash(f"Message {message_id} queued again.", "success")
    return redirect(url_for("ui.outbox", status=request.form.get("status") or None))
