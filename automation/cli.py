"""The `nurture` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import click

from automation.accounts.models import Role
from automation.config import load_settings
from automation.csvfiles import write_rows
from automation.db import transaction
from automation.errors import DomainError, InvalidInput
from automation.runtime import runtime

ADMIN_EMAIL = "admin@example.com"


def _fail(exc: DomainError) -> None:
    lines = [exc.message]
    if isinstance(exc, InvalidInput):
        lines = [f"{e.path}: {e.message}" for e in exc.errors]
    raise click.ClickException("\n".join(lines))


@click.group()
def main() -> None:
    """Nurture: marketing automation and email sequences."""


@main.command()
def doctor() -> None:
    """Check the configuration and say what is wrong."""
    from automation.ops.doctor import diagnose

    findings = diagnose(runtime())
    marks = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "error": ("✗", "red")}
    for finding in findings:
        mark, colour = marks[finding.level]
        click.secho(f"{mark} {finding.topic}: {finding.message}", fg=colour)
    if any(f.level == "error" for f in findings):
        raise SystemExit(1)


@main.command()
def migrate() -> None:
    """Apply database migrations."""
    from automation.migrate import upgrade

    upgrade(runtime().settings.database_url)
    click.echo("database is up to date")


@main.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice([r.value for r in Role]), default="marketer")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user(email: str, role: str, password: str) -> None:
    """Create a user who can log in to the UI."""
    from automation.accounts.service import create_user as create

    try:
        with transaction(runtime().sessions) as session:
            user = create(session, email, password, role=Role(role))
            click.echo(f"created {user.email} ({user.role.value})")
    except DomainError as exc:
        _fail(exc)


@main.command("create-api-key")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), default="marketer")
def create_api_key(name: str, role: str) -> None:
    """Create an API key and print it (it is shown only this once)."""
    from automation.accounts.service import create_api_key as create

    with transaction(runtime().sessions) as session:
        new = create(session, name, role=Role(role))
    click.echo(new.token)


@main.group("import")
def import_group() -> None:
    """Import data from files."""


@import_group.command("contacts")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mapping", help='JSON object: {"CSV column": "field"}; "" ignores a column')
@click.option("--encoding", default="utf-8", show_default=True)
@click.option(
    "--permission",
    required=True,
    type=click.Choice(["consent", "customers", "legitimate_interest", "none"]),
    help="What permission to email these contacts rests on (none: kept, not mailed)",
)
@click.option("--consent-text", help="How and where the permission was obtained")
@click.option("--date-format", help="How the file writes dates, e.g. %m/%d/%Y")
@click.option("--decimal-comma", is_flag=True, help="Numbers are written 1.234,5")
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the per-row error report to this CSV file",
)
def import_contacts_cmd(
    path: Path,
    mapping: str | None,
    encoding: str,
    permission: str,
    consent_text: str | None,
    date_format: str | None,
    decimal_comma: bool,
    errors_path: Path | None,
) -> None:
    """Import contacts from a CSV file (upsert by email, streamed)."""

    from automation.contacts.importer import ImportReport, import_contacts, iter_csv_errors
    from automation.contacts.jobs import import_options

    try:
        declared, fmt = import_options(permission, consent_text, date_format, decimal_comma)
    except DomainError as exc:
        _fail(exc)
        return
    assert declared is not None  # required above

    try:
        mapping_dict = json.loads(mapping) if mapping else None
    except ValueError:
        raise click.BadParameter("not valid JSON", param_hint="--mapping") from None
    size = path.stat().st_size
    sessions = runtime().sessions
    with (
        path.open("rb") as stream,
        sessions() as session,
        click.progressbar(length=size, label="Importing", show_pos=False, show_percent=True) as bar,
    ):
        last = [0]

        def progress(report: ImportReport) -> None:
            session.commit()
            position = stream.tell()
            bar.update(position - last[0])
            last[0] = position

        try:
            report = import_contacts(
                session,
                stream,
                permission=declared,
                mapping=mapping_dict,
                encoding=encoding,
                fmt=fmt,
                on_batch=progress,
            )
        except DomainError as exc:
            session.rollback()
            _fail(exc)
            return
        session.commit()
    click.echo(
        f"rows: {report.rows}  created: {report.created}  updated: {report.updated}  "
        f"unchanged: {report.unchanged}  failed: {report.failed}"
    )
    if report.ignored_columns:
        click.echo(f"ignored columns: {', '.join(report.ignored_columns)}")
    for error in report.errors[:20]:
        click.echo(f"row {error.row}, column {error.column or '-'}: {error.reason}", err=True)
    if len(report.errors) > 20:
        click.echo(f"... and {len(report.errors) - 20} more errors", err=True)
    if errors_path:
        with errors_path.open("w", newline="") as fh:
            write_rows(fh, iter_csv_errors(report))
        click.echo(f"error report written to {errors_path}")


@main.group("workflow")
def workflow_group() -> None:
    """Validate, import and export workflow documents (JSON)."""


def _read_document(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise click.ClickException(f"{path}: not valid JSON ({exc})") from None


@workflow_group.command("validate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def workflow_validate(path: Path) -> None:
    """Check a workflow file; each error names its node. Exit status 1 when invalid."""
    from sqlalchemy.exc import SQLAlchemyError

    from automation.workflows.validation import check_definition

    document = _read_document(path)
    try:
        with runtime().sessions() as session:
            _, errors = check_definition(session, document)
    except SQLAlchemyError:
        click.echo("(database unavailable: templates and fields were not checked)", err=True)
        _, errors = check_definition(None, document)
    if errors:
        for error in errors:
            click.echo(f"{error.path}: {error.message}", err=True)
        raise SystemExit(1)
    click.echo(f"{path}: valid")


@workflow_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--publish", is_flag=True, help="Publish it at once (new contacts can enter)")
def workflow_import(path: Path, publish: bool) -> None:
    """Create a workflow from an exported JSON file."""
    from automation.workflows.service import import_workflow

    document = _read_document(path)
    try:
        with transaction(runtime().sessions) as session:
            workflow = import_workflow(session, document, publish_now=publish)
            click.echo(
                f"imported workflow {workflow.id} ({workflow.name}), {workflow.status.value}"
            )
    except DomainError as exc:
        _fail(exc)


@workflow_group.command("export")
@click.argument("workflow_id", type=int)
@click.option("--version", type=int, help="A published version (default: the draft)")
def workflow_export(workflow_id: int, version: int | None) -> None:
    """Print a workflow as an importable JSON document."""
    from automation.workflows.service import export_workflow

    try:
        with runtime().sessions() as session:
            document = export_workflow(session, workflow_id, version=version)
    except DomainError as exc:
        _fail(exc)
        return
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@main.group("tracking")
def tracking_group() -> None:
    """Tracking queues on this machine."""


@tracking_group.command("forward")
@click.option("--once", is_flag=True, help="Forward what is spooled now, then exit")
def tracking_forward(once: bool) -> None:
    """Move this machine's hit spools (var/hits, var/site) into the Redis hit queues.

    Run one on every machine that serves tracking URLs when NURTURE_HIT_QUEUE_PUSH is
    `spool` (the default with a Redis hit queue). Safe to kill at any time. With
    NURTURE_HIT_QUEUE_PUSH=redis the spool stays empty (this only moves what an earlier
    configuration left there)."""
    import threading

    from automation.ops.logs import configure_logging
    from automation.tracking.forwarding import Forwarder
    from automation.tracking.hits import tracking_redis_url

    settings = load_settings()
    if not tracking_redis_url(settings):
        # The embedded default: the tracking worker drains the spool itself.
        click.echo("nothing to forward: no Redis hit queue (NURTURE_HIT_QUEUE_URL)")
        return
    forwarder = Forwarder.from_settings(settings)
    if once:
        click.echo(f"forwarded {forwarder.forward_all()} lines")
        return
    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(f"forwarding {settings.var_dir}/{{hits,site}} to Redis (Ctrl-C stops)")
    forwarder.run(stop)


@main.group("bounces")
def bounces_group() -> None:
    """Bounces and complaints from a mailbox or an MTA."""


EX_TEMPFAIL = 75  # sysexits.h: an MTA keeps the mail and pipes it again later


@bounces_group.command("ingest")
@click.argument("file", type=click.File("rb"), default="-")
def bounces_ingest(file: BinaryIO) -> None:
    """Record one bounce (RFC 3464 DSN) or complaint (ARF report) read from FILE or stdin.

    Made for an MTA's pipe, e.g. Postfix aliases: `bounces: "|nurture bounces ingest"`.
    Exit status 0: recorded (or nothing to record); 1: not a report, nothing written;
    75 (EX_TEMPFAIL): the database is unreachable, so the MTA should retry."""
    from sqlalchemy.exc import OperationalError

    from automation.signing import TokenSigner
    from automation.tracking.bounces import parse_report, record_feedback

    raw = file.read()
    try:
        items = parse_report(raw)
    except DomainError as exc:
        _fail(exc)
        return
    current = runtime()
    try:
        with transaction(current.sessions) as session:
            report = record_feedback(
                session,
                items,
                TokenSigner.from_settings(current.settings),
                source="cli",
                settings=current.settings,
            )
    except OperationalError as exc:
        click.echo(f"database unavailable, try again later: {exc.orig or exc}", err=True)
        raise SystemExit(EX_TEMPFAIL) from None
    click.echo(json.dumps(report.as_dict()))


@main.command()
@click.option("--contacts", "count", default=3000, show_default=True)
@click.option("--force", is_flag=True, help="Load even if the database already has contacts")
def demo(count: int, force: bool) -> None:
    """Load a realistic demo data set."""
    from automation.demo import load_demo

    with transaction(runtime().sessions) as session:
        summary = load_demo(session, contacts=count, force=force)
    click.echo(summary)


@main.command()
@click.option("--port", default=1025, show_default=True)
def catcher(port: int) -> None:
    """Run the local SMTP catcher (embedded default)."""
    from automation.email.catcher import start_catcher

    settings = load_settings()
    controller = start_catcher(settings.maildir, port=port)
    click.echo(f"SMTP catcher on 127.0.0.1:{port}, mail kept in {settings.maildir}")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        controller.stop()


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM if `nurture run` itself is killed, so none is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _is_empty_embedded() -> bool:
    from sqlalchemy import func, select

    from automation.contacts.models import Contact

    settings = runtime().settings
    if not settings.embedded:
        return False
    with runtime().sessions() as session:
        return not session.scalar(select(func.count()).select_from(Contact))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--no-demo", is_flag=True, help="Do not load demo data into an empty database")
def run(host: str, port: int, no_demo: bool) -> None:
    """Migrate, then run web, worker, beat (the SMTP catcher, the hit forwarder) until Ctrl-C."""
    from automation.accounts.service import ensure_admin
    from automation.demo import load_demo
    from automation.migrate import upgrade
    from automation.tracking.hits import spool_forwarded

    settings = runtime().settings
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with transaction(runtime().sessions) as session:
        password = ensure_admin(session, ADMIN_EMAIL)
    if password:
        click.secho(f"Created the first admin: {ADMIN_EMAIL} / {password}", fg="green", bold=True)
        click.echo("(shown once; change it under Settings → Users)")
    if not no_demo and _is_empty_embedded():
        click.echo("Empty embedded database: loading demo data (`nurture demo`)...")
        with transaction(runtime().sessions) as session:
            click.echo(load_demo(session))

    py = sys.executable
    env = dict(os.environ)
    children: dict[str, list[str]] = {
        "web": [
            py,
            "-m",
            "gunicorn",
            "--bind",
            f"{host}:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--access-logfile",
            "-",
            "web.wsgi:app",
        ],
        "worker": [
            py,
            "-m",
            "celery",
            "-A",
            "automation.tasks",
            "worker",
            "--loglevel",
            "INFO",
            "-Q",
            "engine,send,tracking",
            "--concurrency",
            "2",
        ],
        "beat": [
            py,
            "-m",
            "celery",
            "-A",
            "automation.tasks",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(settings.var_dir / "celerybeat-schedule"),
        ],
    }
    if spool_forwarded(settings):
        # The web process spools hits on this machine; this moves them to Redis.
        children["forward"] = [py, "-m", "automation.cli", "tracking", "forward"]
    if settings.catcher_enabled:
        children["catcher"] = [
            py,
            "-m",
            "automation.cli",
            "catcher",
            "--port",
            str(settings.smtp_port),
        ]
    procs = {
        # Our own fixed command lines (sys.executable -m ...), no user input.
        name: subprocess.Popen(  # noqa: S603
            cmd,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        for name, cmd in children.items()
    }
    click.secho(
        f"Nurture is running at http://{host}:{port}  (Ctrl-C stops it)", fg="green", bold=True
    )
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    click.secho(f"{name} exited with {proc.returncode}; stopping", fg="red")
                    stopping = True
            time.sleep(0.5)
    finally:
        click.echo("stopping...")
        for proc in procs.values():
            if proc.poll() is None:
                # The leader only: Celery and gunicorn then stop their own children cleanly.
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        click.echo("stopped")


if __name__ == "__main__":
    main()
