"""The benchmark use cases on their own: what a submission is refused for and in which words,
before any request is sent; and cancelling, listing, following and downloading runs as the store
keeps them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from src.config import Settings
from src.schemas.benchmarks import BenchmarkParameters, BenchmarkState, BenchmarkSummary
from src.services.base.exceptions import (
    ConflictError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    UnknownModelError,
)
from src.services.benchmarker.load.plan import BenchmarkPlan
from src.services.benchmarker.results.file_utils import result_paths
from src.services.benchmarker.runs import service
from src.services.benchmarker.runs.file_store import FileRunStore
from src.services.benchmarker.runs.owners import EVERYONE, Caller
from tests.helpers.app import make_settings
from tests.helpers.runs import run_id, state, summary_of

pytestmark = pytest.mark.anyio

MODEL = "openai/gpt-4o"
BOUND = 15.0


class Upload:
    """An uploaded file, read in pieces."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, size: int = -1) -> bytes:
        size = len(self.data) if size < 0 else size
        piece, self.data = self.data[:size], self.data[size:]
        return piece


def params(**fields: Any) -> BenchmarkParameters:
    return BenchmarkParameters(**{"models": [MODEL], **fields})


def prompts(n: int) -> Upload:
    return Upload(b"".join(b"prompt %d\n" % i for i in range(n)))


def dataset(*lines: object) -> Upload:
    return Upload(b"".join(orjson.dumps(line) + b"\n" for line in lines))


async def validate(
    settings: Settings,
    parameters: BenchmarkParameters,
    upload: Upload | None = None,
    data: Upload | None = None,
) -> BenchmarkPlan:
    return await service.validate_benchmark(settings, upload, parameters, data)


# --- validation -------------------------------------------------------------------------------


async def test_duplicate_models_and_providers_are_dropped_in_order(tmp_path: Path) -> None:
    parameters = params(models=[MODEL, "x/y", MODEL], providers=["beta", "alpha", "beta"])

    plan = await validate(make_settings(tmp_path), parameters, prompts(2))

    assert plan.parameters.models == [MODEL, "x/y"]
    assert plan.parameters.providers == ["beta", "alpha"]
    assert plan.providers == {MODEL: ("beta", "alpha"), "x/y": ("beta", "alpha")}
    assert plan.prompts == ["prompt 0", "prompt 1"]
    assert plan.total_requests == 2 * 2 * 2 * 5


async def test_all_providers_stands_alone_and_is_expanded_later(tmp_path: Path) -> None:
    plan = await validate(make_settings(tmp_path), params(providers=["alpha", "all"]), prompts(1))

    assert plan.parameters.providers == ["all"]
    assert plan.providers == {}


async def test_the_plan_carries_the_run_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_benchmark_requests=77, max_run_seconds=600)

    plan = await validate(settings, params(runs=1), prompts(1))

    assert (plan.request_cap, plan.max_seconds) == (77, 600)
    assert plan.conversations is None


@pytest.mark.parametrize(
    ("field", "value", "setting", "message"),
    [
        ("runs", 4, "max_runs", "runs=4 exceeds MAX_RUNS=3."),
        ("max_tokens", 4, "max_tokens_limit", "max_tokens=4 exceeds MAX_TOKENS_LIMIT=3."),
        (
            "output_tokens",
            4,
            "max_tokens_limit",
            "output_tokens=4 exceeds MAX_TOKENS_LIMIT=3.",
        ),
        (
            "concurrency",
            4,
            "max_concurrency",
            "concurrency=4 exceeds MAX_CONCURRENCY=3.",
        ),
    ],
)
async def test_each_limit_is_refused_by_name_just_past_it(
    tmp_path: Path, field: str, value: int, setting: str, message: str
) -> None:
    settings = make_settings(tmp_path, **{setting: 3})

    with pytest.raises(LimitExceededError) as caught:
        await validate(settings, params(**{field: value}), prompts(1))
    assert caught.value.detail == message

    await validate(settings, params(**{field: value - 1}), prompts(1))  # at the limit: fine


