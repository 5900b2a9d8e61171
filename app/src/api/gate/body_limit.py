"""Every request body's size limit, enforced while the body arrives, before a route parses (and
buffers) it: pure ASGI, one limit per path, MAX_JSON_BODY_BYTES for any other.

The limit is checked where the app reads the body: a Content-Length over it fails the first
read, a chunked body the read that passes it. The route's own error handling then answers the
413 in its shape (OpenAI's on /v1). FastAPI reports any failure while reading a form as a 400:
that answer is replaced by the 413.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.errors.payload import error_messages, scope_request_id
from src.api.gate.asgi import HttpMiddleware
from src.services.base.exceptions import PayloadTooLargeError

# Room for the multipart framing and the small form fields around the prompt file.
FORM_OVERHEAD_BYTES = 64 * 1024


class BodyLimit(HttpMiddleware):
    """`limits` maps a path to its limit in bytes and the limit's name in the refusal; any
    other path has `default`."""

    def __init__(
        self, app: ASGIApp, limits: Mapping[str, tuple[int, str]], default: tuple[int, str]
    ) -> None:
        self.app = app
        self._limits = dict(limits)
        self._default = default

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit, name = self._limits.get(scope["path"], self._default)
        declared, chunked = _framing(scope)
        if not chunked and (declared is None or declared <= limit):
            # The server frames the body by its Content-Length (none: no body), so it cannot
            # grow past it: nothing to count, and the common request pays for no wrapper.
            await self.app(scope, receive, send)
            return
        received = 0
        refusal: PayloadTooLargeError | None = None

        async def bounded() -> Message:
            nonlocal received, refusal
            if refusal is None and declared is not None and declared > limit:
                refusal = too_large(declared, name)
            if refusal is not None:
                raise refusal
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = too_large(None, name)
                    raise refusal
            return message

        replaced = False

        async def answer(message: Message) -> None:
            nonlocal replaced
            if refusal is not None and message["type"] == "http.response.start":
                replaced = message["status"] == 400
                if replaced:
                    scope.setdefault("state", {})["error"] = refusal  # for the log line
                    for refused in error_messages(refusal, scope_request_id(scope)):
                        await send(refused)
                    return
            if not replaced:
                await send(message)

        await self.app(scope, bounded, answer)


def too_large(size: int | None, limit_name: str) -> PayloadTooLargeError:
    size_text = f" ({size} bytes)" if size is not None else ""
    return PayloadTooLargeError(f"The request body{size_text} is too large: {limit_name}.")


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length, and whether the body comes chunked instead."""
    declared: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked
