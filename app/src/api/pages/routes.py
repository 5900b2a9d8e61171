"""The home pages in the browser: the runs list (`/`), the form (`/new`), a run (`/runs/{id}`)
and a comparison (`/compare?id=..&id=..`), with their script and style under `/ui/`.

They read what the API reads, through the same services and the same caller: with inbound
keys, a page requested without one is the key prompt (render.locked_page), and the script
fetches it again with the key from the tab's session storage.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from src.api.pages.form import benchmark_form_fields, form_page_body
from src.api.pages.render import compare_page, home_page, locked_page, page, run_page
from src.api.plumbing.deps import CallerDep, CatalogDep, SettingsDep
from src.config import Settings
from src.services.base.exceptions import InvalidInputError, UpstreamError
from src.services.benchmarker.results.compare import compare_runs
from src.services.benchmarker.runs.owners import NOBODY, Caller
from src.services.benchmarker.runs.service import get_benchmark, list_benchmarks, run_records

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/ui"
# Pages a browser navigates to: with inbound keys they answer a keyless request themselves.
PAGE_PATHS = ("/", "/new", "/compare", "/runs/")
HOME_RUNS = 200
MAX_COMPARED = 6
# Scripts and styles from this service only; the script talks to this service only.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}

router = APIRouter(include_in_schema=False)
CompareIds = Annotated[
    list[str] | None,
    Query(alias="id", description="A run to compare; the earliest is the baseline"),
]


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers=PAGE_HEADERS)


def _locked(settings: Settings, caller: Caller) -> bool:
    return settings.inbound_keys_on and caller is NOBODY


@router.get("/")
async def home(settings: SettingsDep, caller: CallerDep) -> HTMLResponse:
    """The runs list, newest first."""
    if _locked(settings, caller):
        return _html(locked_page("Benchmark runs"))
    runs = await list_benchmarks(settings, HOME_RUNS, caller)
    return _html(home_page(runs.benchmarks))


@router.get("/new")
async def new_benchmark(
    request: Request, settings: SettingsDep, caller: CallerDep, catalog: CatalogDep
) -> HTMLResponse:
    """The form that starts a benchmark."""
    if _locked(settings, caller):
        return _html(locked_page("New benchmark"))
    fields = benchmark_form_fields(request.app.openapi())
    try:
        models = [model.id for model in await catalog.models()]
    except UpstreamError:  # the form works without suggestions
        models = []
    return _html(page("New benchmark", form_page_body(fields, models)))


@router.get("/runs/{benchmark_id}")
async def run(settings: SettingsDep, caller: CallerDep, benchmark_id: str) -> HTMLResponse:
    """One run: live while it runs, its report and charts once it has ended."""
    if _locked(settings, caller):
        return _html(locked_page(f"Benchmark {benchmark_id}"))
    view = await get_benchmark(settings, benchmark_id, caller)
    records = await run_records(settings, view)
    # Charts over thousands of rows: drawn off the event loop.
    return _html(await asyncio.to_thread(run_page, view, records))


@router.get("/compare")
async def compare(settings: SettingsDep, caller: CallerDep, ids: CompareIds = None) -> HTMLResponse:
    """Runs side by side, each against the earliest."""
    if _locked(settings, caller):
        return _html(locked_page("Comparison"))
    chosen = list(dict.fromkeys(ids or []))
    if len(chosen) > MAX_COMPARED:
        raise InvalidInputError(f"Compare at most {MAX_COMPARED} runs at once.")
    views = [await get_benchmark(settings, benchmark_id, caller) for benchmark_id in chosen]
    # The earliest run is the baseline: a change reads as what happened since.
    views.sort(key=lambda view: (view.started_at, view.id))
    records = [await run_records(settings, view) for view in views]
    # Thousands of resamples: off the event loop.
    comparisons = await asyncio.to_thread(compare_runs, records) if len(views) > 1 else []
    return _html(await asyncio.to_thread(compare_page, views, records, comparisons))