async def test_output_tokens_replaces_max_tokens_in_the_check(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_tokens_limit=100)

    await validate(settings, params(max_tokens=512, output_tokens=50), prompts(1))


async def test_a_concurrency_past_max_inflight_total_names_both_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_concurrency=50, max_inflight_total=8)

    with pytest.raises(LimitExceededError) as caught:
        await validate(settings, params(concurrency=9), prompts(1))

    assert caught.value.detail == (
        "concurrency=9 exceeds 8, the most one run may hold in flight "
        "(MAX_CONCURRENCY=50, MAX_INFLIGHT_TOTAL=8)."
    )
    assert service.max_run_concurrency(settings) == 8
    await validate(settings, params(concurrency=8), prompts(1))


async def test_equal_limits_name_max_concurrency(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_concurrency=8, max_inflight_total=8)

    with pytest.raises(LimitExceededError, match="^concurrency=9 exceeds MAX_CONCURRENCY=8.$"):
        await validate(settings, params(concurrency=9), prompts(1))


@pytest.mark.parametrize(
    ("upload", "data", "synthetic", "got"),
    [
        (False, False, False, "none"),
        (True, True, False, "prompt_file and dataset_file"),
        (True, False, True, "prompt_file and prompt_tokens"),
        (False, True, True, "dataset_file and prompt_tokens"),
    ],
)
async def test_exactly_one_prompt_source(
    tmp_path: Path, upload: bool, data: bool, synthetic: bool, got: str
) -> None:
    parameters = params(prompt_tokens=20) if synthetic else params()

    with pytest.raises(InvalidInputError) as caught:
        await validate(
            make_settings(tmp_path),
            parameters,
            prompts(1) if upload else None,
            dataset({"messages": [{"role": "user", "content": "hi"}]}) if data else None,
        )

    assert caught.value.detail == (
        "Give exactly one prompt source: prompt_file, dataset_file, or prompt_tokens "
        f"(synthetic prompts); got {got}."
    )


async def test_a_count_of_prompts_needs_synthetic_prompts(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidInputError, match=r"^prompts \(a count of synthetic prompts\) needs prompt_tokens.$"
    ):
        await validate(make_settings(tmp_path), params(prompts=3), prompts(1))


async def test_turns_need_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="^turns needs a dataset_file"):
        await validate(make_settings(tmp_path), params(turns=2), prompts(1))


async def test_synthetic_prompts_are_counted_against_max_prompts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_prompts=4)

    plan = await validate(settings, params(prompt_tokens=20, prompts=4, runs=1))
    assert len(plan.prompts) == 4
    with pytest.raises(LimitExceededError, match="^prompts=5 exceeds MAX_PROMPTS=4.$"):
        await validate(settings, params(prompt_tokens=20, prompts=5))
    with pytest.raises(LimitExceededError, match=r"^prompts=\d+ exceeds MAX_PROMPTS=4.$"):
        await validate(settings, params(prompt_tokens=20))  # the default count is larger


async def test_a_prompt_file_is_counted_against_max_prompts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_prompts=3)

    await validate(settings, params(), prompts(3))
    with pytest.raises(
        LimitExceededError, match="^prompts in prompt_file=4 exceeds MAX_PROMPTS=3.$"
    ):
        await validate(settings, params(), prompts(4))


async def test_a_prompt_file_past_max_upload_bytes_is_refused(tmp_path: Path) -> None:
    from src.services.base.exceptions import PayloadTooLargeError

    with pytest.raises(PayloadTooLargeError, match="^prompt_file is larger than MAX_UPLOAD_BYTES"):
        await validate(make_settings(tmp_path, max_upload_bytes=10), params(), prompts(5))


def conversation(text: str, **fields: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], **fields}


