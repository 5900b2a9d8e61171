"""Request bodies parsed once, straight from bytes, with FastAPI's own 422 shape on failure."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from src.excerpt import cut, excerpt
from src.services.base.exceptions import ClientDisconnectedError

M = TypeVar("M", bound=BaseModel)
# A 422 lists this many problems at most: enough to fix a request, not a way to make one grow.
MAX_SHOWN_ERRORS = 20
# Up to this size, pydantic's own copy of the failed values costs next to nothing.
_INPUTS_FROM_ERRORS_BYTES = 64 * 1024
_NOT_JSON = object()


async def read_body(request: Request) -> bytes:
    """The whole body (bounded while it arrives by api/gate/body_limit.py)."""
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            # Half a body is not a malformed one: the caller left, nobody reads an answer.
            raise ClientDisconnectedError("The client went away before its request body arrived.")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json_body(model: type[M], raw: bytes) -> M:
    """`model_validate_json` is one pass in Rust; FastAPI's body parameter would decode the JSON
    with the standard library and validate the result again.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(validation_errors(exc, raw)) from None


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The `openapi_extra` of a route whose handler reads its body with `parse_json_body`:
    FastAPI cannot see that body, so the document names it."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def validation_errors(exc: ValidationError, raw: bytes) -> list[dict[str, Any]]:
    """FastAPI's 422 items, each input cut to an excerpt.

    pydantic hands a failed value back as Python objects, which for a large body (a field of
    millions of items) takes seconds; past a small body its inputs are found again in one
    parse of the raw bytes, which is cheap, and only the excerpt is kept.
    """
    small = len(raw) <= _INPUTS_FROM_ERRORS_BYTES
    errors = exc.errors(include_url=False, include_context=False, include_input=small)
    shown = errors[:MAX_SHOWN_ERRORS]
    if small:
        inputs = [error["input"] for error in shown]
    else:
        document = _document(raw)
        inputs = [_value_at(document, error["loc"], raw) for error in shown]
    return [
        shown_error({**error, "loc": ("body", *error["loc"]), "input": value})
        for error, value in zip(shown, inputs, strict=True)
    ]


def shown_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """One 422 item as a caller may see it: its location (a key can be as long as a body),
    message and input cut to excerpts; its context, which may hold exceptions, left out."""
    shown: dict[str, Any] = {
        "type": error.get("type", ""),
        "loc": [cut(part) if isinstance(part, str) else part for part in error.get("loc", ())],
        "msg": cut(str(error.get("msg", ""))),
    }
    if "input" in error:
        shown["input"] = excerpt(error["input"])
    return shown


def _document(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _value_at(document: object, loc: tuple[int | str, ...], raw: bytes) -> object:
    """The value at `loc` in the caller's document; the raw body when that is what failed."""
    if document is _NOT_JSON:
        # Not JSON to orjson, which reads no NaN: the body for the body, else nothing.
        return None if loc else raw
    value = document
    for part in loc:
        if not _holds(value, part):
            return None  # a location pydantic names but the document lacks (a missing field)
        value = value[part]  # type: ignore[index]
    return value


def _holds(value: object, part: int | str) -> bool:
    if isinstance(value, dict):
        return part in value
    return isinstance(value, list) and isinstance(part, int) and -len(value) <= part < len(value)


# `\u0040` to `\u007f`: a JSON string escaping an ASCII letter or underscore, which no encoder
# writes, but which lets `"max\u005ftokens"` repeat a key that a search for the key would miss.
_ESCAPED_WORD_CHARACTER = re.compile(rb"\\u00[4-7]")


def quoted_keys(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """What `refuse_duplicate_keys` looks for: any of `names` as a quoted JSON string."""
    return re.compile(b'"(?:' + b"|".join(re.escape(name.encode()) for name in names) + b')"')


def refuse_duplicate_keys(raw: bytes, watched: re.Pattern[bytes]) -> None:
    """Refuses a body in which an object repeats a key, at any depth.

    The body is checked with its last value of a key, while the upstream, which receives the
    raw bytes, may read the first: `{"max_tokens": 99999999, "max_tokens": 5}` would pass our
    limit and be spent upstream. A full scan costs a second parse, so it runs only when one of
    the `watched` keys occurs twice in the bytes, or a key may be spelled with escapes.
    """
    if not _may_repeat(raw, watched):
        return
    try:
        document = json.loads(raw, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return  # pydantic read it, the standard library cannot: nothing to compare
    where = _first_duplicate(document, ())
    if where is not None:
        raise RequestValidationError(
            [
                shown_error(
                    {
                        "type": "duplicate_key",
                        "loc": ("body", *where),
                        "msg": f"Duplicate key '{where[-1]}': each key may appear once per "
                        "object, or the upstream could read another value than the one checked",
                    }
                )
            ]
        )


def _may_repeat(raw: bytes, watched: re.Pattern[bytes]) -> bool:
    found = watched.findall(raw)
    if len(found) != len(set(found)):
        return True
    # The plain search first: it is all most bodies need, and far cheaper than the pattern.
    return b"\\u00" in raw and _ESCAPED_WORD_CHARACTER.search(raw) is not None


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as the parser read it: every key, repeated ones included, in order."""


def _first_duplicate(node: object, path: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, _ in node:
            if key in seen:
                return (*path, key)
            seen.add(key)
        children: list[tuple[str | int, object]] = [(key, value) for key, value in node]
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return None
    for part, child in children:
        found = _first_duplicate(child, (*path, part))
        if found is not None:
            return found
    return None
