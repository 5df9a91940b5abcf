"""schemathesis against the real app (in process, over WSGI, on PostgreSQL) with an admin
key and with a viewer key: every operation of the OpenAPI document gets schema-valid and
schema-invalid requests, and every schemathesis check runs on every answer (no server
error, the response matches its declared schema, status and content type, bad input is
refused, auth is enforced). Derandomized with a bounded number of examples, so the run is
the same every time and takes about a minute.

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
from schemathesis import GenerationMode

CONFIG = """
[generation]
allow-x00 = false

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""
EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 4}


@pytest.fixture
def pg_app(tmp_path: Any, postgres_url: str) -> Any:
    from automation.runtime import use_runtime
    from web import create_app

    application = create_app(make_settings(tmp_path, postgres_url), {"TESTING": True})
    use_runtime(application.extensions["nurture"])
    yield application
    application.extensions["nurture"].engine.dispose()
    use_runtime(None)


def _fuzz(operation: Any, mode: GenerationMode, token: str) -> None:
    @hypothesis_settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is enough
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"})

    run()


@pytest.mark.slow
@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_schemathesis_finds_nothing(pg_app: Any, role: str) -> None:
    token = make_api_key(pg_app, role)
    config = schemathesis.Config.from_str(CONFIG)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", pg_app, config=config)
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 100
    for operation in operations:
        for mode in EXAMPLES:
            try:
                _fuzz(operation, mode, token)
            except (Exception, ExceptionGroup):
                failures[f"{operation.label} ({mode.value})"] = traceback.format_exc()[-2500:]
    assert not failures, "\n\n".join(f"=== {k}\n{v}" for k, v in failures.items())
