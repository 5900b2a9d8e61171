"""What a benchmark sends: synthetic prompts of a chosen length, JSONL and ShareGPT datasets,
and conversations whose turns carry the model's real answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from src.schemas.benchmarks import BenchmarkParameters
from src.services.base.exceptions import InvalidInputError
from src.services.benchmarker.load.sources import parse_dataset, synthetic_conversations
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import PROMPTS, post_benchmark
from tests.helpers.openrouter import GPT, MODELS_BODY, chunk, sse_response, usage_chunk
from tests.helpers.results import run_rows

pytestmark = pytest.mark.anyio


def synthetic(**fields: Any) -> BenchmarkParameters:
    return BenchmarkParameters.model_validate({"models": [GPT], **fields})


def test_the_same_seed_gives_the_same_synthetic_prompts_and_another_seed_others() -> None:
    first = synthetic(prompt_tokens=50, prompt_tokens_stdev=10, prompts=5, seed=7)
    again = synthetic(prompt_tokens=50, prompt_tokens_stdev=10, prompts=5, seed=7)
    other = synthetic(prompt_tokens=50, prompt_tokens_stdev=10, prompts=5, seed=8)

    texts = [c.label for c in synthetic_conversations(first)]
    assert texts == [c.label for c in synthetic_conversations(again)]
    assert texts != [c.label for c in synthetic_conversations(other)]
    assert len(set(texts)) == 5
    # With a spread the lengths differ from prompt to prompt; words = tokens / 1.3 at first.
    assert len({len(text.split()) for text in texts}) > 1


def test_a_calibrated_ratio_changes_how_many_words_a_prompt_has_not_its_target() -> None:
    parameters = synthetic(prompt_tokens=130, prompts=3, output_tokens=40)

    default = synthetic_conversations(parameters)
    calibrated = synthetic_conversations(parameters, tokens_per_word=1.0)

    assert [len(c.label.split()) for c in default] == [100, 100, 100]
    assert [len(c.label.split()) for c in calibrated] == [130, 130, 130]
    assert {c.max_tokens for c in calibrated} == {40}


def test_jsonl_and_sharegpt_lines_become_conversations() -> None:
    lines = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ]
        },
        {"messages": [{"role": "user", "content": "Count"}], "max_tokens": 7},
        {
            "conversations": [
                {"from": "human", "value": "First?"},
                {"from": "gpt", "value": "A recorded answer, never sent."},
                {"from": "human", "value": "Second?"},
            ]
        },
    ]
    data = b"\n".join(orjson.dumps(line) for line in lines) + b"\n\n"

    first, second, third = parse_dataset(data)

    assert [m.role for m in first.history] == ["system"] and first.turns == ("Hi",)
    assert (second.turns, second.max_tokens) == (("Count",), 7)
    assert (third.history, third.turns) == ((), ("First?", "Second?"))


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"messages": []}', '"messages" must be a non-empty array'),
        (b'{"conversations": [{"from": "robot", "value": "x"}]}', '"from" must be'),
        (b'{"conversations": [{"from": "gpt", "value": "x"}]}', "no human turn"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
        (b'{"prompt": "x"}', 'expected "messages" or "conversations"'),
    ],
)
def test_a_bad_dataset_line_is_named_by_its_number(bad_line: bytes, reason: str) -> None:
    good = b'{"messages": [{"role": "user", "content": "fine"}]}'

    with pytest.raises(InvalidInputError) as caught:
        parse_dataset(b"\n".join([good, b"", bad_line, good]))

    assert caught.value.detail.startswith("dataset_file line 3: ")
    assert reason in caught.value.detail


@pytest.fixture
def catalog_route(upstream: respx.MockRouter) -> respx.Route:
    return upstream.get("/models").respond(json=MODELS_BODY)


async def post_form(
    client: httpx.AsyncClient, files: dict[str, tuple[str, bytes, str]], **fields: object
) -> httpx.Response:
    data = {"model": [GPT], **{key: str(value) for key, value in fields.items()}}
    return await client.post("/benchmark", files=files, data=data)


def dataset(*lines: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {"dataset_file": ("data.jsonl", b"\n".join(lines), "application/x-ndjson")}


async def test_a_bad_dataset_line_is_a_422_before_anything_is_sent(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route
) -> None:
    chat = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())
    good = b'{"conversations": [{"from": "human", "value": "Hello"}]}'

    response = await post_form(client, dataset(good, good, b'{"conversations": 3}'))

    assert response.status_code == 422, response.text
    assert "dataset_file line 3" in response.json()["detail"]
    assert chat.call_count == 0


@pytest.mark.parametrize(
    ("files", "fields", "named"),
    [
        ({}, {}, "got none"),
        (
            {"prompt_file": ("p.txt", PROMPTS, "text/plain")},
            {"prompt_tokens": 20},
            "prompt_file and prompt_tokens",
        ),
        (
            {
                "prompt_file": ("p.txt", PROMPTS, "text/plain"),
                **dataset(b'{"messages": [{"role": "user", "content": "x"}]}'),
            },
            {},
            "prompt_file and dataset_file",
        ),
    ],
)
async def test_exactly_one_prompt_source_is_accepted(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
    files: dict[str, tuple[str, bytes, str]],
    fields: dict[str, object],
    named: str,
) -> None:
    chat = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())

    response = await post_form(client, files, **fields)

    assert response.status_code == 422, response.text
    assert "exactly one prompt source" in response.json()["detail"]
    assert named in response.json()["detail"]
    assert chat.call_count == 0


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"turns": 2}, "turns needs a dataset_file"),
        ({"prompts": 3}, "prompts (a count of synthetic prompts) needs prompt_tokens"),
    ],
)
async def test_fields_that_need_another_source_are_refused(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
    fields: dict[str, object],
    refused: str,
) -> None:
    chat = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())

    response = await post_form(client, {"prompt_file": ("p.txt", PROMPTS, "text/plain")}, **fields)

    assert response.status_code == 422, response.text
    assert refused in response.json()["detail"]
    assert chat.call_count == 0


def answer(text: str, finish_reason: str = "stop") -> httpx.Response:
    return sse_response(chunk(text), chunk("", finish_reason), usage_chunk(), b"data: [DONE]\n\n")


async def test_each_turn_carries_the_history_and_the_models_real_previous_answer(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route, settings: Any
) -> None:
    bodies: list[dict[str, Any]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return answer(f"Answer number {len(bodies)}")

    upstream.post("/chat/completions").mock(side_effect=reply)
    conversation = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "First?"},
            {"from": "gpt", "value": "A recorded answer, never sent."},
            {"from": "human", "value": "Second?"},
            {"from": "gpt", "value": "Another recorded one."},
            {"from": "human", "value": "Third?"},
        ]
    }

    response = await post_form(client, dataset(orjson.dumps(conversation)), turns=3, runs=1)

    assert response.status_code == 200, response.text
    assert [body["messages"] for body in bodies] == [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "First?"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "First?"},
            {"role": "assistant", "content": "Answer number 1"},
            {"role": "user", "content": "Second?"},
        ],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "First?"},
            {"role": "assistant", "content": "Answer number 1"},
            {"role": "user", "content": "Second?"},
            {"role": "assistant", "content": "Answer number 2"},
            {"role": "user", "content": "Third?"},
        ],
    ]
    summary = response.json()
    assert (summary["requests"], summary["finished_requests"]) == (3, 3)
    [stats] = summary["models"]
    assert [(t["turn"], t["count"], t["ok"]) for t in stats["per_turn"]] == [
        (1, 1, 1),
        (2, 1, 1),
        (3, 1, 1),
    ]
    assert all(t["ttft"]["p50"] is not None for t in stats["per_turn"])
    rows = run_rows(settings.benchmarks_dir, summary)
    assert [(row["turn"], row["prompt"]) for row in rows] == [
        ("1", "First?"),
        ("2", "Second?"),
        ("3", "Third?"),
    ]


async def test_a_single_turn_dataset_sends_its_history_before_the_user_message(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route
) -> None:
    bodies: list[dict[str, Any]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return answer("Fine.")

    upstream.post("/chat/completions").mock(side_effect=reply)
    line = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi?"},
        ]
    }

    response = await post_form(client, dataset(orjson.dumps(line)), runs=1)

    assert response.status_code == 200, response.text
    assert [body["messages"] for body in bodies] == [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    ]


async def test_only_a_conversations_first_turn_is_scheduled_the_next_follow_its_answers(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route, settings: Any
) -> None:
    upstream.post("/chat/completions").mock(side_effect=lambda _: answer("Fine."))
    line = {
        "conversations": [
            {"from": "human", "value": "First?"},
            {"from": "gpt", "value": "Recorded."},
            {"from": "human", "value": "Second?"},
        ]
    }

    response = await post_form(client, dataset(orjson.dumps(line)), turns=2, runs=1, rate=50)

    assert response.status_code == 200, response.text
    rows = run_rows(settings.benchmarks_dir, response.json())
    lags = {row["turn"]: row["send_lag_seconds"] for row in rows}
    assert lags["1"] != ""  # sent on the schedule: its lag is measured
    assert lags["2"] == ""  # sent when the first answer ended: no schedule to lag behind


async def test_a_prompt_files_requests_carry_the_runs_max_tokens(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route
) -> None:
    sent: list[object] = []

    def reply(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["max_tokens"])
        return answer("Fine.")

    upstream.post("/chat/completions").mock(side_effect=reply)
    prompts = {"prompt_file": ("p.txt", PROMPTS, "text/plain")}

    response = await post_form(client, prompts, runs=1, max_tokens=77)

    assert response.status_code == 200, response.text
    assert sent and set(sent) == {77}


async def test_output_tokens_sets_max_tokens_and_answers_ending_early_are_counted(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route
) -> None:
    sent: list[int] = []

    def reply(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["max_tokens"])
        # Every third answer runs to max_tokens; the others stop on their own.
        return answer("Short.", "length" if len(sent) % 3 == 0 else "stop")

    upstream.post("/chat/completions").mock(side_effect=reply)
    prompt_file = {"prompt_file": ("p.txt", b"One\nTwo\nThree\n", "text/plain")}

    response = await post_form(client, prompt_file, output_tokens=33, runs=2)

    assert response.status_code == 200, response.text
    assert sent == [33] * 6
    [stats] = response.json()["models"]
    assert stats["lengths"]["early_finishes"] == 4
    assert stats["lengths"]["output"]["target"] == 33
    page = (await client.get(f"/benchmarks/{response.json()['id']}/report")).text
    row = page.split('<table id="lengths">', 1)[1].split("</table>", 1)[0]
    assert '<td class="num">33</td>' in row and '<td class="num">4</td>' in row


async def test_runs_with_the_same_seed_send_the_upstream_the_same_synthetic_text(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route
) -> None:
    received: list[str] = []

    def reply(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content)["messages"][-1]["content"])
        return answer("Fine.")

    upstream.post("/chat/completions").mock(side_effect=reply)
    sent = []
    for seed in (5, 5, 6):
        received.clear()
        form = {"prompt_tokens": 26, "prompts": 3, "runs": 1, "seed": seed}
        response = await post_form(client, {}, **form)
        assert response.status_code == 200, response.text
        sent.append(list(received))

    assert sent[0] == sent[1]
    assert sent[0] != sent[2]
    # 26 tokens at the 1.3 tokens per word assumed without a warm-up.
    assert [len(text.split()) for text in sent[0]] == [20, 20, 20]


LINE = b'{"messages": [{"role": "user", "content": "' + b"x" * 40 + b'"}]}'


@pytest.mark.parametrize(
    ("overrides", "files", "fields", "status", "needles"),
    [
        ({"max_upload_bytes": 100}, dataset(LINE, LINE), {}, 413, ["dataset_file", "=100"]),
        ({"max_prompts": 2}, dataset(LINE, LINE, LINE), {}, 422, ["dataset_file=3", "=2"]),
        ({"max_prompts": 2}, {}, {"prompt_tokens": 9, "prompts": 3}, 422, ["prompts=3", "=2"]),
        (
            {"max_tokens_limit": 50},
            {},
            {"prompt_tokens": 9, "output_tokens": 51},
            422,
            ["output_tokens=51"],
        ),
        (
            {"max_tokens_limit": 50},
            {},
            {"prompt_tokens": 9, "output_tokens": 40, "output_tokens_stdev": 30},
            422,
            ["output_tokens_stdev", "MAX_TOKENS_LIMIT=50"],
        ),
    ],
)
async def test_the_upload_and_prompt_limits_apply_to_datasets_and_synthetic_prompts(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
    overrides: dict[str, int],
    files: dict[str, tuple[str, bytes, str]],
    fields: dict[str, object],
    status: int,
    needles: list[str],
) -> None:
    chat = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())

    async with serve(make_settings(tmp_path, **overrides)) as client:
        response = await post_form(client, files, **fields)

    assert response.status_code == status, response.text
    for needle in needles:
        assert needle in response.json()["detail"]
    assert chat.call_count == 0


async def test_a_seed_past_64_bits_is_a_422_not_a_crash(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route
) -> None:
    # Kept in the run's records: a seed they cannot hold once gave a 500 from the store.
    chat = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())

    response = await post_benchmark(client, seed=2**64)

    assert response.status_code == 422, response.text
    assert "seed" in response.text
    assert chat.call_count == 0


async def test_each_pinned_provider_runs_every_turn_of_the_conversations(
    client: httpx.AsyncClient, upstream: respx.MockRouter, catalog_route: respx.Route, settings: Any
) -> None:
    endpoints = {
        "data": {
            "id": GPT,
            "endpoints": [
                {"provider_name": "Alpha", "tag": "alpha"},
                {"provider_name": "Beta", "tag": "beta"},
            ],
        }
    }
    upstream.get(f"/models/{GPT}/endpoints").respond(json=endpoints)
    bodies: list[dict[str, Any]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        turn = sum(message["role"] == "user" for message in body["messages"])
        return answer(f"{body['provider']['only'][0]} answer {turn}")

    upstream.post("/chat/completions").mock(side_effect=reply)
    conversation = {
        "conversations": [
            {"from": "human", "value": "First?"},
            {"from": "gpt", "value": "A recorded answer, never sent."},
            {"from": "human", "value": "Second?"},
        ]
    }
    data = {"model": [GPT], "provider": ["alpha", "beta"], "turns": "2", "runs": "2"}

    response = await client.post("/benchmark", files=dataset(orjson.dumps(conversation)), data=data)

    assert response.status_code == 200, response.text
    summary = response.json()
    # 2 series x 1 conversation x 2 turns x 2 runs
    assert (summary["requests"], summary["finished_requests"]) == (8, 8)
    assert len(bodies) == 8
    for body in bodies:
        pinned = body["provider"]
        assert pinned == {"only": [pinned["only"][0]], "allow_fallbacks": False}
        if len(body["messages"]) > 1:
            # The history is the same provider's own first answer.
            assert body["messages"][1] == {
                "role": "assistant",
                "content": f"{pinned['only'][0]} answer 1",
            }
    assert sorted(len(body["messages"]) for body in bodies) == [1, 1, 1, 1, 3, 3, 3, 3]
    assert sorted((s["provider"], s["count"]) for s in summary["models"]) == [
        ("alpha", 4),
        ("beta", 4),
    ]
    for stats in summary["models"]:
        assert [(t["turn"], t["count"]) for t in stats["per_turn"]] == [(1, 2), (2, 2)]
    rows = run_rows(settings.benchmarks_dir, summary)
    assert sorted((row["pinned_provider"], row["turn"]) for row in rows) == [
        ("alpha", "1"),
        ("alpha", "1"),
        ("alpha", "2"),
        ("alpha", "2"),
        ("beta", "1"),
        ("beta", "1"),
        ("beta", "2"),
        ("beta", "2"),
    ]
