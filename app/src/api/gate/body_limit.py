"""The prompt-file upload's size limit, enforced while the body arrives, before FastAPI parses
(and buffers) the form.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from src.api.plumbing.deps import lifespan_state
from src.api.plumbing.parsing import too_large
from src.services.base.exceptions import PayloadTooLargeError

# Room for the multipart framing and the small form fields around the prompt file.
FORM_OVERHEAD_BYTES = 64 * 1024


class UploadLimitRoute(APIRoute):
    """Refuses an upload over MAX_UPLOAD_BYTES (plus the multipart framing) with our 413 JSON
    error, counting bytes as they arrive. FastAPI's static `max_body_size` could not read the
    limit from the running app's settings, and its 413 is plain text, not our error shape.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited_handler(request: Request) -> Response:
            # Dependencies are not solved yet at this point: read the lifespan state directly.
            setting = lifespan_state(request)["settings"].max_upload_bytes
            limit = setting + FORM_OVERHEAD_BYTES
            name = f"MAX_UPLOAD_BYTES={setting} bytes for the prompt file"
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise too_large(int(declared), name)
            bounded = Request(request.scope, _bounded_receive(request.receive, limit, name))
            try:
                return await handler(bounded)
            except HTTPException as exc:
                # FastAPI reports any failure while reading a form as a 400; ours is a 413.
                if isinstance(exc.__cause__, PayloadTooLargeError):
                    raise exc.__cause__ from None
                raise

        return limited_handler


def _bounded_receive(receive: Receive, limit: int, limit_name: str) -> Receive:
    """Counts body bytes as they arrive: a chunked upload has no Content-Length to check."""
    received = 0

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(None, limit_name)
        return message

    return bounded
