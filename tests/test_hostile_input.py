"""Hostile values: never a 5xx, never a traceback, never a file outside BENCHMARKS_DIR."""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import TypeAdapter, ValidationError

from src.config import Settings
from src.schemas.prompts import ModelId, check_model_id
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.errors import assert_error, assert_validation_error
from tests.helpers.openrouter import (
    GENERATE,
    MODELS_BODY,
    completion_body,
    error_body,
    model_entry,
    sse_response,
)

pytestmark = pytest.mark.anyio

TWO_MB_PROMPT = "x" * (2 * 1024 * 1024)


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ({"model": "m/x\x00evil", "prompt": "hi"}, "model", "value_error"),
        ({"model": "m/x\u2028evil", "prompt": "hi"}, "model", "value_error"),
        ({"model": "m/x\x85evil", "prompt": "hi"}, "model", "value_error"),
        ({"model": "m/" + "x" * 10_000, "prompt": "hi"}, "model", "string_too_long"),
        ({"model": "m/x", "prompt": TWO_MB_PROMPT}, "prompt", "string_too_long"),
        ({"model": "m/x", "prompt": "hi", "max_tokens": -1}, "max_tokens", "greater_than_equal"),
        ({"model": "m/x", "prompt": "hi", "max_tokens": 10**30}, "max_tokens", "less_than_equal"),
        ({"model": "m/x", "prompt": "hi", "temperature": "hot"}, "temperature", "float_parsing"),
        (
            {"model": "m/x", "prompt": "hi", "top_p": None, "temperature": [1]},
            "temperature",
            "float_type",
        ),
        ({"model": 42, "prompt": "hi"}, "model", "string_type"),
        ({"model": "m/x", "prompt": ["a", "b"]}, "prompt", "string_type"),
        ({"model": "m/x", "prompt": {"$ne": ""}}, "prompt", "string_type"),
    ],
)
async def test_hostile_generate_bodies_are_422_without_reaching_upstream(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    body: dict[str, Any],
    field: str,
    kind: str,
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    response = await client.post("/generate", json=body)

    assert_validation_error(response, ("body", field), kind)
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("raw", "location", "kind"),
    [
        (b"[1, 2]", ("body",), "model_type"),
        (b'"just a string"', ("body",), "model_type"),
        (b"null", ("body",), "model_type"),
        (b"{", ("body",), "json_invalid"),
        (b"\xff\xfe", ("body",), "json_invalid"),
    ],
)
async def test_non_object_json_bodies_are_422(
    client: httpx.AsyncClient, raw: bytes, location: tuple[str | int, ...], kind: str
) -> None:
    response = await client.post(
        "/generate", content=raw, headers={"content-type": "application/json"}
    )

    assert_validation_error(response, location, kind)


def test_the_model_id_rule_refuses_exactly_unicode_controls_and_line_separators() -> None:
    """The one rule every endpoint's model ids go through: categories Cc (C0, DEL, C1), Zl
    and Zp; nothing else of Unicode is refused."""
    adapter: TypeAdapter[str] = TypeAdapter(ModelId)
    expected = {
        code for code in range(0x110000) if unicodedata.category(chr(code)) in ("Cc", "Zl", "Zp")
    }
    refused = set()
    for code in range(0x110000):
        try:
            check_model_id(chr(code))
        except ValueError:
            refused.add(code)

    assert refused == expected
    for code in (0x0A, 0x85, 0x9B, 0x2028, 0x2029):
        with pytest.raises(ValidationError):
            adapter.validate_python(f"m/x{chr(code)}")


async def test_a_path_like_model_id_is_only_a_string_to_the_upstream(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(
        400, json=error_body(400, "../../etc/passwd is not a valid model ID")
    )

    response = await client.post("/generate", json={"model": "../../etc/passwd", "prompt": "hi"})

    assert_error(
        response,
        400,
        "UpstreamStatusError",
        "Upstream returned 400: ../../etc/passwd is not a valid model ID",
    )
    assert route.calls.last.request.url.path == "/api/v1/chat/completions"


async def test_a_hostile_model_id_listed_upstream_cannot_place_files_outside_the_directory(
    settings: Settings, client: httpx.AsyncClient, upstream: respx.MockRouter, tmp_path: Path
) -> None:
    evil = "evil/../../../../escape"
    upstream.get("/models").respond(json={"data": [*MODELS_BODY["data"], model_entry(evil)]})
    upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response(model=evil))
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
    ("benchmark_id", "error", "detail"),
    [
        # Decoded to a path that no route serves.
        ("..%2F..%2Fetc%2Fpasswd", "HTTPError", "Not Found"),
        ("%2e%2e", "NotFoundError", "No benchmark with id '..'."),
        # Cut: an id this long is not one of ours, and is not echoed whole.
        ("x" * 5000, "NotFoundError", f"No benchmark with id '{'x' * 200}… (4800 more"),
        (
            "20261126T101500Z_a_0123abcd%00",
            "NotFoundError",
            "No benchmark with id '20261126T101500Z_a_0123abcd\x00'.",
        ),
    ],
)
async def test_hostile_benchmark_ids_are_404_json(
    client: httpx.AsyncClient, benchmark_id: str, error: str, detail: str
) -> None:
    for suffix in ("", "/report"):
        response = await client.get(f"/benchmarks/{benchmark_id}{suffix}")

        assert_error(response, 404, error, detail)


@pytest.mark.parametrize(
    ("form", "kind"),
    [
        ({"runs": "-5"}, "greater_than_equal"),
        ({"runs": "1e9"}, "int_parsing"),
        ({"concurrency": "many"}, "int_parsing"),
        ({"max_tokens": "0"}, "greater_than_equal"),
        ({"temperature": "nan"}, "finite_number"),
    ],
)
async def test_hostile_benchmark_numbers_are_422(
    client: httpx.AsyncClient, upstream: respx.MockRouter, form: dict[str, str], kind: str
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    route = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())

    response = await post_benchmark(client, form=form)

    [field] = form
    assert_validation_error(response, ("body", field), kind)
    assert route.call_count == 0


async def test_a_huge_run_count_is_refused_by_the_limit(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    route = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())

    response = await post_benchmark(client, form={"runs": "99999999999999999999999"})

    assert_error(
        response, 422, "LimitExceededError", "runs=99999999999999999999999 exceeds MAX_RUNS=100."
    )
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

    assert_error(
        declared,
        413,
        "PayloadTooLargeError",
        f"The request body ({len(huge)} bytes) is too large: 8388608 bytes for a JSON body.",
    )
    assert_error(
        chunked,
        413,
        "PayloadTooLargeError",
        "The request body is too large: 8388608 bytes for a JSON body.",
    )
    assert route.call_count == 0


async def test_the_json_body_limit_is_the_max_json_body_bytes_setting(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())
    body = b'{"model": "m/x", "prompt": "' + b"x" * 3000 + b'"}'
    headers = {"content-type": "application/json"}

    async with serve(make_settings(tmp_path, max_json_body_bytes=2048)) as service:
        generate = await service.post("/generate", content=body, headers=headers)
        relayed = await service.post("/v1/chat/completions", content=body, headers=headers)
        small = await service.post("/generate", json=GENERATE)

    assert_error(
        generate,
        413,
        "PayloadTooLargeError",
        f"The request body ({len(body)} bytes) is too large: 2048 bytes for a JSON body.",
    )
    assert relayed.status_code == 413
    assert relayed.json()["error"]["code"] == "PayloadTooLargeError"
    assert small.status_code == 200
    assert route.call_count == 1
