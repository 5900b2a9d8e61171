"""Server-sent events as this service sends them: the response and the /generate stream's
events. (Each event is framed by services/base/sse.py's `encode_event`.)"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import orjson
from fastapi import Request
from fastapi.responses import StreamingResponse

from src.api.errors.exception_handlers import public_detail, request_id_of
from src.api.errors.payload import error_body
from src.services.base.error_status import status_for
from src.services.base.exceptions import ServiceError
from src.services.base.sse import encode_event
from src.services.base.timing import UpstreamCall
from src.services.openrouter.client import StreamDelta, StreamItem

# Proxies (nginx) would otherwise buffer the stream, or a cache keep it.
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)


def sse_event(event: str, data: object) -> bytes:
    return encode_event(orjson.dumps(data), event)


async def sse_from_stream(
    items: AsyncGenerator[StreamItem], request: Request, call: UpstreamCall | None = None
) -> AsyncIterator[bytes]:
    """`call`, when given, learns the provider from the stream's end, or its failure."""
    try:
        async for item in items:
            if isinstance(item, StreamDelta):
                yield sse_event("token", {"text": item.text})
            else:
                if call is not None:
                    call.provider = item.provider
                yield sse_event("done", item.model_dump(exclude={"text"}))
    except ServiceError as exc:
        if call is not None:
            call.failure = exc
        # The 200 status is already sent: the error travels as the stream's last event.
        # Redacted like any error response: an upstream message can echo the key back.
        detail = public_detail(request, exc)
        body: dict[str, object] = dict(
            error_body(type(exc).__name__, detail, request_id_of(request))
        )
        body["status_code"] = status_for(exc)
        yield sse_event("error", body)
    finally:
        await items.aclose()
