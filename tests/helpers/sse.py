"""A strict reader of the service's own event stream (`event:` then `data:`, then a blank line)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: dict[str, Any]


def parse_sse_lines(lines: Iterable[str]) -> list[SseEvent]:
    events: list[SseEvent] = []
    name: str | None = None
    data: str | None = None
    for line in lines:
        if not line:
            assert name is not None and data is not None, "blank line without an event"
            events.append(SseEvent(name, json.loads(data)))
            name = data = None
        elif line.startswith("event: "):
            assert name is None, f"two event lines in one event: {line!r}"
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            assert name is not None and data is None, f"unexpected data line: {line!r}"
            data = line[len("data: ") :]
        else:
            raise AssertionError(f"not an SSE line of ours: {line!r}")
    assert name is None and data is None, "the stream ended inside an event"
    return events


def parse_sse(text: str) -> list[SseEvent]:
    return parse_sse_lines(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))


def event_names(events: Iterable[SseEvent]) -> list[str]:
    return [event.event for event in events]


def streamed_text(events: Iterable[SseEvent]) -> str:
    return "".join(event.data["text"] for event in events if event.event == "token")
