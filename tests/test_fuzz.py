"""Property-based fuzzing of our own OpenAPI schema (schemathesis), against a live server.

The server runs in its offline default mode (the built-in emulator as upstream, no latency),
so every generated request travels the whole stack. A fixed seed and a small example budget
keep the run repeatable and well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.core.result import Ok

from tests.helpers.processes import LOOPBACK, launch, settings_env

# An upstream failure is a mapped 502/504, not a defect; anything else >= 500 is ours.
ALLOWED_5XX = {502, 504}
EXAMPLES_PER_OPERATION = 60


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    env = settings_env(
        {
            "HOST": LOOPBACK,
            "OPENROUTER_API_KEY": "",
            "LOG_DIR": str(workdir / "logs"),
            "BENCHMARKS_DIR": str(workdir / "benchmarks"),
            "EMULATOR_TTFT_SECONDS": "0",
            "EMULATOR_TOKENS_PER_SECOND": "0",
            "MAX_RUNS": "3",
            "MAX_PROMPTS": "20",
            "MAX_UPLOAD_BYTES": "65536",
            "PROXY_API_KEYS": "",
        }
    )
    process = launch("fuzz", "src.serve", workdir, env, ready_path="/health")
    try:
        yield process.url
    finally:
        process.stop()


def test_api_answers_every_generated_request_without_a_server_error(live_app: str) -> None:
    api = schemathesis.openapi.from_url(f"{live_app}/openapi.json")
    results = list(api.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 7  # every operation loads and is exercised

    calls: list[int] = []
    for operation in operations:

        @seed(20261126)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def exercise(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=live_app, timeout=30)
            calls.append(response.status_code)
            assert response.status_code < 500 or response.status_code in ALLOWED_5XX, (
                case.as_curl_command(),
                response.text,
            )
            if response.status_code >= 400:
                # The OpenAI-compatible routes answer in OpenAI's error shape.
                shape = "error" if case.path.startswith("/v1/") else "detail"
                assert shape in response.json(), response.text
                assert "Traceback" not in response.text
            case.validate_response(
                response,
                checks=[content_type_conformance, response_schema_conformance],
                excluded_checks=[not_a_server_error],
            )

        exercise()

    assert len(calls) >= 5 * len(operations)
    assert any(status < 300 for status in calls) and any(status >= 400 for status in calls)