async def test_a_datasets_conversations_are_counted_and_each_max_tokens_checked(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, max_prompts=2, max_tokens_limit=600)

    plan = await validate(
        settings, params(runs=1), data=dataset(conversation("a"), conversation("b"))
    )
    assert plan.conversations is not None and len(plan.conversations) == 2
    with pytest.raises(
        LimitExceededError, match="^lines in dataset_file=3 exceeds MAX_PROMPTS=2.$"
    ):
        await validate(settings, params(), data=dataset(*(conversation(c) for c in "abc")))
    with pytest.raises(LimitExceededError, match="^max_tokens=601 exceeds MAX_TOKENS_LIMIT=600.$"):
        await validate(settings, params(), data=dataset(conversation("a", max_tokens=601)))


async def test_a_dataset_past_max_upload_bytes_is_refused_by_name(tmp_path: Path) -> None:
    from src.services.base.exceptions import PayloadTooLargeError

    with pytest.raises(PayloadTooLargeError, match="^dataset_file is larger than"):
        await validate(
            make_settings(tmp_path, max_upload_bytes=10), params(), data=dataset(conversation("a"))
        )


async def test_output_tokens_fill_only_the_conversations_without_their_own(
    tmp_path: Path,
) -> None:
    plan = await validate(
        make_settings(tmp_path),
        params(output_tokens=40),
        data=dataset(conversation("a", max_tokens=7), conversation("b")),
    )

    assert plan.conversations is not None
    assert [c.max_tokens for c in plan.conversations] == [7, 40]


async def test_a_draw_of_output_tokens_past_the_limit_is_refused_up_front(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_tokens_limit=120)

    with pytest.raises(
        LimitExceededError,
        match=r"^output_tokens \(a draw with output_tokens_stdev\)=\d+ exceeds MAX_TOKENS_LIMIT",
    ):
        await validate(settings, params(output_tokens=100, output_tokens_stdev=60), prompts(50))
    await validate(settings, params(output_tokens=100, output_tokens_stdev=0), prompts(50))


async def test_too_many_requests_are_refused_with_the_arithmetic(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_benchmark_requests=11)

    with pytest.raises(LimitExceededError) as caught:
        await validate(settings, params(runs=2, providers=["a", "b"]), prompts(3))

    assert caught.value.detail == (
        "3 prompts x 2 runs x 2 series (model x provider) = 12 requests exceeds "
        "MAX_BENCHMARK_REQUESTS=11."
    )
    await validate(
        make_settings(tmp_path, max_benchmark_requests=12),
        params(runs=2, providers=["a", "b"]),
        prompts(3),
    )


async def test_too_many_requests_of_conversations_count_requests_per_run(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_benchmark_requests=5)
    two_turns = {
        "conversations": [
            {"from": "human", "value": "a"},
            {"from": "gpt", "value": "b"},
            {"from": "human", "value": "c"},
        ]
    }

    with pytest.raises(LimitExceededError) as caught:
        await validate(settings, params(runs=1, turns=2), data=dataset(*[two_turns] * 3))

    assert caught.value.detail.startswith("6 requests per run and series x 1 runs x 1 series")


async def test_a_schedule_longer_than_max_run_seconds_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_run_seconds=10)

    with pytest.raises(LimitExceededError) as caught:
        await validate(settings, params(rate=1.0, runs=4), prompts(4))
    assert caught.value.detail == (
        "rate=1 (constant) x 16 requests sends its last request after 15 s exceeds "
        "MAX_RUN_SECONDS=10."
    )
    with pytest.raises(LimitExceededError, match="^duration=11 exceeds MAX_RUN_SECONDS=10.$"):
        await validate(settings, params(duration=11), prompts(1))

    await validate(settings, params(duration=10), prompts(1))  # exactly the limit
    await validate(settings, params(rate=1.0, runs=11), prompts(1))  # last send at 10 s
    await validate(settings, params(runs=100), prompts(1))  # closed loop: no schedule


async def test_without_a_key_only_emulator_models_are_accepted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, openrouter_api_key="")

    with pytest.raises(UnknownModelError, match=f"^Model '{MODEL}' needs OpenRouter"):
        await validate(settings, params(), prompts(1))


