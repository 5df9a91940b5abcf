from __future__ import annotations

import os

from click.testing import CliRunner
from sqlalchemy import func, select

from automation.cli import main
from automation.contacts.models import Contact, Event


def _env(settings):
    return {
        "NURTURE_DATABASE_URL": settings.database_url,
        "NURTURE_VAR_DIR": str(settings.var_dir),
        "NURTURE_SECRET_KEY": settings.secret_key,
    }


def test_import_contacts_command_reports_rows_and_errors(tmp_path, settings, session):
    path = tmp_path / "people.csv"
    path.write_text("Email,First Name\nana@example.com,Ana\nbroken,Bad\nben@example.com,Ben\n")
    errors = tmp_path / "errors.csv"
    result = CliRunner().invoke(
        main,
        ["import", "contacts", str(path), "--permission", "consent", "--errors", str(errors)],
        env=_env(settings),
    )
    assert result.exit_code == 0, result.output
    assert "created: 2" in result.output and "failed: 1" in result.output
    assert "row 3, column Email" in result.output
    assert errors.read_text().splitlines()[1].startswith("3,Email,")
    assert session.scalar(select(func.count()).select_from(Contact)) == 2


def test_import_command_refuses_a_file_without_email_column(tmp_path, settings):
    path = tmp_path / "x.csv"
    path.write_text("Name\nAna\n")
    result = CliRunner().invoke(
        main, ["import", "contacts", str(path), "--permission", "consent"], env=_env(settings)
    )
    assert result.exit_code != 0
    assert "columns: the file has no email column" in result.output


def test_demo_loads_once(settings, session):
    runner = CliRunner()
    result = runner.invoke(main, ["demo", "--contacts", "300"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert session.scalar(select(func.count()).select_from(Contact)) == 300
    assert session.scalar(select(func.count()).select_from(Event)) > 300
    zones = set(session.scalars(select(Contact.time_zone).distinct()))
    assert len(zones) > 3
    again = runner.invoke(main, ["demo"], env=_env(settings))
    assert "demo not loaded" in again.output
    assert session.scalar(select(func.count()).select_from(Contact)) == 300


def test_create_user_and_api_key(settings, session):
    runner = CliRunner()
    bad = runner.invoke(
        main, ["create-user", "ops@example.com", "--password", "short"], env=_env(settings)
    )
    assert bad.exit_code != 0 and "password: at least 10 characters" in bad.output
    ok = runner.invoke(
        main,
        ["create-user", "ops@example.com", "--role", "admin", "--password", "long enough password"],
        env=_env(settings),
    )
    assert ok.exit_code == 0, ok.output
    key = runner.invoke(main, ["create-api-key", "ci", "--role", "viewer"], env=_env(settings))
    assert key.output.strip().startswith("nrt_")
    assert os.environ.get("NURTURE_DATABASE_URL") != settings.database_url
