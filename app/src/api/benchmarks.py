"""Benchmark routes: run a benchmark from an uploaded prompt file, list and show saved runs."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from src.api.deps import CatalogDep, OpenRouterDep, SettingsDep, ShutdownGuardDep
from src.api.disconnect import cancel_on_disconnect
from src.config import Settings
from src.schemas.benchmarks import BenchmarkList, BenchmarkSummary
from src.schemas.prompts import ErrorResponse
from src.services.base.exceptions import PayloadTooLargeError
from src.services.benchmarker.report import render_report
from src.services.benchmarker.service import (
    BenchmarkOptions,
    benchmark_upload,
    get_benchmark,
    list_benchmarks,
)

T = TypeVar("T")

# Room for the multipart framing and the small form fields around the prompt file.
FORM_OVERHEAD_BYTES = 64 * 1024

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 402, 403, 404, 413, 429, 502, 504)
}
HTML_OR_JSON: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/html": {}}, "description": "JSON, or HTML with ?visualize=true"}
}


class UploadLimitRoute(APIRoute):
    """Refuses an oversized body before FastAPI parses (and spools) the multipart form.

    The limit comes from the settings of the running app, which a static `max_body_size`
    cannot express.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited_handler(request: Request) -> Response:
            # Dependencies are not solved yet at this point: read the lifespan state directly.
            max_upload = cast(Settings, request.state.settings).max_upload_bytes
            limit = max_upload + FORM_OVERHEAD_BYTES
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(int(declared), max_upload)
            bounded = Request(request.scope, _bounded_receive(request.receive, limit, max_upload))
            try:
                return await handler(bounded)
            except HTTPException as exc:
                # FastAPI reports any failure while reading the form as a 400; ours is a 413.
                if isinstance(exc.__cause__, PayloadTooLargeError):
                    raise exc.__cause__ from None
                raise

        return limited_handler


def _too_large(size: int | None, max_upload: int) -> PayloadTooLargeError:
    size_text = f" ({size} bytes)" if size is not None else ""
    return PayloadTooLargeError(
        f"The request body{size_text} is too large: MAX_UPLOAD_BYTES={max_upload} bytes "
        "for the prompt file."
    )


def _bounded_receive(receive: Receive, limit: int, max_upload: int) -> Receive:
    """Counts body bytes as they arrive: a chunked upload has no Content-Length to check."""
    received = 0

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(None, max_upload)
        return message

    return bounded


router = APIRouter(tags=["benchmarks"], route_class=UploadLimitRoute)


@router.post(
    "/benchmark",
    response_model=BenchmarkSummary,
    responses={**ERROR_RESPONSES, **HTML_OR_JSON},
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
