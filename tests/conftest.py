"""Shared fixtures. Domain tests run on SQLite and on PostgreSQL (the `db_url` fixture is
parametrised); PostgreSQL and Redis are the machine's real servers.

With CI=true a missing PostgreSQL or Redis fails the run; elsewhere those tests are
skipped and the summary says so plainly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import automation.models  # noqa: F401
from automation import wiring
from automation.config import Settings, load_settings
from automation.db import Base, make_engine, make_session_factory
from automation.runtime import build_runtime, use_runtime

_BASE_PG_URL = os.environ.get(
    "NURTURE_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
_BASE_REDIS_URL = os.environ.get("NURTURE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Under `pytest -n N` (pytest-xdist) each worker gwK gets its own PostgreSQL database
# (<name>_gwK, created on first use) and Redis database (base number + K): the suite
# truncates between tests, and two workers sharing one database would deadlock.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def _worker_urls() -> tuple[str, str]:
    from sqlalchemy.engine import make_url

    pg, redis_url = make_url(_BASE_PG_URL), make_url(_BASE_REDIS_URL)
    if _WORKER == 0:
        return _BASE_PG_URL, _BASE_REDIS_URL
    pg = pg.set(database=f"{pg.database}_gw{_WORKER}")
    redis_url = redis_url.set(database=str(int(redis_url.database or 0) + _WORKER))
    return pg.render_as_string(hide_password=False), redis_url.render_as_string(hide_password=False)


PG_URL, REDIS_URL = _worker_urls()
IN_CI = os.environ.get("CI", "").lower() == "true"
_skipped_services: set[str] = set()


def _service_available(name: str) -> bool:
    try:
        if name == "postgres":
            if PG_URL != _BASE_PG_URL:
                _create_database(PG_URL)
            engine = make_engine(PG_URL)
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            engine.dispose()
        else:
            import redis

            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


_availability: dict[str, bool] = {}


def require_service(name: str) -> None:
    if name not in _availability:
        _availability[name] = _service_available(name)
    if _availability[name]:
        return
    if IN_CI:
        pytest.fail(f"{name} is not reachable and CI=true: integration tests must run", False)
    _skipped_services.add(name)
    pytest.skip(f"{name} not reachable: integration test skipped")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped_services:
        terminalreporter.write_line(
            f"NOTE: {', '.join(sorted(_skipped_services))} not reachable here: the integration "
            "tests that need them were SKIPPED (they run in CI).",
            yellow=True,
            bold=True,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # A test that asks for PostgreSQL is an integration test (`make fast` leaves it out).
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if item.get_closest_marker("redis"):
            item.fixturenames.insert(0, "_needs_redis")


@pytest.fixture
def _needs_redis() -> None:
    require_service("redis")


@pytest.fixture(scope="session", autouse=True)
def _wired() -> None:
    """Wire the test process as every Nurture process is wired before its first
    transaction (``build_runtime`` does it; tests that open sessions of their own would
    otherwise depend on an earlier test having built a runtime)."""
    wiring.install()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (the OS picks it), for a test that
    starts servers in other processes: fixed ports collide with a second suite or any
    other program on the machine."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- databases -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return path


_pg_engine: Engine | None = None


def _postgres_engine() -> Engine:
    global _pg_engine
    if _pg_engine is None:
        require_service("postgres")  # creates a worker's own database
        _pg_engine = make_engine(PG_URL)
        # A clean schema whatever an earlier run (of another branch) left behind.
        with _pg_engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        Base.metadata.create_all(_pg_engine)
    return _pg_engine


@contextlib.contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards (for tests that
    build a schema their own way: migrations, bench scripts)."""
    require_service("postgres")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))  # our own generated name
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _create_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    engine = make_engine(_BASE_PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))  # our own generated name
    engine.dispose()


