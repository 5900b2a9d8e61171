"""The benchmark use cases: validate everything first, then start, follow, cancel and list runs.

Each takes the caller: a run is recorded with its owner, and one the caller may not see is
answered as if it did not exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator
from functools import partial
from pathlib import Path
from typing import Literal, TypeGuard

from src import metrics
from src.config import Settings
from src.schemas.benchmarks import (
    FINISHED,
    BenchmarkList,
    BenchmarkParameters,
    BenchmarkState,
    BenchmarkSummary,
    RequestRecord,
)
from src.services.base.exceptions import (
    CapacityError,
    ConflictError,
    InsufficientStorageError,
    InvalidInputError,
    JobsBackendUnavailableError,
    LimitExceededError,
    NotFoundError,
)
from src.services.base.timing import now
from src.services.benchmarker.load.plan import BenchmarkPlan
from src.services.benchmarker.load.sources import (
    DEFAULT_SYNTHETIC_PROMPTS,
    Conversation,
    is_synthetic,
    output_lengths,
    parse_dataset,
    synthetic_conversations,
)
from src.services.benchmarker.results.file_utils import (
    AsyncReadable,
    parse_prompts,
    read_upload,
    result_paths,
)
from src.services.benchmarker.runs.backend import run_store
from src.services.benchmarker.runs.feed import follow
from src.services.benchmarker.runs.launcher import BenchmarkLauncher
from src.services.benchmarker.runs.owners import Caller
from src.services.benchmarker.runs.redis_runners import cancel_unclaimed, run_changes
from src.services.benchmarker.runs.redis_store import RedisRunStore
from src.services.benchmarker.runs.store import RunCaps
from src.services.generation.service import check_max_tokens, ensure_model_reachable
from src.services.openrouter.catalog import ALL_PROVIDERS, ModelCatalog

logger = logging.getLogger(__name__)

# How often an events stream looks at the run's state record (rewritten as requests finish),
# and how often at most it sends progress.
EVENTS_POLL_SECONDS = 0.25
PROGRESS_SECONDS = 1.0
# A comment line now and then keeps proxies from closing a quiet stream.
EVENTS_KEEPALIVE_SECONDS = 15.0
# DELETE waits this long for the run to save its summary before answering without it.
CANCEL_WAIT_SECONDS = 10.0
# A follower whose run store (Redis) cannot be reached tries again this often.
OUTAGE_RETRY_SECONDS = 0.5

RunView = BenchmarkSummary | BenchmarkState
Event = tuple[Literal["progress", "summary", "keepalive"], RunView | None]


async def validate_benchmark(
    settings: Settings,
    upload: AsyncReadable | None,
    parameters: BenchmarkParameters,
    dataset: AsyncReadable | None = None,
) -> BenchmarkPlan:
    """The checks that need nothing but the request and the settings: a request they refuse
    could never be admitted, whatever else is running."""
    # Duplicates dropped, first occurrence and order kept; `all` already names every provider.
    providers = list(dict.fromkeys(parameters.providers))
    if ALL_PROVIDERS in providers:
        providers = [ALL_PROVIDERS]
    parameters = parameters.model_copy(
        update={"models": list(dict.fromkeys(parameters.models)), "providers": providers}
    )
    check_limit("runs", parameters.runs, "MAX_RUNS", settings.max_runs)
    check_concurrency(settings, parameters.peak_concurrency)
    if parameters.output_tokens is None:
        check_max_tokens(settings, parameters.max_tokens)
    else:  # it replaces max_tokens in every request
        check_max_tokens(settings, parameters.output_tokens, "output_tokens")
    prompts, conversations = await _read_source(settings, parameters, upload, dataset)
    # With `all`, how many providers each model has is known once their lists are fetched.
    pinned = () if providers == [ALL_PROVIDERS] else tuple(providers)
    plan = BenchmarkPlan(
        parameters,
        prompts,
        providers=dict.fromkeys(parameters.models, pinned) if pinned else {},
        request_cap=settings.max_benchmark_requests,
        max_seconds=settings.max_run_seconds,
        conversations=conversations,
    )
    _check_drawn_lengths(settings, plan)
    check_plan_size(plan, settings)
    for model in parameters.models:
        # No upstream call: the clearer message for a real id while running on the emulator.
        ensure_model_reachable(settings, model)
    return plan


def _check_drawn_lengths(settings: Settings, plan: BenchmarkPlan) -> None:
    """A spread of output_tokens may draw a max_tokens past MAX_TOKENS_LIMIT: refused up front."""
    if not plan.parameters.output_tokens_stdev:
        return
    drawn = plan.conversations_for(plan.parameters.models[0])
    longest = max((c.max_tokens or 0 for c in drawn), default=0)
    check_max_tokens(settings, longest, "output_tokens (a draw with output_tokens_stdev)")


async def _read_source(
    settings: Settings,
    parameters: BenchmarkParameters,
    upload: AsyncReadable | None,
    dataset: AsyncReadable | None,
) -> tuple[list[str], list[Conversation] | None]:
    """Exactly one source of prompts: the prompt labels, and a dataset's conversations."""
    synthetic = is_synthetic(parameters)
    sources = [
        ("prompt_file", upload is not None),
        ("dataset_file", dataset is not None),
        ("prompt_tokens", synthetic),
    ]
    given = [name for name, there in sources if there]
    if len(given) != 1:
        shown = " and ".join(given) if given else "none"
        raise InvalidInputError(
            "Give exactly one prompt source: prompt_file, dataset_file, or prompt_tokens "
            f"(synthetic prompts); got {shown}."
        )
    if parameters.prompts is not None and not synthetic:
        raise InvalidInputError("prompts (a count of synthetic prompts) needs prompt_tokens.")
    if parameters.turns > 1 and dataset is None:
        raise InvalidInputError("turns needs a dataset_file: only its conversations have turns.")
    if synthetic:
        count = parameters.prompts or DEFAULT_SYNTHETIC_PROMPTS
        check_limit("prompts", count, "MAX_PROMPTS", settings.max_prompts)
        return [c.label for c in synthetic_conversations(parameters)], None
    if dataset is not None:
        data = await read_upload(dataset, settings.max_upload_bytes, "dataset_file")
        conversations = parse_dataset(data)
        check_limit(
            "lines in dataset_file", len(conversations), "MAX_PROMPTS", settings.max_prompts
        )
        for conversation in conversations:
            if conversation.max_tokens is not None:
                check_max_tokens(settings, conversation.max_tokens)
        if parameters.output_tokens is not None:
            lengths = output_lengths(parameters, len(conversations))
            conversations = [
                c if c.max_tokens is not None else c.model_copy(update={"max_tokens": length})
                for c, length in zip(conversations, lengths, strict=True)
            ]
        return [c.label for c in conversations], conversations
    assert upload is not None
    prompts = parse_prompts(await read_upload(upload, settings.max_upload_bytes))
    check_limit("prompts in prompt_file", len(prompts), "MAX_PROMPTS", settings.max_prompts)
    return prompts, None


