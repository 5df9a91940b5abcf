"""Every benchmark script runs end to end at a tiny size (figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import scratch_postgres_database

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "__init__.py")


@pytest.fixture(scope="module")
def bench_db_url():
    with scratch_postgres_database("nurture_bench") as url:
        yield url


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
