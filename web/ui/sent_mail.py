"""The "Sent mail (local)" page: what the embedded SMTP catcher received."""

from __future__ import annotations

from typing import Any

from flask import abort, render_template

from automation.email.catcher import get_caught, list_caught
from web.auth import login_required
from web.database import nurture
from web.ui.blueprint import bp


@bp.route("/sent-mail")
@login_required()
def sent_mail() -> Any:
    return render_template(
        "sent_mail/list.html",
        mails=list_caught(nurture().settings.maildir),
        embedded=nurture().settings.catcher_enabled,
    )


@bp.route("/sent-mail/<key>")
@login_required()
def sent_mail_detail(key: str) -> Any:
    if not key.replace(".", "").replace("_", "").replace("-", "").isalnum():
        abort(404)
    mail = get_caught(nurture().settings.maildir, key)
    if mail is None:
        abort(404)
    return render_template("sent_mail/detail.html", mail=mail)
