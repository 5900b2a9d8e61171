"""Hostile values: never a 5xx, never a traceback, never a file outside BENCHMARKS_DIR."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from src.config import Settings
from tests.conftest import MODELS_BODY, completion_body, model_entry
from tests.test_benchmark_api import post_benchmark, sse_response

pytestmark = pytest.mark.anyio

TWO_MB_PROMPT = "x" * (2 * 1024 * 1024)


def assert_clean_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert "detail" in body
    assert "Traceback" not in response.text and 'File "' not in response.text


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m/x\x00evil", "prompt": "hi"},
        {"model": "m/" + "x" * 10_000, "prompt": "hi"},
        {"model": "m/x", "prompt": TWO_MB_PROMPT},
        {"model": "m/x", "prompt": "hi", "max_tokens": -1},
        {"model": "m/x", "prompt": "hi", "max_tokens": 10**30},
        {"model": "m/x", "prompt": "hi", "temperature": "hot"},
        {"model": "m/x", "prompt": "hi", "top_p": None, "temperature": [1]},
        {"model": 42, "prompt": "hi"},
        {"model": "m/x", "prompt": ["a", "b"]},
        {"model": "m/x", "prompt": {"$ne": ""}},
    ],
)
async def test_hostile_generate_bodies_are_422_without_reaching_upstream(
    client: httpx.AsyncClient, upstream: respx.MockRouter, body: dict[str, Any]
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    response = await client.post("/generate", json=body)

    assert_clean_error(response, 422)
    assert route.call_count == 0


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"just a string"', b"null", b"{", b"\xff\xfe"])
async def test_non_object_json_bodies_are_422(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/generate", content=raw, headers={"content-type": "application/json"}
    )

    assert_clean_error(response, 422)


async def test_a_path_like_model_id_is_only_a_string_to_the_upstream(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(
        400, json={"error": {"code": 400, "message": "../../etc/passwd is not a valid model ID"}}
    )

    response = await client.post("/generate", json={"model": "../../etc/passwd", "prompt": "hi"})

    assert_clean_error(response, 400)
    assert route.calls.last.request.url.path == "/api/v1/chat/completions"


async def test_a_hostile_model_id_listed_upstream_cannot_place_files_outside_the_directory(
    settings: Settings, client: httpx.AsyncClient, upstream: respx.MockRouter, tmp_path: Path
) -> None:
    evil = "evil/../../../../escape"
    upstream.get("/models").respond(json={"data": [*MODELS_BODY["data"], model_entry(evil)]})
    upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response(evil))
    before = set(tmp_path.rglob("*"))

    response = await post_benchmark(client, models=[evil], runs=1)

    assert response.status_code == 200, response.text
    created = set(tmp_path.rglob("*")) - before
    files = [path for path in created if path.is_file()]
    assert files and all(path.parent == settings.benchmarks_dir for path in files), files
    assert all(".." not in path.name for path in files)
    saved = await client.get(f"/benchmarks/{response.json()['id']}")
    assert saved.status_code == 200


@pytest.mark.parametrize(
    "benchmark_id",
    ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x" * 5000, "20261126T101500Z_a_0123abcd%00"],
)
async def test_hostile_benchmark_ids_are_404_json(
    client: httpx.AsyncClient, benchmark_id: str
) -> None:
    for suffix in ("", "/report"):
        response = await client.get(f"/benchmarks/{benchmark_id}{suffix}")

        assert response.status_code == 404, (benchmark_id, suffix, response.text)
        assert "detail" in response.json()


@pytest.mark.parametrize(
    "form",
    [
        {"runs": "-5"},
        {"runs": "1e9"},
        {"concurrency": "many"},
        {"max_tokens": "0"},
        {"temperature": "nan"},
        {"runs": "99999999999999999999999"},
    ],
)
async def test_hostile_benchmark_numbers_are_422(
    client: httpx.AsyncClient, upstream: respx.MockRouter, form: dict[str, str]
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    route = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())

    response = await post_benchmark(client, form=form)

    assert_clean_error(response, 422)
    assert route.call_count == 0


async def test_an_oversized_generate_body_is_413_json(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())
    huge = b'{"model": "m/x", "prompt": "' + b"x" * (9 * 1024 * 1024) + b'"}'

    declared = await client.post(
        "/generate", content=huge, headers={"content-type": "application/json"}
    )

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(huge), 1024 * 1024):
            yield huge[start : start + 1024 * 1024]

    chunked = await client.post(
        "/generate", content=chunks(), headers={"content-type": "application/json"}
    )

    for response in (declared, chunked):
        assert_clean_error(response, 413)
        assert response.json()["error"] == "PayloadTooLargeError"
    assert route.call_count == 0
