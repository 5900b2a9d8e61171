"""HTTP routes: parse the request, call one service, shape the answer."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from src.api.gate.request_log import note_upstream_call
from src.api.plumbing.deps import CatalogDep, lifespan_state
from src.api.plumbing.disconnect import cancel_on_disconnect
from src.api.plumbing.parsing import json_body_doc, parse_json_body, read_body
from src.api.plumbing.sse import sse_from_stream, sse_response
from src.metrics import CONTENT_TYPE, METRICS_PATH, exposition
from src.metrics import flush as flush_metrics
from src.schemas.models import (
    HealthResponse,
    JobsHealth,
    ModelInfo,
    ModelProviders,
    ModelsResponse,
    ProviderInfo,
)
from src.schemas.prompts import ErrorResponse, GenerateRequest, GenerationResult
from src.services.benchmarker.runs.redis_runners import redis_health
from src.services.generation.service import generate as generate_text
from src.services.generation.service import open_generation_stream
from src.services.openrouter.catalog import is_free, listed_pricing

# /health stays open for load balancers and container health checks; the rest may need a key.
public_router = APIRouter()
router = APIRouter()
# Added only with METRICS_ENABLED; open without a key only with METRICS_PUBLIC.
metrics_router = APIRouter()


@public_router.get("/health")
async def health(request: Request) -> HealthResponse:
    """Liveness, which upstream this instance talks to, through which transport and proxy."""
    state = lifespan_state(request)
    settings = state["settings"]
    jobs = JobsHealth(backend="files")
    if settings.jobs_backend == "redis":
        reachable, runners = await redis_health(settings)
        jobs = JobsHealth(backend="redis", redis=reachable, runners=runners)
    return HealthResponse(
        status="ok",
        upstream=settings.upstream_label,
        transport=settings.upstream_transport,
        proxy=state["upstream_proxy"],
        jobs=jobs,
    )


@metrics_router.get(
    METRICS_PATH,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus' text format"}},
)
async def get_metrics() -> Response:
    """The gateway's metrics for Prometheus: requests, latencies, retries, upstream errors,
    benchmarks; every worker's added up."""
    flush_metrics()  # this process's own requests so far; the other workers' are flushed by them
    # Every worker's values are read from their files: not on the event loop.
    body = await asyncio.to_thread(exposition)
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/models")
async def get_models(
    catalog: CatalogDep,
    free: Annotated[bool, Query(description="Only free models")] = False,
) -> ModelsResponse:
    """List the upstream's models (cached with a TTL)."""
    models = [
        ModelInfo(
            id=model.id,
            name=model.name or model.id,
            context_length=model.context_length,
            pricing=listed_pricing(model),
            free=is_free(model),
        )
        for model in await catalog.models()
    ]
    if free:
        models = [model for model in models if model.free]
    return ModelsResponse(count=len(models), models=models)


@router.get(
    "/models/{model_id:path}/providers",
    responses={404: {"model": ErrorResponse, "description": "Not a model the upstream lists"}},
)
async def get_model_providers(
    catalog: CatalogDep,
    model_id: Annotated[str, Path(description="A model id, such as emulator/small")],
) -> ModelProviders:
    """The providers serving a model, with their prices, context and quantization (cached
    with a TTL): the slugs `POST /benchmark` takes as `provider`."""
    providers = [
        ProviderInfo(
            provider=endpoint.slug,
            name=endpoint.provider_name,
            context_length=endpoint.context_length,
            quantization=endpoint.quantization,
            pricing=listed_pricing(endpoint),
        )
        for endpoint in await catalog.endpoints(model_id)
    ]
    return ModelProviders(model=model_id, count=len(providers), providers=providers)


@router.post(
    "/generate",
    response_model=GenerationResult,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when streamed"},
    },
    # The body is parsed by the handler, once, straight from bytes; documented here.
    openapi_extra=json_body_doc(GenerateRequest),
)
async def generate(
    request: Request,
    stream: Annotated[bool, Query(description="Stream tokens as server-sent events")] = False,
) -> Response:
    """Generate text with one model (`?stream=true` or `"stream": true` for SSE)."""
    state = lifespan_state(request)
    settings, client = state["settings"], state["openrouter"]
    body = parse_json_body(GenerateRequest, await read_body(request))
    call = note_upstream_call(request.scope, body.model)
    if stream or body.stream:
        # Until the first byte the handler waits on the upstream; after it, the streaming
        # response itself stops when the caller leaves.
        opened = open_generation_stream(settings, client, body, call.timing)
        items = await cancel_on_disconnect(request, opened)
        return sse_response(sse_from_stream(items, request, call))
    result = await cancel_on_disconnect(request, generate_text(settings, client, body, call.timing))
    call.provider = result.provider
    return Response(result.model_dump_json(), media_type="application/json")
