"""The benchmark use cases: validate everything first, then start, follow, cancel and list runs.

Each takes the caller: a run is recorded with its owner, and one the caller may not see is
answered as if it did not exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Literal, TypeGuard

from src.config import Settings
from src.schemas.benchmarks import (
    FINISHED,
    BenchmarkList,
    BenchmarkParameters,
    BenchmarkState,
    BenchmarkSummary,
)
from src.services.base.exceptions import ConflictError, LimitExceededError, NotFoundError
from src.services.base.timing import now
from src.services.benchmarker.load.plan import BenchmarkPlan
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
from src.services.benchmarker.runs.store import RunCaps
from src.services.generation.service import check_max_tokens, ensure_model_reachable
from src.services.openrouter.catalog import ModelCatalog

logger = logging.getLogger(__name__)

# How often an events stream looks at the run's state record (rewritten as requests finish),
# and how often at most it sends progress.
EVENTS_POLL_SECONDS = 0.25
PROGRESS_SECONDS = 1.0
# A comment line now and then keeps proxies from closing a quiet stream.
EVENTS_KEEPALIVE_SECONDS = 15.0
# DELETE waits this long for the run to save its summary before answering without it.
CANCEL_WAIT_SECONDS = 10.0

RunView = BenchmarkSummary | BenchmarkState
Event = tuple[Literal["progress", "summary", "keepalive"], RunView | None]


async def prepare_benchmark(
    settings: Settings,
    catalog: ModelCatalog,
    upload: AsyncReadable,
    parameters: BenchmarkParameters,
) -> BenchmarkPlan:
    """Every check that can fail runs here, before a single paid request is sent."""
    plan = await validate_benchmark(settings, upload, parameters)
    return await with_prices(plan, catalog)


async def validate_benchmark(
    settings: Settings, upload: AsyncReadable, parameters: BenchmarkParameters
) -> BenchmarkPlan:
    """The checks that need nothing but the request and the settings: a request they refuse
    could never be admitted, whatever else is running."""
    # Duplicates dropped, first occurrence and order kept.
    parameters = parameters.model_copy(update={"models": list(dict.fromkeys(parameters.models))})
    check_limit("runs", parameters.runs, "MAX_RUNS", settings.max_runs)
    check_limit(
        "concurrency", parameters.peak_concurrency, "MAX_CONCURRENCY", settings.max_concurrency
    )
    check_max_tokens(settings, parameters.max_tokens)
    prompts = parse_prompts(await read_upload(upload, settings.max_upload_bytes))
    check_limit("prompts in prompt_file", len(prompts), "MAX_PROMPTS", settings.max_prompts)
    plan = BenchmarkPlan(
        parameters,
        prompts,
        request_cap=settings.max_benchmark_requests,
        max_seconds=settings.max_run_seconds,
    )
    total = plan.total_requests
    if total is not None and total > settings.max_benchmark_requests:
        raise LimitExceededError(
            f"{len(prompts)} prompts x {parameters.runs} runs x {len(parameters.models)} models "
            f"{_times_steps(parameters.sweep_steps)}= {total} requests exceeds "
            f"MAX_BENCHMARK_REQUESTS={settings.max_benchmark_requests}."
        )
    check_schedule(plan, settings.max_run_seconds)
    for model in parameters.models:
        # No upstream call: the clearer message for a real id while running on the emulator.
        ensure_model_reachable(settings, model)
    return plan


async def with_prices(plan: BenchmarkPlan, catalog: ModelCatalog) -> BenchmarkPlan:
    """Every model known to the catalog, with its prices (the catalog may ask the upstream)."""
    prices = await catalog.require(plan.parameters.models)
    return dataclasses.replace(plan, prices=prices)


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


def check_limit(name: str, value: int, setting: str, limit: int) -> None:
    if value > limit:
        raise LimitExceededError(f"{name}={value} exceeds {setting}={limit}.")


async def start_benchmark(
    settings: Settings,
    launcher: BenchmarkLauncher,
    catalog: ModelCatalog,
    upload: AsyncReadable,
    parameters: BenchmarkParameters,
    caller: Caller,
) -> BenchmarkState:
    """Validate, admit and start a run, the caller's; it goes on in the background."""
    # A request that could never run is refused as such (422), never as "no room now" (429).
    plan = await validate_benchmark(settings, upload, parameters)
    # Refused when there is no room before the model list is fetched for it.
    await asyncio.to_thread(
        run_store(settings).check_capacity,
        parameters.peak_concurrency,
        RunCaps.of(settings),
        launcher.live(),
    )
    plan = await with_prices(plan, catalog)
    plan = dataclasses.replace(plan, owner=caller.owner)
    return await launcher.start(plan)  # the caps again, atomically with recording the run


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
    deadline = now() + CANCEL_WAIT_SECONDS
    while now() < deadline:
        view = await _view_of_visible(settings, benchmark_id)
        if view.status in FINISHED:
            return view
        await asyncio.sleep(EVENTS_POLL_SECONDS)
    return view


async def result_file(
    settings: Settings,
    benchmark_id: str,
    name: Literal["results.csv", "summary.json"],
    caller: Caller,
) -> Path:
    """A run's results or summary file, once the run has written it."""

    store = run_store(settings)

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


async def list_benchmarks(settings: Settings, limit: int, caller: Caller) -> BenchmarkList:
    items = await asyncio.to_thread(run_store(settings).list_runs, limit, caller)
    return BenchmarkList(count=len(items), benchmarks=items)


async def benchmark_events(
    settings: Settings, benchmark_id: str, caller: Caller
) -> AsyncIterator[Event]:
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
    async with follow(key, read, _ended, EVENTS_POLL_SECONDS) as feed:
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


def _ended(view: RunView) -> bool:
    return not _running(view)


def _running(view: RunView) -> TypeGuard[BenchmarkState]:
    return isinstance(view, BenchmarkState) and view.status not in FINISHED
