from decimal import Decimal

import httpx
import pytest

pytestmark = pytest.mark.anyio

REQUIRED_IDS = {"emulator/small", "emulator/large", "emulator/tiny:free"}


async def test_models_lists_the_required_emulator_ids(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/models")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    ids = {model["id"] for model in response.json()["data"]}
    assert ids >= REQUIRED_IDS
    assert all(model_id.startswith("emulator/") for model_id in ids)


async def test_models_is_served_bare_and_under_api_v1_alike(client: httpx.AsyncClient) -> None:
    prefixed = await client.get("/api/v1/models")
    bare = await client.get("/models")

    assert bare.status_code == 200
    assert bare.content == prefixed.content


async def test_models_needs_no_key_like_openrouter(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/models", headers={"Authorization": ""})

    assert response.status_code == 200


async def test_every_model_has_openrouter_fields_and_types(client: httpx.AsyncClient) -> None:
    models = (await client.get("/api/v1/models")).json()["data"]

    assert len(models) >= 3
    for model in models:
        assert isinstance(model["id"], str)
        assert isinstance(model["name"], str) and model["name"]
        assert isinstance(model["created"], int)
        assert isinstance(model["description"], str) and model["description"]
        assert isinstance(model["context_length"], int) and model["context_length"] > 0
        pricing = model["pricing"]
        for key in ("prompt", "completion", "request", "image"):
            assert isinstance(pricing[key], str), (model["id"], key)
            assert Decimal(pricing[key]) >= 0
        architecture = model["architecture"]
        assert architecture["modality"] == "text->text"
        assert architecture["input_modalities"] == ["text"]
        assert architecture["output_modalities"] == ["text"]
        assert isinstance(architecture["tokenizer"], str)
        top = model["top_provider"]
        assert top["context_length"] == model["context_length"]
        assert isinstance(top["max_completion_tokens"], int)
        assert isinstance(top["is_moderated"], bool)
        assert {"max_tokens", "temperature", "top_p"} <= set(model["supported_parameters"])


async def test_free_model_has_free_suffix_and_zero_prices(client: httpx.AsyncClient) -> None:
    models = {model["id"]: model for model in (await client.get("/models")).json()["data"]}

    free = models["emulator/tiny:free"]["pricing"]
    assert free["prompt"] == "0"
    assert free["completion"] == "0"
    for model_id in ("emulator/small", "emulator/large"):
        assert Decimal(models[model_id]["pricing"]["completion"]) > 0
    assert Decimal(models["emulator/large"]["pricing"]["prompt"]) > Decimal(
        models["emulator/small"]["pricing"]["prompt"]
    )


async def test_health_answers_under_both_paths(client: httpx.AsyncClient) -> None:
    for path in ("/", "/health", "/api/v1/health"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.json()["status"] == "ok"