def _truncate_postgres(engine: Engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A clean database of each kind, with the current schema."""
    if request.param == "postgres":
        require_service("postgres")
        _truncate_postgres(_postgres_engine())
        return PG_URL
    path = tmp_path / "nurture.sqlite"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A clean SQLite database, for tests whose subject does not depend on the database."""
    path = tmp_path / "nurture.sqlite"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url() -> str:
    require_service("postgres")
    _truncate_postgres(_postgres_engine())
    return PG_URL


METRICS_TOKEN = "test-metrics-token"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


def make_settings(tmp_path: Path, db_url: str, **env: str) -> Settings:
    base = {
        "NURTURE_VAR_DIR": str(tmp_path / "var"),
        "NURTURE_DATABASE_URL": db_url,
        "NURTURE_SECRET_KEY": "test-secret-key-" + "x" * 32,
        "NURTURE_BASE_URL": "http://nurture.test",
        "NURTURE_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
        # /metrics needs a token outside the embedded default: the suite scrapes with one.
        "NURTURE_METRICS_TOKEN": METRICS_TOKEN,
    }
    base.update(env)
    return load_settings(base)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    use_runtime(build_runtime(settings))
    with factory() as s:
        yield s
    engine.dispose()
    use_runtime(None)


# --- web ---------------------------------------------------------------------------


@pytest.fixture
def app(settings: Settings) -> Any:
    from web import create_app

    application = create_app(settings, {"TESTING": True})
    use_runtime(application.extensions["nurture"])
    yield application
    application.extensions["nurture"].engine.dispose()
    use_runtime(None)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def make_api_key(app: Any, role: str = "admin") -> str:
    from automation.accounts.models import Role
    from automation.accounts.service import create_api_key

    with app.extensions["nurture"].sessions() as s:
        token = create_api_key(s, f"test {role}", role=Role(role)).token
        s.commit()
    return token


@pytest.fixture
def api(app: Any, client: Any) -> Any:
    """A client that calls the API as an admin key; `api.as_role(role)` for others."""
    return ApiClient(client, make_api_key(app, "admin"), app)


class ApiClient:
    def __init__(self, client: Any, token: str, app: Any) -> None:
        self.client, self.token, self.app = client, token, app

    def as_role(self, role: str) -> ApiClient:
        return ApiClient(self.client, make_api_key(self.app, role), self.app)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get("/api/v1" + path, headers=self._headers(), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete("/api/v1" + path, headers=self._headers(), **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.post("/api/v1" + path, json=json, headers=self._headers(), **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.patch("/api/v1" + path, json=json, headers=self._headers(), **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.put("/api/v1" + path, json=json, headers=self._headers(), **kw)


def login(client: Any, email: str, password: str) -> Any:
    import re

    page = client.get("/login")
    token = re.search(
        r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)
    )
    assert token, "login page has a CSRF token"
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token.group(1)}
    )


@pytest.fixture
def user_factory(app: Any) -> Any:
    from automation.accounts.models import Role
    from automation.accounts.service import create_user

    def make(
        email: str = "marketer@example.com",
        password: str = "correct horse battery",
        role: str = "marketer",
    ) -> tuple[str, str]:
        with app.extensions["nurture"].sessions() as s:
            create_user(s, email, password, role=Role(role))
            s.commit()
        return email, password

    return make


def start_worker(
    settings: Settings,
    broker_url: str | None = None,
    *,
    queues: str = "engine",
    beat: bool = False,
    env: dict[str, str] | None = None,
) -> Any:
    """A real Celery worker process (``queues``; with its own beat when ``beat``) on the
    settings' database and broker, plus ``env``; its output goes to worker.log beside the
    var directory. Terminate it when done."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": settings.database_url,
        "NURTURE_BROKER_URL": broker_url or settings.broker_url,
        "NURTURE_VAR_DIR": str(settings.var_dir),
        "NURTURE_SECRET_KEY": settings.secret_key,
        **(env or {}),
    }
    command = [sys.executable, "-m", "celery", "-A", "automation.tasks", "worker", "-Q", queues]
    if beat:
        command += ["-B", "--schedule", str(settings.var_dir.parent / "beat-schedule")]
    return subprocess.Popen(
        [*command, "--pool", "solo", "--loglevel", "WARNING"],
        env=env,
        stdout=(settings.var_dir.parent / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


# --- browser ---------------------------------------------------------------------------

CHROMIUM = os.environ.get("NURTURE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The app served over real HTTP on a free port, in a thread of the test process."""
    import threading

    from werkzeug.serving import make_server

    from automation.email.catcher import free_port

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    """Skip a browser test where Chromium is missing; under CI=true, fail it."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} missing and CI=true: browser tests must run", False)
        _skipped_services.add("chromium")
        pytest.skip("chromium not installed: browser test skipped")


@pytest.fixture
def page(live_server: str) -> Iterator[Any]:
    """A Playwright page in Debian's Chromium (never a downloaded browser)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live_server)
        tab = context.new_page()
        tab.set_default_timeout(15000)
        yield tab
        browser.close()


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# --- workflows -----------------------------------------------------------------------


@pytest.fixture
def harness(session: Session) -> Iterator[Any]:
    """Runs the workflow engine on the test database with a stepping clock."""
    from workflows_support import Harness, start_clock

    from automation import clock
    from automation.runtime import runtime

    stepping = start_clock()
    yield Harness(runtime().sessions, stepping)
    clock.set_source(None)


# --- spam scoring ----------------------------------------------------------------------

SPAMASSASSIN = os.environ.get("NURTURE_SPAMASSASSIN", "/usr/bin/spamassassin")


@pytest.fixture
def spamassassin() -> str:
    """Debian's SpamAssassin (local tests only), like Chromium: skipped where it is not
    installed, a failure under CI=true."""
    if not Path(SPAMASSASSIN).exists():
        if IN_CI:
            pytest.fail(f"{SPAMASSASSIN} missing and CI=true: spam scoring tests must run", False)
        _skipped_services.add("spamassassin")
        pytest.skip("spamassassin not installed: spam scoring test skipped")
    return SPAMASSASSIN
