"""`nurture run` as a newcomer uses it: embedded default, everything started, Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from automation.email.catcher import free_port


def start_run(
    tmp_path, *args: str, session: bool = True, **env: str
) -> tuple[subprocess.Popen, int]:
    """`nurture run --port P *args` with a clean NURTURE_ environment (var under tmp_path,
    its own SMTP port, then ``env``), logging to tmp_path/run.log. Returns (process, P)."""
    port, smtp_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    environment.update(
        {"NURTURE_VAR_DIR": str(tmp_path / "var"), "NURTURE_SMTP_PORT": str(smtp_port), **env}
    )
    log = (tmp_path / "run.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "automation.cli", "run", "--port", str(port), *args],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=session,
    )
    return proc, port


@pytest.mark.slow
def test_nurture_run_serves_login_loads_demo_and_stops_on_ctrl_c(tmp_path):
    proc, port = start_run(tmp_path)
    children: list[str] = []
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/login").status
            except OSError:
                continue
        output = (tmp_path / "run.log").read_text()
        assert status == 200, output
        assert re.search(r"Created the first admin: admin@example.com / \S+", output)
        assert "demo loaded: 3000 contacts" in output
        assert (tmp_path / "var" / "nurture.sqlite").exists()
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 4  # web, worker, beat, catcher; each leads its own session
        proc.send_signal(signal.SIGINT)
        proc.wait(40)
        time.sleep(1)
        left = [
            pid
            for child in children
            for pid in subprocess.run(
                ["pgrep", "-s", child], capture_output=True, text=True
            ).stdout.split()
        ]
        assert left == [], (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for child in children:
            subprocess.run(["pkill", "-KILL", "-s", child], check=False)


@pytest.mark.slow
def test_children_stop_when_nurture_run_is_killed(tmp_path):
    """SIGKILL of the supervisor (no chance to clean up) still leaves no orphan behind."""
    proc, _ = start_run(tmp_path, "--no-demo", session=False)
    children: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(children) < 4:
            time.sleep(0.5)
            children = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
            ).stdout.split()
        assert len(children) == 4
        proc.kill()
        proc.wait(10)
        # Children get SIGTERM and stop gracefully: a Celery task in flight on the embedded
        # SQLite broker may wait out its locks first when the machine is busy.
        deadline = time.monotonic() + 60
        left = children
        while time.monotonic() < deadline and left:
            time.sleep(0.5)
            left = [
                pid
                for child in children
                for pid in subprocess.run(
                    ["pgrep", "-s", child], capture_output=True, text=True
                ).stdout.split()
            ]
        lingering = subprocess.run(
            ["ps", "-o", "pid,etime,args", "-p", ",".join(left) or "0"],
            capture_output=True,
            text=True,
        ).stdout
        assert left == [], lingering
    finally:
        for child in children:
            subprocess.run(["pkill", "-KILL", "-s", child], check=False)


@pytest.mark.slow
@pytest.mark.redis
def test_nurture_run_with_a_redis_hit_queue_starts_the_forwarder(tmp_path):
    from conftest import REDIS_URL

    from automation.tracking.hits import SpoolHitQueue

    proc, _ = start_run(tmp_path, "--no-demo", NURTURE_HIT_QUEUE_URL=REDIS_URL)
    children: list[str] = []
    try:
        spool = SpoolHitQueue(tmp_path / "var" / "hits")
        spool.push_line(b'["a hit the web process spooled"]')
        deadline = time.monotonic() + 90
        while spool.backlog().files:  # gone only once Redis took it
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.5)
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 5  # web, worker, beat, catcher and the forwarder
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        for child in children:
            subprocess.run(["pkill", "-KILL", "-s", child], check=False)
