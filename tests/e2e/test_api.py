"""/health, /models and /generate (plain and streamed) over real sockets, against the emulator."""

from __future__ import annotations

import time

import httpx

from tests.helpers.audit import SecretAudit
from tests.helpers.e2e import MODEL, generate_body, unique
from tests.helpers.launcher import audited_client
from tests.helpers.processes import LOOPBACK, ServiceProcess
from tests.helpers.sse import parse_sse, parse_sse_lines

UPSTREAM_SECONDS = 0.2
EMULATOR_IDS = {"emulator/small", "emulator/medium", "emulator/large", "emulator/tiny:free"}


def test_health_is_open_and_names_the_upstream(
    app: ServiceProcess, emulator: ServiceProcess, audit: SecretAudit
) -> None:
    with audited_client(audit, app.url, authorized=False) as anonymous:
        response = anonymous.get("/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "upstream": f"{LOOPBACK}:{emulator.port}",
        "transport": "wire",
        "proxy": None,
        "jobs": {"backend": "files"},
    }
    assert response.headers["x-request-id"]


def test_endpoints_refuse_a_caller_without_the_inbound_key(
    app: ServiceProcess, audit: SecretAudit
) -> None:
    with audited_client(audit, app.url, authorized=False) as anonymous:
        missing = anonymous.get("/models")
        wrong = anonymous.post(
            "/generate",
            json=generate_body("hi"),
            headers={"Authorization": "Bearer not-the-key"},
        )

    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "AuthenticationError"


def test_models_lists_the_emulator_models(client: httpx.Client) -> None:
    response = client.get("/models")

    assert response.status_code == 200
    body = response.json()
    ids = {model["id"] for model in body["models"]}
    assert ids == EMULATOR_IDS
    assert body["count"] == len(body["models"])
    small = next(model for model in body["models"] if model["id"] == MODEL)
    assert small["free"] is False
    assert small["context_length"] > 0
    assert set(small["pricing"]) == {"prompt", "completion"}


def test_models_free_true_keeps_only_free_models(client: httpx.Client) -> None:
    response = client.get("/models", params={"free": "true"})

    assert response.status_code == 200
    body = response.json()
    assert [model["id"] for model in body["models"]] == ["emulator/tiny:free"]
    assert body["count"] == 1
    assert all(model["free"] for model in body["models"])


def test_generate_returns_text_with_consistent_token_counts(client: httpx.Client) -> None:
    # The emulator answers after UPSTREAM_SECONDS, so the reported latency has a floor.
    prompt = unique(f"Why is the sky blue? [[emulator:delay={UPSTREAM_SECONDS}]]")

    started = time.monotonic()
    response = client.post("/generate", json=generate_body(prompt, max_tokens=512))
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    body = response.json()
    assert body["text"].strip()
    assert body["model"] == MODEL
    assert body["finish_reason"] == "stop"
    assert body["prompt_tokens"] > 0 and body["completion_tokens"] > 0
    assert body["tokens_used"] == body["prompt_tokens"] + body["completion_tokens"]
    # The upstream round trip: the upstream's own delay (its timer may fire a millisecond
    # early), at most the whole call.
    assert UPSTREAM_SECONDS * 0.99 <= body["latency_seconds"] <= elapsed


def test_generate_stops_at_max_tokens_with_finish_reason_length(client: httpx.Client) -> None:
    response = client.post("/generate", json=generate_body(unique("Tell me a story"), max_tokens=3))

    assert response.status_code == 200
    body = response.json()
    assert body["finish_reason"] == "length"
    assert body["completion_tokens"] == 3
    assert body["tokens_used"] == body["prompt_tokens"] + 3


def test_the_same_request_twice_gives_the_same_text(client: httpx.Client) -> None:
    request = generate_body(unique("Name three rivers"))

    first = client.post("/generate", json=request)
    second = client.post("/generate", json=request)

    assert first.status_code == second.status_code == 200
    assert first.json()["text"] == second.json()["text"]
    assert first.json()["tokens_used"] == second.json()["tokens_used"]


def test_stream_sends_token_events_then_done(client: httpx.Client) -> None:
    with client.stream(
        "POST", "/generate", params={"stream": "true"}, json=generate_body(unique("Stream it"))
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse_lines(response.iter_lines())

    names = [event.event for event in events]
    assert names[-1] == "done"
    assert set(names[:-1]) == {"token"} and len(names) > 2
    done = events[-1].data
    assert done["model"] == MODEL
    assert done["finish_reason"] in {"stop", "length"}
    assert done["tokens_used"] == done["prompt_tokens"] + done["completion_tokens"]
    assert done["completion_tokens"] == len(names) - 1  # the emulator sends one token per chunk


def test_streamed_tokens_add_up_to_the_plain_answer(client: httpx.Client) -> None:
    request = generate_body(unique("Compare both ways"), max_tokens=40)

    plain = client.post("/generate", json=request)
    streamed = client.post("/generate", params={"stream": "true"}, json=request)

    assert plain.status_code == streamed.status_code == 200
    events = parse_sse(streamed.text)
    text = "".join(event.data["text"] for event in events if event.event == "token")
    assert text == plain.json()["text"]
    assert events[-1].data["tokens_used"] == plain.json()["tokens_used"]


def test_stream_reports_a_time_to_first_token_within_the_latency(client: httpx.Client) -> None:
    # A little decode time, so the first token and the end are measurably apart.
    prompt = unique("Pace it [[emulator:tps=200]]")

    response = client.post("/generate", params={"stream": "true"}, json=generate_body(prompt))

    assert response.status_code == 200
    done = parse_sse(response.text)[-1]
    assert done.event == "done"
    ttft, latency = done.data["ttft_seconds"], done.data["latency_seconds"]
    assert ttft is not None
    assert 0 < ttft <= latency
    # Paced at 200 tokens/s: the rest took at least that long (half is left as margin).
    assert latency - ttft >= (done.data["completion_tokens"] - 1) / 200 * 0.5


def test_mid_stream_error_ends_the_stream_with_an_error_event(client: httpx.Client) -> None:
    prompt = unique("Break it [[emulator:mid_stream_error]]")

    response = client.post("/generate", params={"stream": "true"}, json=generate_body(prompt))

    assert response.status_code == 200  # the status left before the error happened
    events = parse_sse(response.text)
    assert [event.event for event in events[:-1]] == ["token"] * (len(events) - 1)
    assert len(events) >= 2
    error = events[-1]
    assert error.event == "error"
    assert error.data["status_code"] == 502
    assert error.data["error"] == "UpstreamStreamError"
    assert error.data["request_id"] == response.headers["x-request-id"]
