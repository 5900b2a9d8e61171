"""Request body limits enforced while the body arrives, before FastAPI parses (and buffers) it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from src.config import Settings
from src.services.base.exceptions import PayloadTooLargeError

# Room for the multipart framing and the small form fields around the prompt file.
FORM_OVERHEAD_BYTES = 64 * 1024
# A /generate body: a prompt of up to 1,000,000 characters, JSON-escaped, and a few fields.
JSON_BODY_LIMIT_BYTES = 8 * 1024 * 1024


class BodyLimitRoute(APIRoute):
    """Refuses an oversized body with our 413 JSON error, counting bytes as they arrive.

    Subclasses say how large a body may be; the limit may come from the running app's
    settings, which FastAPI's static `max_body_size` cannot express (and whose 413 is plain
    text, not our error shape).
    """

    def body_limit(self, settings: Settings) -> tuple[int, str]:  # noqa: ARG002
        """The limit in bytes and how to name it in the error message."""
        return JSON_BODY_LIMIT_BYTES, f"{JSON_BODY_LIMIT_BYTES} bytes for a JSON body"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited_handler(request: Request) -> Response:
            # Dependencies are not solved yet at this point: read the lifespan state directly.
            limit, name = self.body_limit(cast(Settings, request.state.settings))
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(int(declared), name)
            bounded = Request(request.scope, _bounded_receive(request.receive, limit, name))
            try:
                return await handler(bounded)
            except HTTPException as exc:
                # FastAPI reports any failure while reading a form as a 400; ours is a 413.
                if isinstance(exc.__cause__, PayloadTooLargeError):
                    raise exc.__cause__ from None
                raise

        return limited_handler


class UploadLimitRoute(BodyLimitRoute):
    """For the prompt-file upload: MAX_UPLOAD_BYTES plus the multipart framing."""

    def body_limit(self, settings: Settings) -> tuple[int, str]:
        limit = settings.max_upload_bytes
        return limit + FORM_OVERHEAD_BYTES, f"MAX_UPLOAD_BYTES={limit} bytes for the prompt file"


def _too_large(size: int | None, limit_name: str) -> PayloadTooLargeError:
    size_text = f" ({size} bytes)" if size is not None else ""
    return PayloadTooLargeError(f"The request body{size_text} is too large: {limit_name}.")


def _bounded_receive(receive: Receive, limit: int, limit_name: str) -> Receive:
    """Counts body bytes as they arrive: a chunked upload has no Content-Length to check."""
    received = 0

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(None, limit_name)
        return message

    return bounded
