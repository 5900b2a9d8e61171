import httpx
import pytest

from src.services.emulator import EmulatorConfig

pytestmark = pytest.mark.anyio

CONFIG = EmulatorConfig(ttft_seconds=0.2, tokens_per_second=40.0)


@pytest.mark.parametrize("config", [CONFIG])
async def test_endpoints_list_the_providers_in_openrouters_shape(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/models/emulator/small/endpoints")

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["id"] == "emulator/small"
    assert data["name"] == "Emulator: Small"
    assert data["architecture"]["modality"] == "text->text"
    by_name = {endpoint["provider_name"]: endpoint for endpoint in data["endpoints"]}
    assert list(by_name) == ["Alpha", "Beta", "Gamma"]
    beta = by_name["Beta"]
    assert beta["name"] == "Beta | emulator/small"
    assert beta["tag"] == "beta"
    assert beta["pricing"] == {
        "prompt": "0.00000008",
        "completion": "0.0000003",
        "request": "0",
        "image": "0",
    }
    assert beta["quantization"] == "fp8"
    assert beta["context_length"] == 32768
    assert beta["status"] == 0
    assert beta["uptime_last_30m"] == 100.0
    assert "max_completion_tokens" in beta["supported_parameters"]
    # The configured figures scaled by Beta's factors (TTFT x1.5, tokens/s x0.8).
    assert beta["latency_last_30m"]["p50"] == pytest.approx(0.3)
    assert beta["throughput_last_30m"]["p50"] == pytest.approx(32.0)
    assert by_name["Gamma"]["context_length"] == 16384


async def test_endpoints_of_a_free_model_and_a_two_provider_model(
    client: httpx.AsyncClient,
) -> None:
    free = (await client.get("/api/v1/models/emulator/tiny:free/endpoints")).json()["data"]
    medium = (await client.get("/models/emulator/medium/endpoints")).json()["data"]

    assert [e["pricing"]["prompt"] for e in free["endpoints"]] == ["0", "0"]
    assert [e["provider_name"] for e in medium["endpoints"]] == ["Alpha", "Beta"]


@pytest.mark.parametrize("config", [EmulatorConfig(failing_providers=frozenset({"Gamma"}))])
async def test_a_failing_provider_shows_as_down(client: httpx.AsyncClient) -> None:
    data = (await client.get("/api/v1/models/emulator/small/endpoints")).json()["data"]

    gamma = data["endpoints"][2]
    assert gamma["provider_name"] == "Gamma"
    assert (gamma["status"], gamma["uptime_last_30m"]) == (-1, 0.0)
    assert data["endpoints"][0]["status"] == 0


async def test_endpoints_of_an_unknown_model_are_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/models/nobody/nothing/endpoints")

    assert response.status_code == 404
    assert response.json()["error"] == {"code": 404, "message": "Model nobody/nothing not found"}


async def test_endpoints_only_answer_get(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/models/emulator/small/endpoints")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
