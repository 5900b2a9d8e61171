from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest
import respx

from src.config import Settings
from src.redaction import Redactor
from tests.helpers.app import Serve, in_process_app, make_settings, read_log, running
from tests.helpers.openrouter import (
    API_KEY,
    GENERATE,
    GPT,
    MODELS_BODY,
    completion_body,
    error_body,
)

pytestmark = pytest.mark.anyio

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - INFO - "
    r"OK \| GET /models \| handler=get_models \| time=\d+\.\d{4}s \| status_code=200$",
    re.M,
)


async def test_each_request_writes_one_line_in_the_documented_format(
    settings: Settings, serve: Serve, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)

    async with serve(settings) as client:
        await client.get("/models")
        await client.get("/models")

    assert len(LINE.findall(read_log(settings))) == 2


async def test_upstream_error_is_logged_at_error_without_traceback(
    settings: Settings, serve: Serve, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    upstream.post("/chat/completions").respond(403, json=error_body(403, "forbidden"))

    async with serve(settings) as client:
        await client.post("/generate", json=GENERATE)

    log = read_log(settings)
    assert re.search(
        r" - ERROR - ERROR \| POST /generate \| handler=generate \| time=\S+ \| "
        r"status_code=403 \| UpstreamStatusError: Upstream returned 403: forbidden",
        log,
    )
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": GPT, "messages": [{"role": "user", "content": "hi"}]}),
        ("/generate", GENERATE),
    ],
)
async def test_an_upstream_429_passed_on_to_the_caller_is_a_warning_not_an_error(
    settings: Settings,
    serve: Serve,
    upstream: respx.MockRouter,
    retry_waits: list[float],
    path: str,
    body: dict[str, object],
) -> None:
    limited = httpx.Response(429, json=error_body(429, "slow down"), headers={"retry-after": "1"})
    upstream.post("/chat/completions").mock(return_value=limited)

    async with serve(settings) as client:
        response = await client.post(path, json=body)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    log = read_log(settings)
    # Rate limited is the upstream asking the caller to come back later: nothing is broken.
    assert re.search(
        rf" - WARNING - RATE_LIMITED \| POST {re.escape(path)} \| handler=\w+ \| time=\S+ \| "
        r"status_code=429 \| UpstreamStatusError: Upstream returned 429: slow down",
        log,
    ), log
    assert " - ERROR - " not in log


async def test_unexpected_error_is_logged_with_traceback_and_answered_as_json_500(
    settings: Settings, upstream: respx.MockRouter
) -> None:
    # A bug of ours, raised inside the app's own call stack: it cannot come over a socket, so
    # this app keeps httpx's own transport, where respx raises it in the app.
    upstream.post("/chat/completions").mock(side_effect=RuntimeError("boom in our code"))

    async with running(in_process_app(settings)) as client:
        response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 500
    assert response.json()["error"] == "InternalServerError"
    assert "boom" not in response.text
    log = read_log(settings)
    assert "status_code=500" in log
    assert "Traceback" in log and "RuntimeError: boom in our code" in log


async def test_validation_errors_are_logged_as_client_errors(
    settings: Settings, serve: Serve
) -> None:
    async with serve(settings) as client:
        await client.post("/generate", json={"model": "m/x"})

    assert re.search(
        r" - WARNING - CLIENT_ERROR \| POST /generate .* status_code=422", read_log(settings)
    )


async def test_the_api_key_never_reaches_the_logs(
    settings: Settings, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(500, json=error_body(500, f"bad key {API_KEY}")),
            httpx.Response(200, json=completion_body()),
        ]
    )
    # A traceback whose exception message carries the key: raised inside the app's call
    # stack, so this app keeps httpx's own transport (nothing crosses a socket as an exception).
    upstream.get("/models").mock(side_effect=RuntimeError(f"Authorization: Bearer {API_KEY}"))

    async with running(in_process_app(settings)) as client:
        response = await client.post("/generate", json=GENERATE)
        await client.get("/models")
        logging.getLogger("test").info("key in a message %s", API_KEY)

    log = read_log(settings)
    assert API_KEY not in log
    assert API_KEY not in response.text
    assert "[REDACTED]" in log


def test_redaction_hides_secrets_and_authorization_values() -> None:
    redact = Redactor(["s3cr3t"])

    assert redact("token s3cr3t here, and s3cr3t again") == (
        "token [REDACTED] here, and [REDACTED] again"
    )
    assert redact("{'Authorization': 'Bearer abc.def'}") == (
        "{'Authorization': 'Bearer [REDACTED]'}"
    )
    assert redact('{"authorization": "bearer abc.def", "x": 1}') == (
        '{"authorization": "bearer [REDACTED]", "x": 1}'
    )
    assert redact("AUTHORIZATION: Bearer abc") == "AUTHORIZATION: Bearer [REDACTED]"
    assert redact("authorization=xyz") == "authorization=[REDACTED]"
    assert redact("no secrets here") == "no secrets here"


def test_a_secret_inside_another_is_redacted_whole() -> None:
    # The longer one goes first: the other way round its tail would be left showing.
    redactor = Redactor(["key-1", "key-1-and-more"])

    assert redactor("key-1-and-more / key-1") == "[REDACTED] / [REDACTED]"
    assert Redactor(["key-1-and-more", "key-1"])("key-1-and-more") == "[REDACTED]"


def test_empty_secrets_are_ignored() -> None:
    assert Redactor(["", "s3cr3t"])("plain text") == "plain text"
    assert Redactor([])("plain text") == "plain text"


async def test_log_file_is_rotated_by_size(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    settings = make_settings(tmp_path, log_max_bytes=2048, log_backup_count=2)
    upstream.get("/models").respond(json=MODELS_BODY)

    async with serve(settings) as client:
        for _ in range(60):
            await client.get("/models")

    files = sorted(p.name for p in settings.log_dir.iterdir())
    assert files == ["server_logs.txt", "server_logs.txt.1", "server_logs.txt.2"]
    assert all(p.stat().st_size <= 2048 for p in settings.log_dir.iterdir())