# --- following runs ---------------------------------------------------------------------------


def write(settings: Settings, run: BenchmarkState) -> None:
    FileRunStore(settings.benchmarks_dir).write_state(run.id, run)


def finish(settings: Settings, run: BenchmarkState) -> BenchmarkSummary:
    summary = summary_of(run)
    FileRunStore(settings.benchmarks_dir).save_summary(run.id, summary)
    return summary


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    settings.benchmarks_dir.mkdir(parents=True)
    return settings


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "EVENTS_POLL_SECONDS", 0.02)
    monkeypatch.setattr(service, "PROGRESS_SECONDS", 0.0)


async def test_a_run_is_seen_only_by_whom_it_belongs_to(settings: Settings) -> None:
    run = state(run_id(), owner="alice")
    write(settings, run)

    assert await service.get_benchmark(settings, run.id, Caller(owner="alice")) == run
    for caller in (Caller(owner="bob"), Caller(owner=None)):
        with pytest.raises(NotFoundError, match=f"^No benchmark with id '{run.id}'.$"):
            await service.get_benchmark(settings, run.id, caller)


async def test_a_finished_run_cannot_be_cancelled(settings: Settings) -> None:
    run = state(run_id())
    write(settings, run)
    finish(settings, run)

    with pytest.raises(ConflictError) as caught:
        await service.cancel_benchmark(settings, run.id, EVERYONE)

    assert caught.value.detail == f"Benchmark '{run.id}' has already ended (completed)."
    assert not result_paths(settings.benchmarks_dir, run.id).cancel.exists()


async def test_a_cancel_waits_for_the_summary_the_runner_saves(
    settings: Settings, quick: None
) -> None:
    run = state(run_id())
    write(settings, run)

    async def runner() -> BenchmarkSummary:
        cancel = result_paths(settings.benchmarks_dir, run.id).cancel
        while not cancel.exists():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        return finish(settings, run.model_copy(update={"status": "cancelled"}))

    saving = asyncio.create_task(runner())
    view = await asyncio.wait_for(service.cancel_benchmark(settings, run.id, EVERYONE), BOUND)

    assert view == await saving
    assert isinstance(view, BenchmarkSummary)


async def test_a_cancel_answers_with_the_state_when_no_summary_comes_in_time(
    settings: Settings, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "CANCEL_WAIT_SECONDS", 0.2)
    run = state(run_id())
    write(settings, run)

    view = await asyncio.wait_for(service.cancel_benchmark(settings, run.id, EVERYONE), BOUND)

    assert isinstance(view, BenchmarkState) and view.status == "running"
    assert result_paths(settings.benchmarks_dir, run.id).cancel.exists()


async def test_a_result_file_is_found_once_written(settings: Settings) -> None:
    run = state(run_id(), owner="alice")
    write(settings, run)
    alice = Caller(owner="alice")

    with pytest.raises(NotFoundError) as caught:
        await service.result_file(settings, run.id, "results.csv", alice)
    assert (
        caught.value.detail == f"No results.csv for '{run.id}' (yet): the run has not written it."
    )
    with pytest.raises(NotFoundError, match=r"^No summary.json for"):
        await service.result_file(settings, run.id, "summary.json", alice)

    paths = result_paths(settings.benchmarks_dir, run.id)
    paths.csv.write_text("a,b\n")
    finish(settings, run)
    assert await service.result_file(settings, run.id, "results.csv", alice) == paths.csv
    assert await service.result_file(settings, run.id, "summary.json", alice) == paths.json
    with pytest.raises(NotFoundError, match="^No benchmark with id"):
        await service.result_file(settings, run.id, "results.csv", Caller(owner="bob"))


async def test_a_listing_counts_what_it_lists(settings: Settings) -> None:
    for tail in ("0000000a", "0000000b", "0000000c"):
        write(settings, state(run_id(tail=tail)))

    listing = await service.list_benchmarks(settings, 2, EVERYONE)

    assert listing.count == 2 == len(listing.benchmarks)