def check_plan_size(plan: BenchmarkPlan, settings: Settings) -> None:
    total = plan.total_requests
    if total is not None and total > settings.max_benchmark_requests:
        parameters = plan.parameters
        series = len(plan.series())
        what = "requests per run and series" if parameters.turns > 1 else "prompts"
        per_series = total // parameters.sweep_steps // parameters.runs // series
        raise LimitExceededError(
            f"{per_series} {what} x {parameters.runs} runs x {series} series (model x provider) "
            f"{_times_steps(parameters.sweep_steps)}= {total} requests exceeds "
            f"MAX_BENCHMARK_REQUESTS={settings.max_benchmark_requests}."
        )
    check_schedule(plan, settings.max_run_seconds)


async def with_prices(
    plan: BenchmarkPlan, catalog: ModelCatalog, settings: Settings
) -> BenchmarkPlan:
    """Every model known to the catalog, with its prices, and every provider asked for known
    to serve it (the catalog may ask the upstream)."""
    parameters = plan.parameters
    prices = await catalog.require(parameters.models)
    providers = await catalog.require_providers(parameters.models, parameters.providers)
    plan = dataclasses.replace(plan, prices=prices, providers=providers)
    check_plan_size(plan, settings)
    return plan


def _times_steps(steps: int) -> str:
    return f"x {steps} sweep steps " if steps > 1 else ""


