from __future__ import annotations

from pathlib import Path

import pytest
import respx

from tests.helpers.app import Serve, make_settings, read_log
from tests.helpers.openrouter import GENERATE, MODELS_BODY

pytestmark = pytest.mark.anyio

KEY_ONE = "inbound-key-one-abcdef"
KEY_TWO = "inbound-key-two-123456"
KEYS = f"{KEY_ONE},{KEY_TWO}"
REFUSAL = (
    "Missing or invalid API key: send one of PROXY_API_KEYS in the Authorization header, "
    "as 'Bearer <key>'."
)


async def test_without_proxy_keys_everything_is_open(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    async with serve(make_settings(tmp_path)) as client:
        assert (await client.get("/models")).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        KEY_ONE,
        f"Basic {KEY_ONE}",
        "Bearer ",
        "Bearer",
        # Near misses of a real key: a prefix, an extension, a neighbour, the keys joined.
        f"Bearer {KEY_ONE[:-1]}",
        "Bearer inbound-key-one",
        f"Bearer {KEY_ONE}x",
        f"Bearer {KEY_ONE.upper()}",
        f"Bearer {KEY_ONE},{KEY_TWO}",
        f"Bearer {KEYS}",
        f"Bearer {KEY_TWO[1:]}",
        f"{KEY_ONE} Bearer",
        f"Bearer{KEY_ONE}",
    ],
)
async def test_with_proxy_keys_a_missing_or_wrong_key_is_401_json(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, authorization: str | None
) -> None:
    models = upstream.get("/models").respond(json=MODELS_BODY)
    chat = upstream.post("/chat/completions").respond(500)
    headers = {"Authorization": authorization} if authorization else {}
    async with serve(make_settings(tmp_path, proxy_api_keys=KEYS)) as client:
        response = await client.get("/models", headers=headers)
        generate = await client.post("/generate", json=GENERATE, headers=headers)

    for refused in (response, generate):
        assert refused.status_code == 401
        assert refused.json()["error"] == "AuthenticationError"
        assert refused.json()["detail"] == REFUSAL
        assert refused.headers["www-authenticate"] == "Bearer"
    assert models.call_count == chat.call_count == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_any_configured_key_is_accepted_and_never_logged(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, scheme: str
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    settings = make_settings(tmp_path, proxy_api_keys=KEYS)
    async with serve(settings) as client:
        for key in (KEY_ONE, KEY_TWO):
            response = await client.get("/models", headers={"Authorization": f"{scheme} {key}"})
            assert response.status_code == 200, response.text

    log = read_log(settings)
    assert "inbound-key-one" not in log and "inbound-key-two" not in log


async def test_admin_keys_alone_turn_the_key_check_on_and_are_never_logged(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    settings = make_settings(tmp_path, proxy_admin_keys=KEY_ONE)
    async with serve(settings) as client:
        refused = await client.get("/models")
        wrong = await client.get("/models", headers={"Authorization": f"Bearer {KEY_TWO}"})
        allowed = await client.get("/models", headers={"Authorization": f"Bearer {KEY_ONE}"})

    assert (refused.status_code, wrong.status_code, allowed.status_code) == (401, 401, 200)
    assert refused.json()["detail"] == REFUSAL
    assert "inbound-key-one" not in read_log(settings)


async def test_every_route_that_spends_or_reads_results_needs_the_key(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    async with serve(make_settings(tmp_path, proxy_api_keys=KEYS)) as client:
        routes = (await client.get("/openapi.json")).json()["paths"]
        statuses = {
            (method.upper(), path): (
                await client.request(method, path.replace("{benchmark_id}", "x"))
            ).status_code
            for path, operations in routes.items()
            for method in operations
        }

    open_routes = {("GET", "/health")}
    assert {route for route, status in statuses.items() if status != 401} == open_routes
    assert ("POST", "/benchmark") in statuses and ("POST", "/generate") in statuses


async def test_health_the_docs_their_assets_and_openapi_stay_open(
    tmp_path: Path, serve: Serve
) -> None:
    async with serve(make_settings(tmp_path, proxy_api_keys=KEYS)) as client:
        for path in (
            "/health",
            "/docs",
            "/docs/oauth2-redirect",
            "/docs/assets/swagger-ui.css",
            "/redoc",
            "/docs/assets/redoc.standalone.js",
            "/openapi.json",
        ):
            assert (await client.get(path)).status_code == 200, path
        # Open by exact path or under the assets' prefix only.
        assert (await client.get("/docsx")).status_code == 401
        assert (await client.get("/health/x")).status_code == 401
