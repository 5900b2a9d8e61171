"""The API contract a machine reads: `/openapi.json` says what the service accepts (bounds that
are the settings' own, no dangling references, a form Swagger UI can fill), and every `/v1`
answer, errors included, is in OpenAI's shape."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import respx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from src.config import Settings
from src.main import create_app
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.errors import assert_error
from tests.helpers.openrouter import GPT, MODELS_BODY, completion_body

pytestmark = pytest.mark.anyio

FORM = "Body_create_benchmark_benchmark_post"
# The form's optional fields and what the service does when a field is not sent.
FORM_DEFAULTS: dict[str, object] = {
    "max_tokens": 512,
    "temperature": None,
    "top_p": None,
    "runs": 5,
    "concurrency": 1,
    "stream": True,
    "rate": None,
    "arrival": "constant",
    "seed": 0,
    "warmup": 0,
    "duration": None,
    "ttft_slo": None,
    "latency_slo": None,
    "tpot_slo": None,
    "sweep": None,
    "prompt_tokens": None,
    "prompt_tokens_stdev": 0,
    "prompts": None,
    "output_tokens": None,
    "output_tokens_stdev": 0,
    "turns": 1,
    "provider_sort": None,
}


def openapi(**overrides: Any) -> dict[str, Any]:
    schema: dict[str, Any] = create_app(Settings(_env_file=None, **overrides)).openapi()
    return schema


def references(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in references(item)]
    return []


def resolve(schema: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = schema
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"dangling reference {ref}"
        node = node[part]
    return node


def body_schema(schema: dict[str, Any], path: str, media_type: str) -> dict[str, Any]:
    content = schema["paths"][path]["post"]["requestBody"]["content"][media_type]
    found: dict[str, Any] = content["schema"]
    return resolve(schema, found["$ref"]) if "$ref" in found else found


def test_every_reference_of_the_document_resolves() -> None:
    schema = openapi()

    refs = references(schema)

    assert "#/components/schemas/ChatMessageParam" in refs
    for ref in refs:
        resolve(schema, ref)


def test_the_benchmark_form_is_flat_with_a_file_picker_and_every_field() -> None:
    form = body_schema(openapi(), "/benchmark", "multipart/form-data")

    assert form["type"] == "object"
    assert not {"allOf", "anyOf", "oneOf"} & set(form)
    # One prompt source of three (a file, a dataset, synthetic prompts), and the model.
    assert form["required"] == ["model"]
    assert "exactly one prompt source" in form["description"]
    properties = form["properties"]
    for upload in ("prompt_file", "dataset_file"):
        assert properties[upload]["type"] == "string"
        assert properties[upload]["format"] == "binary"
    for repeated in ("model", "provider"):
        assert properties[repeated]["type"] == "array"
        assert properties[repeated]["items"]["type"] == "string"
    assert not {"models", "providers"} & set(properties)
    # A sweep's values: the field repeated, or one comma-separated field.
    assert properties["sweep_values"]["type"] == "array"
    assert properties["sweep_values"]["items"]["type"] == "number"
    assert set(properties) == {
        "prompt_file",
        "dataset_file",
        "model",
        "provider",
        "sweep_values",
        *FORM_DEFAULTS,
    }
    for name, default in FORM_DEFAULTS.items():
        field = properties[name]
        assert not {"allOf", "anyOf", "oneOf", "example", "examples"} & set(field), name
        assert field["type"] in {"integer", "number", "boolean", "string"}, name
        # Swagger UI fills a form field with its default: the service's own, or nothing.
        assert "default" in field and field["default"] == default, name
    assert properties["arrival"]["enum"] == ["constant", "poisson"]
    assert properties["provider_sort"]["enum"] == ["price", "throughput", "latency"]
    assert properties["sweep"]["enum"] == ["concurrency", "rate", "auto"]


def test_the_bounds_of_the_document_are_the_settings() -> None:
    schema = openapi(max_tokens_limit=4096, max_runs=7, max_concurrency=9, max_choices=2)

    form = body_schema(schema, "/benchmark", "multipart/form-data")["properties"]
    generate = body_schema(schema, "/generate", "application/json")["properties"]
    chat = body_schema(schema, "/v1/chat/completions", "application/json")["properties"]

    assert form["max_tokens"]["maximum"] == 4096
    assert form["output_tokens"]["maximum"] == 4096
    assert form["runs"]["maximum"] == 7
    assert form["concurrency"]["maximum"] == 9
    assert generate["max_tokens"]["maximum"] == 4096
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        assert [branch.get("maximum") for branch in chat[name]["anyOf"]] == [4096, None], name
    assert [branch.get("maximum") for branch in chat["n"]["anyOf"]] == [2, None]
    reasoning = resolve(schema, "#/components/schemas/ReasoningParams")
    assert reasoning["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 4096


def test_the_model_id_rule_is_in_the_document() -> None:
    schema = openapi()
    ids = [
        body_schema(schema, "/generate", "application/json")["properties"]["model"],
        body_schema(schema, "/v1/chat/completions", "application/json")["properties"]["model"],
        body_schema(schema, "/benchmark", "multipart/form-data")["properties"]["model"]["items"],
    ]

    for model in ids:
        pattern = re.compile(model["pattern"])
        assert model["maxLength"] == 200
        assert pattern.search("emulator/small") and pattern.search(" openai/gpt-4o ")
        for refused in ("a\x00b", "a\nb", "a\u2028b", "a\x85b", "   ", ""):
            assert not pattern.search(refused), refused
    prompt = body_schema(schema, "/generate", "application/json")["properties"]["prompt"]
    assert re.search(prompt["pattern"], "hi") and not re.search(prompt["pattern"], " \n\t")


def test_with_inbound_keys_the_document_declares_the_bearer_scheme() -> None:
    schema = openapi(proxy_api_keys="k1")

    schemes = schema["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            expected: list[dict[str, list[str]]] = [] if path == "/health" else [{name: []}]
            assert operation.get("security", []) == expected, (method, path)


def test_without_inbound_keys_no_scheme_is_declared() -> None:
    schema = openapi()

    assert "securitySchemes" not in schema.get("components", {})
    assert all("security" not in op for ops in schema["paths"].values() for op in ops.values())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1"),
        ("DELETE", "/v1/chat/completions"),
    ],
)
async def test_every_v1_refusal_of_a_path_is_in_openais_shape(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert response.status_code in (404, 405), response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == (
        "not_found_error" if response.status_code == 404 else "invalid_request_error"
    )
    assert path in error["message"]


async def test_other_paths_keep_the_services_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1x/models"), 404, "HTTPError")


async def test_the_openai_sdk_shows_the_services_message_for_an_unknown_path(
    settings: Settings, serve: Serve
) -> None:
    app = serve.app(settings)
    async with running_sdk(app) as sdk:
        with pytest.raises(openai.NotFoundError) as raised:
            await sdk.completions.create(model=GPT, prompt="hi")

    assert raised.value.type == "not_found_error"
    assert "/v1/completions" in str(raised.value)
    assert "/v1/chat/completions" in str(raised.value)


@asynccontextmanager
async def running_sdk(app: FastAPI) -> AsyncIterator[openai.AsyncOpenAI]:
    """The OpenAI SDK calling the app in process, its lifespan running."""
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)
        async with openai.AsyncOpenAI(
            base_url="http://service.test/v1",
            api_key="unused",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=transport),
        ) as sdk:
            yield sdk


async def test_a_token_limit_refusal_names_the_field_the_caller_sent(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())
    body = {
        "model": GPT,
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 5000,
    }

    async with serve(make_settings(tmp_path, max_tokens_limit=4096)) as client:
        response = await client.post("/v1/chat/completions", json=body)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "max_completion_tokens"
    assert error["message"].startswith("max_completion_tokens=5000 exceeds MAX_TOKENS_LIMIT")
    assert route.call_count == 0


async def test_a_concurrency_no_run_could_ever_hold_is_a_422_not_a_429(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    chat = upstream.post("/chat/completions").respond(json=completion_body())
    settings = make_settings(tmp_path, max_concurrency=1_000_000, max_inflight_total=200)

    async with serve(settings) as client:
        response = await post_benchmark(client, concurrency=100_000)

    body = assert_error(response, 422, "LimitExceededError", "concurrency=100000")
    assert "MAX_CONCURRENCY" in body["detail"] and "MAX_INFLIGHT_TOTAL=200" in body["detail"]
    assert "retry-after" not in response.headers
    assert chat.call_count == 0