def check_schedule(plan: BenchmarkPlan, max_run_seconds: float) -> None:
    """A run whose schedule alone outlasts MAX_RUN_SECONDS would only be stopped part-way."""
    seconds = plan.schedule_seconds()
    if seconds is None or seconds <= max_run_seconds:
        return
    parameters = plan.parameters
    if parameters.duration is not None:
        asked = f"duration={parameters.duration:g} " + _times_steps(parameters.sweep_steps)
        asked = asked.rstrip()
    elif parameters.sweep is not None:
        asked = f"sweep={parameters.sweep} sends its last request after {seconds:.6g} s, which"
    else:
        asked = (
            f"rate={parameters.rate:g} ({parameters.arrival}) x {plan.total_requests} requests "
            f"sends its last request after {seconds:.6g} s"
        )
    raise LimitExceededError(f"{asked} exceeds MAX_RUN_SECONDS={max_run_seconds:g}.")


def max_run_concurrency(settings: Settings) -> int:
    """The most requests one run may keep in flight: past MAX_INFLIGHT_TOTAL it could never be
    admitted, however long it waited."""
    return min(settings.max_concurrency, settings.max_inflight_total)


def check_concurrency(settings: Settings, concurrency: int) -> None:
    limit = max_run_concurrency(settings)
    if concurrency <= limit:
        return
    if limit == settings.max_concurrency:
        check_limit("concurrency", concurrency, "MAX_CONCURRENCY", limit)
    raise LimitExceededError(
        f"concurrency={concurrency} exceeds {limit}, the most one run may hold in flight "
        f"(MAX_CONCURRENCY={settings.max_concurrency}, MAX_INFLIGHT_TOTAL={limit})."
    )


def check_limit(name: str, value: int, setting: str, limit: int) -> None:
    if value > limit:
        raise LimitExceededError(f"{name}={value} exceeds {setting}={limit}.")


async def start_benchmark(
    settings: Settings,
    launcher: BenchmarkLauncher,
    catalog: ModelCatalog,
    upload: AsyncReadable | None,
    parameters: BenchmarkParameters,
    caller: Caller,
    dataset: AsyncReadable | None = None,
) -> BenchmarkState:
    """Validate, admit and start a run, the caller's; it goes on in the background."""
    # A request that could never run is refused as such (422), never as "no room now" (429).
    plan = await validate_benchmark(settings, upload, parameters, dataset)
    try:
        # Refused when there is no room before the model list is fetched for it.
        await asyncio.to_thread(
            run_store(settings).check_capacity,
            parameters.peak_concurrency,
            RunCaps.of(settings),
            launcher.live(),
        )
        plan = await with_prices(plan, catalog, settings)
        plan = dataclasses.replace(plan, owner=caller.owner)
        return await launcher.start(plan)  # the caps again, atomically with recording the run
    except (CapacityError, InsufficientStorageError) as refusal:
        metrics.BENCHMARKS_REFUSED.labels(type(refusal).__name__).inc()
        raise


async def get_benchmark(settings: Settings, benchmark_id: str, caller: Caller) -> RunView:
    store = run_store(settings)

    def view() -> RunView:
        store.check_access(benchmark_id, caller)
        return store.current_view(benchmark_id)

    return await asyncio.to_thread(view)


async def _view_of_visible(settings: Settings, benchmark_id: str) -> RunView:
    """A run already found visible to the caller: its owner does not change."""
    return await asyncio.to_thread(run_store(settings).current_view, benchmark_id)


async def cancel_benchmark(settings: Settings, benchmark_id: str, caller: Caller) -> RunView:
    """Ask the run to stop, wherever it runs, and give its summary once saved (or, if that
    takes long, its state)."""
    view = await get_benchmark(settings, benchmark_id, caller)
    if view.status in FINISHED:
        raise ConflictError(f"Benchmark '{benchmark_id}' has already ended ({view.status}).")
    await asyncio.to_thread(run_store(settings).request_cancel, benchmark_id)
    if settings.jobs_backend == "redis":  # no runner may have it yet
        await asyncio.to_thread(cancel_unclaimed, settings, benchmark_id)
    deadline = now() + CANCEL_WAIT_SECONDS
    while now() < deadline:
        view = await _view_of_visible(settings, benchmark_id)
        if view.status in FINISHED:
            return view
        await asyncio.sleep(EVENTS_POLL_SECONDS)
    return view


@dataclasses.dataclass(frozen=True)
class ResultFile:
    """A result file held in the run store rather than on this server's disk."""

    name: str
    data: bytes


