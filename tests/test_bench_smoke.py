"""Every benchmark script runs end to end at a tiny size (figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import PG_URL, require_service
from sqlalchemy import text

from automation.db import make_engine

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "__init__.py")


@pytest.fixture(scope="module")
def bench_db_url():
    require_service("postgres")
    name = f"nurture_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_smoke_run(script, bench_db_url):
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", "--url", bench_db_url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "a bench prints its figures"
