"""Benchmark routes: run a benchmark from an uploaded prompt file, list and show saved runs."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse

from src.api.body_limit import UploadLimitRoute
from src.api.deps import CatalogDep, OpenRouterDep, SettingsDep, ShutdownGuardDep
from src.api.disconnect import cancel_on_disconnect
from src.schemas.benchmarks import BenchmarkList, BenchmarkSummary
from src.schemas.prompts import ErrorResponse
from src.services.benchmarker.report import render_report
from src.services.benchmarker.service import (
    BenchmarkOptions,
    benchmark_upload,
    get_benchmark,
    list_benchmarks,
)

T = TypeVar("T")

HTML_OR_JSON: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/html": {}}, "description": "JSON, or HTML with ?visualize=true"}
}


router = APIRouter(tags=["benchmarks"], route_class=UploadLimitRoute)


@router.post(
    "/benchmark",
    response_model=BenchmarkSummary,
    responses=HTML_OR_JSON,
)
async def create_benchmark(
    request: Request,
    settings: SettingsDep,
    client: OpenRouterDep,
    catalog: CatalogDep,
    shutdown_guard: ShutdownGuardDep,
    prompt_file: Annotated[
        UploadFile, File(description="UTF-8 text, one prompt per line; blank lines are skipped")
    ],
    model: Annotated[
        list[str], Form(description="Model id; repeat the field to compare several models")
    ],
    runs: Annotated[int, Form(ge=1, description="Requests per prompt and model")] = 5,
    concurrency: Annotated[int, Form(ge=1, description="Requests in flight at most")] = 1,
    max_tokens: Annotated[int, Form(ge=1, le=1_000_000)] = 512,
    stream: Annotated[bool, Form(description="Stream every request to measure ttft")] = True,
    temperature: Annotated[float | None, Form(ge=0, le=2)] = None,
    top_p: Annotated[float | None, Form(ge=0, le=1)] = None,
    visualize: Annotated[bool, Query(description="Answer with an HTML report")] = False,
) -> BenchmarkSummary | HTMLResponse:
    """Run every prompt of the file `runs` times on each model and report latency statistics."""
    options = BenchmarkOptions(
        models=model,
        runs=runs,
        concurrency=concurrency,
        max_tokens=max_tokens,
        stream=stream,
        temperature=temperature,
        top_p=top_p,
    )
    # Nobody would read the answer, and every further request costs money; the cancelled run
    # still saves what it measured.
    summary = await cancel_on_disconnect(
        request,
        # Tracked so that a stopping server waits for the cancelled run to save its summary.
        shutdown_guard.run(benchmark_upload(settings, client, catalog, prompt_file, options)),
        "The client disconnected; the benchmark was stopped.",
    )
    return HTMLResponse(render_report(summary)) if visualize else summary


@router.get("/benchmarks")
async def get_benchmarks(
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Newest runs to return")] = 100,
) -> BenchmarkList:
    """List saved benchmark runs, newest first."""
    return await list_benchmarks(settings, limit)


BenchmarkId = Annotated[str, Path(description="The id of a saved benchmark")]
HTML_REPORT: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "HTML page"},
    404: {"model": ErrorResponse},
}


@router.get("/benchmarks/{benchmark_id}", responses={404: {"model": ErrorResponse}})
async def get_benchmark_summary(
    settings: SettingsDep, benchmark_id: BenchmarkId
) -> BenchmarkSummary:
    """Return the saved JSON summary of one benchmark run."""
    return await get_benchmark(settings, benchmark_id)


# The route keeps the JSON response class: with HTMLResponse, FastAPI would document the JSON
# error answers as text/html too.
@router.get("/benchmarks/{benchmark_id}/report", responses=HTML_REPORT)
async def get_benchmark_report(settings: SettingsDep, benchmark_id: BenchmarkId) -> HTMLResponse:
    """Return the HTML report of one saved benchmark run."""
    return HTMLResponse(render_report(await get_benchmark(settings, benchmark_id)))