async def result_file(
    settings: Settings,
    benchmark_id: str,
    name: Literal["results.csv", "summary.json"],
    caller: Caller,
) -> Path | ResultFile:
    """A run's results or summary file, once the run has written it."""

    store = run_store(settings)
    if isinstance(store, RedisRunStore):
        return await asyncio.to_thread(_result_in_redis, store, benchmark_id, name, caller)

    def find() -> Path:
        store.check_access(benchmark_id, caller)
        paths = result_paths(settings.benchmarks_dir, benchmark_id)
        path = paths.csv if name == "results.csv" else paths.json
        if not path.is_file():
            raise NotFoundError(
                f"No {name} for '{benchmark_id}' (yet): the run has not written it."
            )
        return path

    return await asyncio.to_thread(find)


def _result_in_redis(
    store: RedisRunStore,
    benchmark_id: str,
    name: Literal["results.csv", "summary.json"],
    caller: Caller,
) -> ResultFile:
    """The same files, served from the run store: every replica has every run's."""
    store.check_access(benchmark_id, caller)
    paths = result_paths(Path(), benchmark_id)
    if name == "results.csv":
        if store.read_state(benchmark_id) is None:
            raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")
        return ResultFile(paths.csv.name, store.rows_csv(benchmark_id))
    data = store.summary_json(benchmark_id)
    if data is None:
        raise NotFoundError(f"No {name} for '{benchmark_id}' (yet): the run has not written it.")
    return ResultFile(paths.json.name, data)


async def list_benchmarks(settings: Settings, limit: int, caller: Caller) -> BenchmarkList:
    items = await asyncio.to_thread(run_store(settings).list_runs, limit, caller)
    return BenchmarkList(count=len(items), benchmarks=items)


async def benchmark_events(
    settings: Settings, benchmark_id: str, caller: Caller
) -> AsyncGenerator[Event]:
    """The run's current state at once, then a `progress` event when requests have finished
    (at most once a second), then one `summary` event; keep-alives in between.

    Each look goes through the store: a finished run's answer is its summary, and a run whose
    runner died shows as interrupted. Every follower of a run in this process shares one
    reader of it (feed.py).
    """
    view = await get_benchmark(settings, benchmark_id, caller)
    if not _running(view):
        yield "summary", view
        return
    yield "progress", view
    shown, shown_at = view.progress.done, now()
    sent_at = shown_at
    key = (settings.benchmarks_dir, benchmark_id)
    read = partial(_view_of_visible, settings, benchmark_id)
    ticks = None
    if settings.jobs_backend == "redis":  # the runner announces each change: no polling
        ticks = partial(run_changes, settings, benchmark_id)
        read = partial(_view_through_outages, settings, benchmark_id)
    async with follow(key, read, _ended, EVENTS_POLL_SECONDS, ticks) as feed:
        seen = feed.version  # a look older than this follower's own is not news
        while True:
            seen, view = await feed.next(seen)
            if not _running(view):
                yield "summary", view
                return
            moment = now()
            if view.progress.done != shown and moment - shown_at >= PROGRESS_SECONDS:
                yield "progress", view
                shown, shown_at, sent_at = view.progress.done, moment, moment
            elif moment - sent_at > EVENTS_KEEPALIVE_SECONDS:
                yield "keepalive", None
                sent_at = moment


async def _view_through_outages(settings: Settings, benchmark_id: str) -> RunView:
    """A follower outlives a Redis that went away: it reads again once Redis is back."""
    while True:
        try:
            return await _view_of_visible(settings, benchmark_id)
        except JobsBackendUnavailableError:
            await asyncio.sleep(OUTAGE_RETRY_SECONDS)


def _ended(view: RunView) -> bool:
    return not _running(view)


def _running(view: RunView) -> TypeGuard[BenchmarkState]:
    return isinstance(view, BenchmarkState) and view.status not in FINISHED


async def run_records(settings: Settings, view: RunView) -> list[RequestRecord]:
    """The rows a run the caller may see has written so far, in the order they finished, from
    the run store: under Redis every replica has every run's, whichever runner sent them."""
    # The rows say which prompt by its index; the prompts' text is not needed here.
    placeholders = [""] * view.parameters.prompts
    return await asyncio.to_thread(run_store(settings).read_rows, view.id, placeholders)
