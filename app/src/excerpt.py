"""Short, JSON-safe excerpts of what a caller sent, for error answers and log lines.

An answer that echoes its input whole lets one request make the service build, send and log
megabytes; an input holding NaN or Infinity cannot be written as JSON at all. Every echo of
a caller's value goes through here.
"""

from __future__ import annotations

import math

import orjson

EXCERPT_CHARS = 200
# Longer than any id of ours (a model id has at most 200 characters): past this, not an id.
MAX_SHOWN_ID_CHARS = 200
# A log line's request path and error text: enough to recognise a request, not to copy it.
MAX_LOGGED_CHARS = 500
# Values visited while copying a nested input: enough for any excerpt of EXCERPT_CHARS.
_EXCERPT_NODES = 64
# Python refuses to print an int of more than 4300 digits; far fewer are worth showing.
_MAX_INT_BITS = 256


def cut(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text`, or its first `limit` characters and a mark saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> object:
    """`value` itself when it is small and JSON-safe; else a string of at most about `limit`
    characters that starts as its JSON would. Visits a bounded number of nodes, however large
    the value."""
    budget = _Budget()
    copied = _copy(value, budget, limit)
    if isinstance(copied, dict | list):
        text = orjson.dumps(copied).decode()
        if budget.spent or len(text) > limit:
            return text[:limit] + "…"
    return copied


class _Budget:
    __slots__ = ("nodes", "spent")

    def __init__(self) -> None:
        self.nodes = _EXCERPT_NODES
        self.spent = False


def _copy(value: object, budget: _Budget, limit: int) -> object:
    """A JSON-safe copy of `value`, its strings cut; containers stop once `budget` is spent."""
    budget.nodes -= 1
    if value is None or isinstance(value, bool | str | bytes | int | float):
        return _scalar(value, limit)
    if isinstance(value, dict):
        copied: dict[str, object] = {}
        for key, item in value.items():
            if budget.nodes <= 0:
                budget.spent = True
                break
            copied[cut(str(key), limit)] = _copy(item, budget, limit)
        return copied
    if isinstance(value, list | tuple):
        items: list[object] = []
        for item in value:
            if budget.nodes <= 0:
                budget.spent = True
                break
            items.append(_copy(item, budget, limit))
        return items
    return cut(str(value), limit)


def _scalar(value: object, limit: int) -> object:
    if isinstance(value, bytes):
        # Not JSON (or not UTF-8): shown as text, and not at length.
        shown = value[: limit * 4].decode("utf-8", "replace")
        return cut(shown, limit) if len(value) <= limit * 4 else shown[:limit] + "…"
    if isinstance(value, str):
        return cut(value, limit)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value.bit_length() > _MAX_INT_BITS
    ):
        return f"an integer of {value.bit_length()} bits"
    return value
