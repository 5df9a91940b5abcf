"""schemathesis against the real app (in process, over WSGI, on PostgreSQL) with an admin
key and with a viewer key: every operation of the OpenAPI document gets schema-valid and
schema-invalid requests, and every schemathesis check runs on every answer (no server
error, the response matches its declared schema, status and content type, bad input is
refused, auth is enforced). Derandomized with a bounded number of examples, so the run is
the same every time; the four tests take about two minutes.

``positive_data_acceptance`` also accepts 422: a schema-valid request can still break a
domain rule no JSON Schema can say (a segment id that names no segment, MJML that does
not compile), and Nurture refuses those with a 422 naming the field. NUL characters are
not generated in valid data: the API refuses them in every text field (tests/
test_bad_input.py), which the document does not spell out per field.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
import schemathesis
from conftest import make_api_key, make_settings
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import GenerationMode

CONFIG = """
[auth.openapi.apiKey]
bearer = "{token}"

[generation]
allow-x00 = false

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""
# Examples per operation and generation mode; a viewer is refused most writes at once.
EXAMPLES = {
    "admin": {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 3},
    "viewer": {GenerationMode.POSITIVE: 4, GenerationMode.NEGATIVE: 2},
}
STATEFUL_EXAMPLES = {"admin": 15, "viewer": 5}


@pytest.fixture
def pg_app(tmp_path: Any, postgres_url: str) -> Any:
    from automation.runtime import use_runtime
    from web import create_app

    application = create_app(make_settings(tmp_path, postgres_url), {"TESTING": True})
    use_runtime(application.extensions["nurture"])
    yield application
    application.extensions["nurture"].engine.dispose()
    use_runtime(None)


def _schema(app: Any, role: str) -> Any:
    """The app's own document, with schemathesis sending a fresh key of ``role`` as the
    bearer token (so its auth checks know what the credentials are)."""
    config = schemathesis.Config.from_str(CONFIG.replace("{token}", make_api_key(app, role)))
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)


def _fuzz(operation: Any, mode: GenerationMode, examples: int) -> None:
    @hypothesis_settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is enough
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate()

    run()


@pytest.mark.slow
@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_schemathesis_finds_nothing(pg_app: Any, role: str) -> None:
    schema = _schema(pg_app, role)
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 100
    for operation in operations:
        for mode, examples in EXAMPLES[role].items():
            try:
                _fuzz(operation, mode, examples)
            except (Exception, ExceptionGroup):
                failures[f"{operation.label} ({mode.value})"] = traceback.format_exc()[-2500:]
    assert not failures, "\n\n".join(f"=== {k}\n{v}" for k, v in failures.items())


@pytest.mark.slow
@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_schemathesis_stateful_sequences_find_nothing(pg_app: Any, role: str) -> None:
    """Sequences of calls along the links schemathesis infers between operations (an id
    one answer gives becomes the path or body of the next): create, then read, change,
    delete what was created."""
    schema = _schema(pg_app, role)
    run_state_machine_as_test(
        schema.as_state_machine(),
        settings=hypothesis_settings(
            max_examples=STATEFUL_EXAMPLES[role],
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )
