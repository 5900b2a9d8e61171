"""Edges an attacker, or a misbehaving upstream, would probe: the inbound key checked before
any body is read, credentials in the upstream URL, the Retry-After and the sizes an upstream
may send, and the forms of a secret the redaction removes.

Only the service's public surface is used (HTTP, settings, files), through the shared
`client` and `upstream` fixtures.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from pydantic import ValidationError
from starlette.types import Message

from src.config import Settings
from src.main import create_app
from src.redaction import Redactor
from tests.helpers.app import make_settings, running
from tests.helpers.asgi import http_scope
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.openrouter import (
    API_KEY,
    DONE,
    GENERATE,
    MODELS_BODY,
    chunk,
    completion_body,
    error_body,
    sse_chunks,
    sse_response,
)
from tests.helpers.processes import wait_until
from tests.helpers.sse import event_names, parse_sse, streamed_text

pytestmark = pytest.mark.anyio

INBOUND_KEY = "inbound-key-0123456789abcdef"
RESPONSE_CAP = 64 * 1024
LINE_CAP = 16 * 1024
# The key as an upstream, or a proxy in between, could echo it: encoded, or another OpenRouter
# key altogether.
FOREIGN_KEY = "sk-or-v1-" + "f" * 64
ENCODED_FORMS = [
    base64.b64encode(API_KEY.encode()).decode(),
    base64.b64encode(f"user:{API_KEY}".encode()).decode(),
    base64.urlsafe_b64encode(f"Bearer {API_KEY}".encode()).decode(),
]
LEAKS = [API_KEY, FOREIGN_KEY, *(form.rstrip("=")[2:-2] for form in ENCODED_FORMS)]


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(
        tmp_path,
        **{
            "max_upstream_response_bytes": RESPONSE_CAP,
            "max_upstream_line_bytes": LINE_CAP,
            **overrides,
        },
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


def log_text(settings: Settings) -> str:
    path = settings.log_dir / "server_logs.txt"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def assert_no_leak(where: str, text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{where} holds {leak[:12]}..."


# --- the inbound key -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/benchmark", "/generate", "/v1/chat/completions"])
async def test_a_request_without_the_key_is_refused_before_its_body_is_read(
    tmp_path: Path, path: str
) -> None:
    app = create_app(settings_for(tmp_path, proxy_api_keys=INBOUND_KEY))
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        await asyncio.sleep(3600)  # a body that never arrives
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope(
        "POST",
        path,
        {
            "host": "service.test",
            "content-type": "multipart/form-data; boundary=x",
            "content-length": "1000",
        },
    )
    async with LifespanManager(app) as manager:
        await asyncio.wait_for(manager.app(scope, receive, send), 10)

    assert reads == 0
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    # In the shape of the path's routes: the service's own, or OpenAI's on /v1.
    assert b'"AuthenticationError"' in sent[1]["body"]


async def test_a_route_added_later_needs_the_key_without_being_listed(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, proxy_api_keys=INBOUND_KEY))

    @app.get("/v1/added-later")
    async def added_later() -> dict[str, bool]:
        return {"ok": True}

    async with running(app) as http:
        anonymous = await http.get("/v1/added-later")
        keyed = await http.get(
            "/v1/added-later", headers={"Authorization": f"Bearer {INBOUND_KEY}"}
        )
        health = await http.get("/health")
        docs = await http.get("/docs")

    assert anonymous.status_code == 401
    assert keyed.status_code == 200
    assert health.status_code == docs.status_code == 200


async def test_the_401_hint_survives_the_redaction(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, proxy_api_keys=INBOUND_KEY)
    async with running(create_app(settings)) as http:
        detail = (await http.get("/models")).json()["detail"]

    assert "[REDACTED]" not in detail
    assert "'Bearer <key>'" in detail
    assert Redactor(settings.secrets())(detail) == detail


# --- credentials in the upstream URL ---------------------------------------------------------


def test_a_base_url_with_credentials_is_refused_without_showing_them(tmp_path: Path) -> None:
    for url in (
        "https://user:hunter2-pass@openrouter.ai/api/v1",
        "https://hunter2-token@openrouter.ai/api/v1",
    ):
        with pytest.raises(ValidationError) as refused:
            settings_for(tmp_path, openrouter_base_url=url)
        message = str(refused.value)
        assert "OPENROUTER_BASE_URL must not contain credentials" in message
        assert "hunter2" not in message


# --- what the upstream may send back ---------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after", ["86400000", "9" * 301, "Fri, 31 Dec 9999 23:59:59 GMT", "1e300"]
)
async def test_an_upstream_retry_after_is_passed_on_as_a_capped_integer(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_after: str
) -> None:
    route = upstream.post("/chat/completions").respond(
        429, json=error_body(429, "Rate limited"), headers={"Retry-After": retry_after}
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "86400"
    assert route.call_count == 1  # longer than RETRY_MAX_SECONDS: not retried


async def test_a_plain_answer_over_max_upstream_response_bytes_is_a_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(json=completion_body("x" * (2 * RESPONSE_CAP)))
    upstream.get("/models").respond(
        json={"data": [{**MODELS_BODY["data"][0], "description": "x" * (2 * RESPONSE_CAP)}]}
    )

    for response in (
        await client.post("/generate", json=GENERATE),
        await client.get("/models"),
    ):
        assert response.status_code == 502, response.text
        assert response.json()["error"] == "UpstreamInvalidResponseError"
        assert f"MAX_UPSTREAM_RESPONSE_BYTES={RESPONSE_CAP}" in response.json()["detail"]


async def test_a_stream_line_over_max_upstream_line_bytes_is_a_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=sse_response(chunk("x" * (2 * LINE_CAP)), DONE)
    )

    response = await client.post("/generate?stream=true", json=GENERATE)

    assert response.status_code == 502, response.text
    assert response.json()["error"] == "UpstreamInvalidResponseError"
    assert f"MAX_UPSTREAM_LINE_BYTES={LINE_CAP}" in response.json()["detail"]


async def test_a_long_stream_is_not_cut_by_the_cap_on_plain_answers(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    pieces = [f"word {index} " * 50 for index in range(400)]  # each line well under the caps
    upstream.post("/chat/completions").mock(return_value=sse_response(*sse_chunks(pieces)))

    response = await client.post("/generate?stream=true", json=GENERATE)

    events = parse_sse(response.text)
    assert len("".join(pieces)) > 2 * RESPONSE_CAP
    assert event_names(events)[-1] == "done"
    assert streamed_text(events) == "".join(pieces)


# --- redaction -------------------------------------------------------------------------------


def echo() -> str:
    return "rejected: " + " ".join([API_KEY, FOREIGN_KEY, *ENCODED_FORMS])


async def test_encoded_and_foreign_keys_are_redacted_in_answers_and_the_log(
    client: httpx.AsyncClient, upstream: respx.MockRouter, settings: Settings
) -> None:
    upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(400, json=error_body(400, echo())),
            sse_response(chunk("Hi"), chunk("", error={"code": 502, "message": echo()})),
        ]
    )

    plain = await client.post("/generate", json=GENERATE)
    streamed = await client.post("/generate?stream=true", json=GENERATE)

    assert plain.status_code == 400
    assert plain.json()["detail"].count("[REDACTED]") == 5
    assert_no_leak("the error answer", plain.text)
    events = parse_sse(streamed.text)
    assert events[-1].event == "error"
    assert events[-1].data["detail"].count("[REDACTED]") == 5
    assert_no_leak("the stream's error event", streamed.text)
    assert wait_until(lambda: log_text(settings).count(" | POST /generate") == 2, 5.0)
    assert "[REDACTED]" in log_text(settings)
    assert_no_leak("the log", log_text(settings))


async def test_encoded_and_foreign_keys_are_redacted_in_benchmark_results(
    client: httpx.AsyncClient, upstream: respx.MockRouter, settings: Settings
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    upstream.post("/chat/completions").respond(400, json=error_body(400, echo()))

    response = await post_benchmark(client, runs=1)

    assert response.status_code == 200, response.text
    assert_no_leak("the benchmark answer", response.text)
    [csv_file] = settings.benchmarks_dir.glob("*.csv")
    assert csv_file.read_text(encoding="utf-8").count("[REDACTED]") == 10  # 5 on each row
    for path in settings.benchmarks_dir.iterdir():
        assert_no_leak(path.name, path.read_text(encoding="utf-8"))