async def events(settings: Settings, benchmark_id: str) -> AsyncIterator[tuple[str, object]]:
    async for kind, view in service.benchmark_events(settings, benchmark_id, EVERYONE):
        yield kind, view


async def all_events(settings: Settings, benchmark_id: str) -> list[tuple[str, object]]:
    """Every event of a run that ends: a run followed past the bound fails the test."""
    async with asyncio.timeout(BOUND):
        return [item async for item in events(settings, benchmark_id)]


async def test_the_events_of_a_finished_run_are_its_summary_alone(settings: Settings) -> None:
    run = state(run_id())
    write(settings, run)
    summary = finish(settings, run)

    seen = await all_events(settings, run.id)

    assert seen == [("summary", summary)]


async def test_the_events_of_a_lost_run_are_its_interrupted_state(settings: Settings) -> None:
    run = state(run_id(), updated_at=datetime.now(UTC) - timedelta(minutes=5))
    write(settings, run)

    [(kind, view)] = await all_events(settings, run.id)

    assert kind == "summary"
    assert isinstance(view, BenchmarkState) and view.status == "interrupted"


async def follow_events(
    settings: Settings, benchmark_id: str, seen: list[tuple[str, int | None]]
) -> None:
    """Each event of the run as (kind, requests done so far, or None for a keep-alive)."""
    async for kind, view in events(settings, benchmark_id):
        done = view.progress.done if isinstance(view, BenchmarkState | BenchmarkSummary) else None
        seen.append((kind, done))


async def test_the_events_follow_progress_then_end_with_the_summary(
    settings: Settings, quick: None
) -> None:
    run = state(run_id(), done=0, total=4)
    write(settings, run)
    seen: list[tuple[str, int | None]] = []

    following = asyncio.create_task(follow_events(settings, run.id, seen))
    async with asyncio.timeout(BOUND):
        while not seen:
            await asyncio.sleep(0.02)
        write(settings, state(run_id(), done=2, total=4))
        while len(seen) < 2:
            await asyncio.sleep(0.02)
        finish(settings, state(run_id(), done=4, total=4, status="completed"))
        await following

    assert seen == [("progress", 0), ("progress", 2), ("summary", 4)]


async def test_a_quiet_run_gets_keepalives(
    settings: Settings, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "EVENTS_KEEPALIVE_SECONDS", 0.05)
    run = state(run_id(), done=1, total=4)
    write(settings, run)
    kinds: list[str] = []

    async with asyncio.timeout(BOUND):
        async for kind, _ in events(settings, run.id):
            kinds.append(kind)
            if kinds.count("keepalive") == 2:
                write(settings, run)  # no new request finished: still no progress
            if len(kinds) == 4:
                break

    assert kinds == ["progress", "keepalive", "keepalive", "keepalive"]


# --- sweeps -----------------------------------------------------------------------------------


async def test_a_concurrency_sweep_is_checked_at_its_highest_step(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_concurrency=8)

    await validate(settings, params(sweep="concurrency", sweep_values=[1, 8]), prompts(1))
    with pytest.raises(LimitExceededError, match="^concurrency=9 exceeds MAX_CONCURRENCY=8.$"):
        await validate(settings, params(sweep="concurrency", sweep_values=[1, 9]), prompts(1))


async def test_too_many_requests_of_a_sweep_count_its_steps(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_benchmark_requests=23)
    parameters = params(runs=2, sweep="concurrency", sweep_values=[1, 2, 4])

    with pytest.raises(LimitExceededError) as caught:
        await validate(settings, parameters, prompts(4))

    assert caught.value.detail == (
        "4 prompts x 2 runs x 1 series (model x provider) x 3 sweep steps = 24 requests exceeds "
        "MAX_BENCHMARK_REQUESTS=23."
    )
    await validate(make_settings(tmp_path, max_benchmark_requests=24), parameters, prompts(4))


