from __future__ import annotations

from pathlib import Path

import pytest
import respx

from tests.conftest import MODELS_BODY, make_settings, read_log, serve

pytestmark = pytest.mark.anyio

KEYS = "inbound-key-one-abcdef,inbound-key-two-123456"


async def test_without_proxy_keys_everything_is_open(
    tmp_path: Path, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    async with serve(make_settings(tmp_path)) as client:
        assert (await client.get("/models")).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "inbound-key-one-abcdef", "Basic inbound-key-one-abcdef", "Bearer "],
)
async def test_with_proxy_keys_a_missing_or_wrong_key_is_401_json(
    tmp_path: Path, upstream: respx.MockRouter, authorization: str | None
) -> None:
    route = upstream.get("/models").respond(json=MODELS_BODY)
    headers = {"Authorization": authorization} if authorization else {}
    async with serve(make_settings(tmp_path, proxy_api_keys=KEYS)) as client:
        response = await client.get("/models", headers=headers)
        generate = await client.post("/generate", json={"model": "m/x", "prompt": "hi"})

    assert response.status_code == 401
    assert response.json()["error"] == "AuthenticationError"
    assert response.headers["www-authenticate"] == "Bearer"
    assert generate.status_code == 401
    assert route.call_count == 0


async def test_any_configured_key_is_accepted_and_never_logged(
    tmp_path: Path, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    settings = make_settings(tmp_path, proxy_api_keys=KEYS)
    async with serve(settings) as client:
        for key in KEYS.split(","):
            response = await client.get("/models", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200

    log = read_log(settings)
    assert "inbound-key-one" not in log and "inbound-key-two" not in log


async def test_health_docs_and_openapi_stay_open(tmp_path: Path) -> None:
    async with serve(make_settings(tmp_path, proxy_api_keys=KEYS)) as client:
        for path in ("/health", "/docs", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
