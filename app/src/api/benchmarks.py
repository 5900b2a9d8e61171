"""Benchmark routes: run a benchmark from an uploaded prompt file (waiting for it, or in the
background), follow it, cancel it, list runs, and download their files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Header, Path, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from src.api.plumbing.deps import CallerDep, CatalogDep, LauncherDep, SettingsDep
from src.api.plumbing.disconnect import cancel_on_disconnect
from src.api.plumbing.sse import sse_event, sse_response
from src.schemas.benchmarks import (
    FINISHED,
    BenchmarkAccepted,
    BenchmarkList,
    BenchmarkParameters,
    BenchmarkState,
    BenchmarkSummary,
)
from src.schemas.prompts import EXAMPLE_MODEL, ErrorResponse
from src.services.base.sse import KEEP_ALIVE
from src.services.benchmarker.results.report import render_progress, render_report
from src.services.benchmarker.runs.service import (
    Event,
    RunView,
    benchmark_events,
    cancel_benchmark,
    get_benchmark,
    list_benchmarks,
    result_file,
    start_benchmark,
)
from src.streams import started

# The report is a page of its own: no scripts, no remote anything, nothing sniffed.
REPORT_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "x-content-type-options": "nosniff",
}
# With inbound keys, another key's run is answered exactly as a run that does not exist.
NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "No such run (or, with inbound keys, not yours)"}
}
HTML_OR_JSON: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/html": {}}, "description": "JSON, or HTML with ?visualize=true"},
    202: {"model": BenchmarkAccepted, "description": "Started in the background"},
    507: {"model": ErrorResponse, "description": "BENCHMARKS_DIR cannot take the run's files"},
}

router = APIRouter(tags=["benchmarks"])
# The upload's own body limit (MAX_UPLOAD_BYTES) is api/gate/body_limit.py's.
upload_router = APIRouter(tags=["benchmarks"])

BenchmarkId = Annotated[str, Path(description="The id of a benchmark run")]
PROMPT_FILE_DESCRIPTION = "UTF-8 text, one prompt per line; blank lines are skipped"
PROMPT_SOURCES = ("prompt_file", "dataset_file", "prompt_tokens")
DATASET_FILE_DESCRIPTION = (
    'JSONL: {"messages": [...], "max_tokens"?: n} or ShareGPT\'s '
    '{"conversations": [{"from": "human"|"gpt", "value": ...}]} per line'
)


def benchmark_form_schema() -> dict[str, Any]:
    """The form as its readers need it: one flat object, a file and one field a parameter,
    each with its type, bounds and the default the service applies, which is what Swagger UI
    fills in (a null one: the field is left empty and not sent).

    FastAPI derives it from BenchmarkParameters, which validates the form and also reads saved
    runs (`models`), as nested schemas from which neither a generator nor a form can be made.
    """
    parameters = BenchmarkParameters.model_json_schema(mode="validation")
    fields: dict[str, Any] = {
        "prompt_file": _file_field("Prompt File", PROMPT_FILE_DESCRIPTION),
        "dataset_file": _file_field("Dataset File", DATASET_FILE_DESCRIPTION),
    }
    for name, field in parameters["properties"].items():
        fields[name] = _form_field(field, parameters.get("$defs", {}))
    # What Swagger UI fills in for the required model: one the built-in emulator serves.
    fields["model"].update(example=[EXAMPLE_MODEL], examples=[[EXAMPLE_MODEL]])
    return {
        "type": "object",
        "title": "BenchmarkForm",
        "properties": fields,
        "required": ["model"],
        # A `oneOf` of the three would say it to a validator, but schemathesis' generator
        # stalls on it; the description says it to a reader, and the service answers a 422.
        "description": "Give exactly one prompt source: "
        + ", ".join(f"`{source}`" for source in PROMPT_SOURCES)
        + " (synthetic prompts).",
    }


def _file_field(title: str, description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "title": title, "description": description}


def _form_field(field: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """One form field: its one non-null type (a form cannot send a null, only leave it out)."""
    [branch] = [item for item in field.get("anyOf", [field]) if item.get("type") != "null"]
    ref = branch.get("$ref", "")
    branch = definitions.get(ref.rsplit("/", 1)[-1], branch) if ref else branch
    flat = {key: value for key, value in field.items() if key != "anyOf"}
    flat.update({key: value for key, value in branch.items() if key not in ("title", "$ref")})
    return flat


@upload_router.post("/benchmark", response_model=BenchmarkSummary, responses=HTML_OR_JSON)
async def create_benchmark(
    request: Request,
    settings: SettingsDep,
    launcher: LauncherDep,
    catalog: CatalogDep,
    caller: CallerDep,
    parameters: Annotated[BenchmarkParameters, Form()],
    prompt_file: Annotated[UploadFile | None, File(description=PROMPT_FILE_DESCRIPTION)] = None,
    dataset_file: Annotated[UploadFile | None, File(description=DATASET_FILE_DESCRIPTION)] = None,
    visualize: Annotated[bool, Query(description="Answer with an HTML report")] = False,
    background: Annotated[
        bool, Query(description="Answer 202 at once; follow the run at its Location")
    ] = False,
    prefer: Annotated[str | None, Header(description="`respond-async` as ?background")] = None,
) -> Response | BenchmarkSummary:
    """Run every prompt (of the file, the dataset, or synthetic ones) on each model and report
    latency, throughput, achieved lengths and cost. Give exactly one prompt source."""
    state = await start_benchmark(
        settings, launcher, catalog, prompt_file, parameters, caller, dataset_file
    )
    asked_async = "respond-async" in (prefer or "").lower()
    if background or asked_async:
        location = f"/benchmarks/{state.id}"
        accepted = BenchmarkAccepted(
            id=state.id,
            status=state.status,
            location=location,
            events=f"{location}/events",
            report=state.files.report_url,
        )
        headers = {"location": location}
        if asked_async:
            headers["preference-applied"] = "respond-async"
        return JSONResponse(accepted.model_dump(), status_code=202, headers=headers)
    # Nobody would read the answer, and every further request costs money; the interrupted
    # run still saves what it measured.
    summary = await cancel_on_disconnect(
        request, launcher.wait(state.id), "The client disconnected; the benchmark was stopped."
    )
    if visualize:
        return HTMLResponse(render_report(summary), headers=REPORT_HEADERS)
    return summary


@router.get("/benchmarks")
async def get_benchmarks(
    settings: SettingsDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Newest runs to return")] = 100,
) -> BenchmarkList:
    """List benchmark runs, newest first (running ones included): with inbound keys, the
    caller's own (an admin key's: every run)."""
    return await list_benchmarks(settings, limit, caller)


@router.get(
    "/benchmarks/{benchmark_id}",
    response_model=RunView,
    responses=NOT_FOUND,
)
async def get_benchmark_run(
    settings: SettingsDep, caller: CallerDep, benchmark_id: BenchmarkId
) -> RunView:
    """The summary of a finished run; while it runs, its progress and statistics so far."""
    return await get_benchmark(settings, benchmark_id, caller)


@router.delete(
    "/benchmarks/{benchmark_id}",
    response_model=RunView,
    responses={
        **NOT_FOUND,
        202: {"model": BenchmarkState, "description": "Asked to stop; not stopped yet"},
        409: {"model": ErrorResponse, "description": "The run has already ended"},
    },
)
async def delete_benchmark_run(
    settings: SettingsDep, caller: CallerDep, benchmark_id: BenchmarkId
) -> Response:
    """Cancel a running benchmark: in-flight requests are cancelled, finished rows are kept."""
    view = await cancel_benchmark(settings, benchmark_id, caller)
    status = 200 if view.status in FINISHED else 202
    return Response(view.model_dump_json(by_alias=True), status, media_type="application/json")


@router.get(
    "/benchmarks/{benchmark_id}/events",
    responses={
        **NOT_FOUND,
        200: {"content": {"text/event-stream": {}}, "description": "progress, then summary"},
    },
)
async def get_benchmark_events(
    settings: SettingsDep, caller: CallerDep, benchmark_id: BenchmarkId
) -> Response:
    """Server-sent events: the current state, `progress` at most once a second, one `summary`."""
    # Started: a missing run is a plain 404, not an empty stream.
    events = await started(benchmark_events(settings, benchmark_id, caller))
    return sse_response(_sse(events))


async def _sse(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async for name, view in events:
        if view is None:
            yield KEEP_ALIVE
        else:
            yield sse_event(name, view.model_dump(mode="json", by_alias=True))


@router.get(
    "/benchmarks/{benchmark_id}/report",
    responses={
        **NOT_FOUND,
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "HTML"},
    },
)
async def get_benchmark_report(
    settings: SettingsDep, caller: CallerDep, benchmark_id: BenchmarkId
) -> HTMLResponse:
    """The HTML report of a run; while it runs, its progress, refreshing itself."""
    view = await get_benchmark(settings, benchmark_id, caller)
    page = render_report(view) if isinstance(view, BenchmarkSummary) else render_progress(view)
    return HTMLResponse(page, headers=REPORT_HEADERS)


def _add_download(
    file_name: Literal["results.csv", "summary.json"],
    media_type: str,
    name: str,
    doc: str,
    answer: str,
) -> None:
    """`GET /benchmarks/{benchmark_id}/<file_name>`: one of a run's files, as it stands."""

    async def download(
        settings: SettingsDep, caller: CallerDep, benchmark_id: BenchmarkId
    ) -> FileResponse:
        path = await result_file(settings, benchmark_id, file_name, caller)
        return FileResponse(path, media_type=media_type, filename=path.name)

    download.__doc__ = doc  # the operation's description, as a handler's docstring is
    router.add_api_route(
        f"/benchmarks/{{benchmark_id}}/{file_name}",
        download,
        methods=["GET"],
        name=name,
        responses={**NOT_FOUND, 200: {"content": {media_type: {}}, "description": answer}},
    )


_add_download(
    "results.csv",
    "text/csv",
    "download_results",
    "The per-request CSV (so far, while the run goes on).",
    "One row a request",
)
_add_download(
    "summary.json",
    "application/json",
    "download_summary",
    "The JSON summary of a finished run.",
    "Summary",
)
