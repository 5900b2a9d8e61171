"""Benchmark routes: run a benchmark from an uploaded prompt file, list and show saved runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse

from src.api.body_limit import UploadLimitRoute
from src.api.deps import (
    CatalogDep,
    OpenRouterDep,
    SettingsDep,
    ShutdownGuardDep,
    UpstreamTargetDep,
)
from src.api.disconnect import cancel_on_disconnect
from src.schemas.benchmarks import BenchmarkList, BenchmarkParameters, BenchmarkSummary
from src.schemas.prompts import ErrorResponse
from src.services.benchmarker.report import render_report
from src.services.benchmarker.service import (
    benchmark_upload,
    get_benchmark,
    list_benchmarks,
)

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
    target: UpstreamTargetDep,
    catalog: CatalogDep,
    shutdown_guard: ShutdownGuardDep,
    prompt_file: Annotated[
        UploadFile, File(description="UTF-8 text, one prompt per line; blank lines are skipped")
    ],
    parameters: Annotated[BenchmarkParameters, Form()],
    visualize: Annotated[bool, Query(description="Answer with an HTML report")] = False,
) -> BenchmarkSummary | HTMLResponse:
    """Run every prompt of the file `runs` times on each model and report latency statistics."""
    # Nobody would read the answer, and every further request costs money; the cancelled run
    # still saves what it measured.
    summary = await cancel_on_disconnect(
        request,
        # Tracked so that a stopping server waits for the cancelled run to save its summary.
        shutdown_guard.run(
            benchmark_upload(settings, client, target, catalog, prompt_file, parameters)
        ),
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
