"""Property-based fuzzing of our own OpenAPI schema (schemathesis), against a live server.

The server runs in its offline default mode (the built-in emulator as upstream, no latency),
so every generated request travels the whole stack. A fixed seed and a small example budget
keep the run repeatable and well under a minute.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.core.result import Ok

from src.config import REPO_ROOT

# An upstream failure is a mapped 502/504, not a defect; anything else >= 500 is ours.
ALLOWED_5XX = {502, 504}
EXAMPLES_PER_OPERATION = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "app"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
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
    with (workdir / "server.out").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "src.serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((workdir / "server.out").read_text())
                time.sleep(0.1)
            yield base_url
        finally:
            process.terminate()
            process.wait(15)


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
                assert "detail" in response.json()
                assert "Traceback" not in response.text
            case.validate_response(
                response,
                checks=[content_type_conformance, response_schema_conformance],
                excluded_checks=[not_a_server_error],
            )

        exercise()

    assert len(calls) >= 5 * len(operations)
    assert any(status < 300 for status in calls) and any(status >= 400 for status in calls)
