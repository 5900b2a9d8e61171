"""Request bodies parsed once, straight from bytes, with FastAPI's own 422 shape on failure."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from src.services.base.exceptions import ClientDisconnectedError, PayloadTooLargeError

M = TypeVar("M", bound=BaseModel)
# A JSON body: a prompt of up to 1,000,000 characters, JSON-escaped, and a few fields.
JSON_BODY_LIMIT_BYTES = 8 * 1024 * 1024


def too_large(size: int | None, limit_name: str) -> PayloadTooLargeError:
    size_text = f" ({size} bytes)" if size is not None else ""
    return PayloadTooLargeError(f"The request body{size_text} is too large: {limit_name}.")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with our 413 as soon as it is known to pass `limit` bytes: from
    Content-Length before reading, or while a chunked body arrives.
    """
    limit_name = f"{limit} bytes for a JSON body"
    for name, value in request.scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise too_large(int(value), limit_name)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            # Half a body is not a malformed one: the caller left, nobody reads an answer.
            raise ClientDisconnectedError("The client went away before its request body arrived.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(None, limit_name)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _shown(value: object) -> object:
    """A body that is not JSON is echoed as text (bytes cannot be), and not at length."""
    if isinstance(value, bytes):
        return value[:200].decode("utf-8", "replace")
    return value


def parse_json_body(model: type[M], raw: bytes) -> M:
    """`model_validate_json` is one pass in Rust; FastAPI's body parameter would decode the JSON
    with the standard library and validate the result again.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {
                    "type": e["type"],
                    "loc": ("body", *e["loc"]),
                    "msg": e["msg"],
                    "input": _shown(e["input"]),
                }
                for e in exc.errors(include_url=False)
            ],
        ) from None
