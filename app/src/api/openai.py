"""OpenAI-compatible routes: what the `openai` SDKs, LangChain and OpenAI benchmark tools call.

Chat completions are relayed: the request goes upstream as the caller sent it, the answer (or
each streamed event) comes back as the upstream sent it. The hot route is built like
/generate: no FastAPI dependencies, the body read and checked once from bytes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from src.api.errors.openai_errors import OpenAIErrorRoute, stream_error_event
from src.api.gate.request_log import note_upstream_call
from src.api.plumbing.deps import CatalogDep, lifespan_state
from src.api.plumbing.disconnect import cancel_on_disconnect
from src.api.plumbing.parsing import (
    json_body_doc,
    parse_json_body,
    quoted_keys,
    read_body,
    refuse_duplicate_keys,
)
from src.api.plumbing.sse import sse_response
from src.excerpt import MAX_SHOWN_ID_CHARS, cut
from src.schemas.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    ModelList,
    ModelObject,
    OpenAIErrorResponse,
)
from src.services.base.exceptions import ServiceError, UnknownModelError
from src.services.base.sse import DONE_EVENT
from src.services.base.timing import UpstreamCall
from src.services.generation.relay import Relay
from src.services.openrouter.catalog import listed_pricing
from src.services.openrouter.client import provider_in
from src.services.openrouter.schemas import UpstreamModel

router = APIRouter(
    prefix="/v1",
    tags=["OpenAI-compatible"],
    route_class=OpenAIErrorRoute,
    responses={
        status: {"model": OpenAIErrorResponse}
        for status in (400, 401, 402, 403, 404, 413, 422, 429, 502, 504)
    },
)


# The keys whose value the service checks or that change what a request costs; a body that
# repeats one of them is scanned for repeated keys (reasoning's own max_tokens included).
_CHECKED_KEYS = quoted_keys(
    ("model", "stream", "n", "max_tokens", "max_completion_tokens", "max_output_tokens")
)
# One server-sent event, as a stream's readers (and OpenAPI 3.2) describe it: not the whole body.
_STREAM_DOC: dict[str, Any] = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {
                "event": {"type": "string"},
                "data": {
                    "type": "string",
                    "description": "A chat.completion.chunk as JSON, an error object, or [DONE]",
                },
            },
            "required": ["data"],
        }
    }
}


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {
            "content": _STREAM_DOC,
            "description": "The upstream's chat completion, or its chunks as server-sent "
            "events ending with `data: [DONE]` when `stream` is true",
        }
    },
    # The body is parsed by the handler, once, straight from bytes; documented here.
    openapi_extra=json_body_doc(ChatCompletionRequest),
)
async def chat_completions(request: Request) -> Response:
    """Create a chat completion (OpenAI's format; `"stream": true` for server-sent events)."""
    state = lifespan_state(request)
    raw = await read_body(request)
    body = parse_json_body(ChatCompletionRequest, raw)
    refuse_duplicate_keys(raw, _CHECKED_KEYS)
    call = note_upstream_call(request.scope, body.model)
    relay = Relay(state["settings"], state["openrouter"], state["catalog"], body, raw, call.timing)
    if body.stream:
        # Until the first events the handler waits on the upstream; after them, the
        # streaming response itself stops when the caller leaves.
        chunks = await cancel_on_disconnect(request, relay.open_stream())
        return sse_response(_events(chunks, request, call))
    answer = await cancel_on_disconnect(request, relay.completion())
    call.provider = provider_in(answer)
    return Response(answer, media_type="application/json")


def _model_object(model: UpstreamModel) -> ModelObject:
    return ModelObject(
        id=model.id,
        created=model.created or 0,
        # OpenRouter's ids are "<owner>/<model>".
        owned_by=model.id.split("/", 1)[0] if "/" in model.id else "openrouter",
        name=model.name or model.id,
        context_length=model.context_length,
        pricing=listed_pricing(model),
    )


@router.get("/models")
async def list_models(catalog: CatalogDep) -> ModelList:
    """List the upstream's models as OpenAI's model list (the same cache as /models)."""
    return ModelList(data=[_model_object(model) for model in await catalog.models()])


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, catalog: CatalogDep) -> ModelObject:
    """One model of the list, by id."""
    for model in await catalog.models():
        if model.id == model_id:
            return _model_object(model)
    shown = cut(model_id, MAX_SHOWN_ID_CHARS)
    raise UnknownModelError(f"The model '{shown}' does not exist. GET /v1/models lists them.")


async def _events(
    chunks: AsyncGenerator[bytes], request: Request, call: UpstreamCall
) -> AsyncIterator[bytes]:
    """The relayed events, then `data: [DONE]`; a failure becomes OpenAI's error event.
    `call` learns the provider from the first events (OpenRouter names it in each), or the
    failure."""
    first = True
    try:
        async for chunk in chunks:
            if first:  # looked for once: a stream that names none costs nothing more
                call.provider, first = provider_in(chunk), False
            yield chunk
    except ServiceError as exc:
        call.failure = exc
        # The 200 status is already sent: the error travels as the stream's last event.
        yield stream_error_event(request, exc)
    finally:
        await chunks.aclose()
    yield DONE_EVENT