async def test_a_swept_duration_past_max_run_seconds_names_its_steps(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_run_seconds=10)

    with pytest.raises(LimitExceededError) as caught:
        await validate(
            settings, params(duration=4, sweep="concurrency", sweep_values=[1, 2, 4]), prompts(1)
        )

    assert caught.value.detail == "duration=4 x 3 sweep steps exceeds MAX_RUN_SECONDS=10."


async def test_a_rate_sweep_past_max_run_seconds_says_when_it_ends(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_run_seconds=10)

    with pytest.raises(LimitExceededError) as caught:
        await validate(settings, params(runs=8, sweep="rate", sweep_values=[1, 2]), prompts(1))

    assert caught.value.detail.startswith("sweep=rate sends its last request after ")
    assert caught.value.detail.endswith(" s, which exceeds MAX_RUN_SECONDS=10.")


# --- starting runs ----------------------------------------------------------------------------


class Catalog:
    """Knows every model (its price unknown) and pins the providers asked for; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def require(self, model_ids: list[str]) -> dict[str, object]:
        self.calls += 1
        return dict.fromkeys(model_ids)

    async def require_providers(
        self, model_ids: list[str], providers: list[str]
    ) -> dict[str, tuple[str, ...]]:
        self.calls += 1
        return {model_id: ("alpha", "beta") for model_id in model_ids} if providers else {}


class Launcher:
    """Starts nothing: keeps the plan it was given, and says which runs it hosts."""

    def __init__(self, live: dict[str, int] | None = None) -> None:
        self.plans: list[BenchmarkPlan] = []
        self._live = live or {}

    def live(self) -> dict[str, int]:
        return dict(self._live)

    async def start(self, plan: BenchmarkPlan) -> BenchmarkState:
        self.plans.append(plan)
        return state(run_id())


async def start(
    settings: Settings, launcher: Launcher, catalog: Catalog, parameters: BenchmarkParameters
) -> BenchmarkState:
    return await service.start_benchmark(
        settings,
        launcher,  # type: ignore[arg-type]
        catalog,  # type: ignore[arg-type]
        prompts(2),
        parameters,
        Caller(owner="alice"),
    )


async def test_a_run_starts_with_its_owner_prices_and_providers(settings: Settings) -> None:
    launcher, catalog = Launcher(), Catalog()

    await start(settings, launcher, catalog, params(providers=["all"], runs=1))

    [plan] = launcher.plans
    assert plan.owner == "alice"
    assert plan.prices == {MODEL: None}
    assert plan.providers == {MODEL: ("alpha", "beta")}
    assert plan.total_requests == 2 * 2  # two prompts x two providers, the providers expanded


async def test_no_room_is_refused_before_the_catalog_is_asked(settings: Settings) -> None:
    from src.services.base.exceptions import CapacityError

    settings = settings.model_copy(update={"max_running_benchmarks": 1})
    launcher, catalog = Launcher(live={run_id(): 1}), Catalog()

    with pytest.raises(CapacityError, match="^1 benchmarks are running"):
        await start(settings, launcher, catalog, params())

    assert catalog.calls == 0 and launcher.plans == []


async def test_a_run_that_could_never_start_is_refused_as_such_even_without_room(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"max_running_benchmarks": 1, "max_runs": 2})
    launcher = Launcher(live={run_id(): 1})

    with pytest.raises(LimitExceededError, match="^runs=3 exceeds MAX_RUNS=2.$"):
        await start(settings, launcher, Catalog(), params(runs=3))


async def test_too_many_requests_once_providers_are_expanded_is_refused(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_benchmark_requests": 3})
    launcher = Launcher()

    with pytest.raises(LimitExceededError, match="= 4 requests exceeds MAX_BENCHMARK_REQUESTS=3"):
        await start(settings, launcher, Catalog(), params(providers=["all"], runs=1))
    assert launcher.plans == []


async def test_a_started_benchmark_is_validated_and_priced(settings: Settings) -> None:
    launcher, catalog = Launcher(), Catalog()

    await service.start_benchmark(
        settings,
        launcher,  # type: ignore[arg-type]
        catalog,  # type: ignore[arg-type]
        prompts(3),
        params(models=[MODEL, MODEL], runs=1),
        Caller(owner="alice"),
    )

    [plan] = launcher.plans
    assert plan.prompts == ["prompt 0", "prompt 1", "prompt 2"]
    assert plan.parameters.models == [MODEL]
    assert plan.prices == {MODEL: None}


async def test_a_started_benchmark_reads_its_dataset(settings: Settings) -> None:
    launcher = Launcher()

    await service.start_benchmark(
        settings,
        launcher,  # type: ignore[arg-type]
        Catalog(),  # type: ignore[arg-type]
        None,
        params(runs=1),
        Caller(owner="alice"),
        dataset(conversation("a"), conversation("b")),
    )

    [plan] = launcher.plans

    assert plan.conversations is not None and len(plan.conversations) == 2


async def test_two_sweep_steps_are_named_in_the_refusal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_benchmark_requests=3)

    with pytest.raises(LimitExceededError, match=r"x 2 sweep steps = 4 requests exceeds"):
        await validate(
            settings, params(runs=1, sweep="concurrency", sweep_values=[1, 2]), prompts(2)
        )


async def test_a_listing_is_the_callers(settings: Settings) -> None:
    write(settings, state(run_id(tail="0000000a"), owner="alice"))
    write(settings, state(run_id(tail="0000000b"), owner="bob"))

    listing = await service.list_benchmarks(settings, 10, Caller(owner="alice"))

    assert [item.id for item in listing.benchmarks] == [run_id(tail="0000000a")]


async def test_a_run_ended_without_a_summary_is_one_final_event(settings: Settings) -> None:
    run = state(run_id(), status="cancelled")
    write(settings, run)

    seen = await all_events(settings, run.id)

    assert seen == [("summary", run)]


async def test_progress_is_sent_at_most_once_a_progress_interval_and_no_keepalive_sooner(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "EVENTS_POLL_SECONDS", 0.02)
    monkeypatch.setattr(service, "PROGRESS_SECONDS", 100.0)
    run = state(run_id(), done=0, total=4)
    write(settings, run)
    kinds: list[tuple[str, int | None]] = []

    following = asyncio.create_task(follow_events(settings, run.id, kinds))
    async with asyncio.timeout(BOUND):
        while not kinds:
            await asyncio.sleep(0.02)
        write(settings, state(run_id(), done=2, total=4))
        await asyncio.sleep(0.3)  # many polls see it: none may send it within the interval
        finish(settings, state(run_id(), done=4, total=4, status="completed"))
        await following

    assert kinds == [("progress", 0), ("summary", 4)]


async def test_a_run_started_from_a_dataset_runs_its_conversations(settings: Settings) -> None:
    launcher = Launcher()

    await service.start_benchmark(
        settings,
        launcher,  # type: ignore[arg-type]
        Catalog(),  # type: ignore[arg-type]
        None,
        params(runs=1),
        EVERYONE,
        dataset(conversation("a"), conversation("b"), conversation("c")),
    )

    [plan] = launcher.plans
    assert plan.conversations is not None and len(plan.conversations) == 3


async def test_two_runs_followed_at_once_each_get_their_own_events(
    settings: Settings, quick: None
) -> None:
    first, second = state(run_id(tail="0000000a")), state(run_id(tail="0000000b"), done=1)
    write(settings, first)
    write(settings, second)
    seen: dict[str, list[str]] = {first.id: [], second.id: []}

    async def follow(benchmark_id: str) -> None:
        async for _, view in events(settings, benchmark_id):
            assert isinstance(view, BenchmarkState | BenchmarkSummary)
            seen[benchmark_id].append(view.id)

    async with asyncio.timeout(BOUND):
        following = [asyncio.create_task(follow(run.id)) for run in (first, second)]
        while not all(seen.values()):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        finish(settings, first)
        finish(settings, second)
        await asyncio.gather(*following)

    assert set(seen[first.id]) == {first.id}
    assert set(seen[second.id]) == {second.id}
