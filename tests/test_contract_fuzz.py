"""Every operation of `/openapi.json`, fuzzed in process (ASGI) as a client generator reads it.

The app runs with its built-in emulator as upstream, instant and without faults, and small
limits: what the document allows is what the service accepts, and every answer, refusals
included, is one the document declares. A fixed seed and a small example budget per operation
keep the run repeatable and short.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.python import asgi

from src.config import Settings
from src.main import create_app

EXAMPLES_PER_OPERATION = 25
SERVED_MODEL = "emulator/small"
# Every emulated model is served by Alpha.
SERVED_PROVIDER = "alpha"
PROMPTS = b"Why is the sky blue?\nSay hi.\n"
# Sends per second at which MAX_BENCHMARK_REQUESTS (Poisson arrivals included) fit well within
# MAX_RUN_SECONDS.
SERVED_MIN_RATE = 100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Any]:
    app = create_app(
        Settings(
            _env_file=None,
            openrouter_api_key="",
            log_dir=tmp_path / "logs",
            benchmarks_dir=tmp_path / "benchmarks",
            benchmark_isolation="inline",
            emulator_ttft_seconds=0,
            emulator_tokens_per_second=0,
            # `generation_stats` waits for the record: readable at once, no second per case.
            emulator_generation_delay_seconds=0,
            # At least the form's default (5): a run sent without `runs` must be admissible.
            max_runs=5,
            max_prompts=5,
            max_concurrency=4,
            max_benchmark_requests=20,
            max_run_seconds=2,
            max_upload_bytes=4096,
            # The test client's own host.
            allowed_hosts=["testserver"],
        )
    )
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        asgi.shutdown_lifespans()


def use_served_inputs(case: schemathesis.Case[Any]) -> None:
    """Half the cases name a model the emulator serves and send a prompt file that is text:
    the rest of each request is as generated, so the runs themselves are exercised too."""
    body: Any = case.body
    if isinstance(body, dict):
        if isinstance(body.get("model"), str):
            body["model"] = SERVED_MODEL
        elif isinstance(body.get("model"), list):
            body["model"] = [SERVED_MODEL]
        if case.path == "/benchmark":
            # One readable prompt source: the generated ones are refused when they clash.
            for other_source in ("dataset_file", "prompt_tokens", "prompt_tokens_stdev", "prompts"):
                body.pop(other_source, None)
            body.pop("turns", None)
            # A spread may draw a max_tokens past MAX_TOKENS_LIMIT: refused, and rightly so.
            body.pop("output_tokens_stdev", None)
            if body.get("stream") is False:
                # Refused without a stream: nothing to measure them on.
                body.pop("ttft_slo", None)
                body.pop("tpot_slo", None)
            # A sweep's values must fit its kind, and its steps multiply the requests past this
            # run's small caps: refusals the document cannot state.
            body.pop("sweep", None)
            body.pop("sweep_values", None)
            # A slow rate's schedule outlasts MAX_RUN_SECONDS (its last send is due after it).
            if isinstance(body.get("rate"), int | float) and body["rate"] < SERVED_MIN_RATE:
                body.pop("rate")
            body["prompt_file"] = PROMPTS
            if body.get("provider"):
                # A generated slug is a provider no model has: a 422 the document cannot state.
                body["provider"] = [SERVED_PROVIDER]
    if case.path_parameters and "model_id" in case.path_parameters:
        case.path_parameters["model_id"] = SERVED_MODEL


# Hundreds of requests, runs among them: on a busy 2-core machine they take several times
# what they take alone, and a timeout mid-way makes Hypothesis replay other cases.
@pytest.mark.timeout(300)
def test_every_operation_answers_as_its_document_says(api: Any) -> None:
    results = list(api.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 13, [r for r in results if not isinstance(r, Ok)]

    answered = {operation.label: exercise(operation) for operation in operations}

    # A generated request can succeed on every operation but those that need an existing run:
    # a body the document describes wrongly is one no client can send.
    needs_a_run = {label for label in answered if "{benchmark_id}" in label}
    accepted = {label for label, statuses in answered.items() if min(statuses) < 300}
    assert accepted == set(answered) - needs_a_run, answered


def exercise(operation: Any) -> list[int]:
    """The statuses of the operation's generated cases, each answer checked."""
    statuses: list[int] = []

    @seed(20261204)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(), served=st.booleans())
    def call(case: schemathesis.Case[Any], served: bool) -> None:
        if served:
            use_served_inputs(case)
        response = case.call()
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS)
        # What the document allows, the service accepts: the one refusal it cannot state is
        # a generated prompt file that is not UTF-8 text.
        if response.status_code == 422:
            assert case.path == "/benchmark" and not served, (case.as_curl_command(), response.text)

    call()
    return statuses
