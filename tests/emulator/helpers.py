"""Request builders and an SSE reader shared by the emulator tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

AUTH = {"Authorization": "Bearer test-key"}
CHAT = "/api/v1/chat/completions"


def chat_body(
    prompt: str = "Tell me about rivers", model: str = "emulator/small", **extra: Any
) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


@dataclass
class SseStream:
    comments: list[str] = field(default_factory=list)
    # Parsed `data:` payloads in order; "[DONE]" stays a string.
    events: list[Any] = field(default_factory=list)
    # Every block in order: ("comment", text) or ("data", raw payload).
    blocks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [event for event in self.events if isinstance(event, dict)]

    @property
    def deltas(self) -> list[str]:
        return [
            chunk["choices"][0]["delta"]["content"]
            for chunk in self.chunks
            if chunk["choices"]
            and chunk["choices"][0]["finish_reason"] is None
            and "error" not in chunk
        ]


def parse_sse(text: str) -> SseStream:
    """Strict reader: each block is one comment or one `data: ` line and ends in a blank line."""
    assert text.endswith("\n\n"), "the stream must end on an event boundary"
    stream = SseStream()
    for block in text[:-2].split("\n\n"):
        assert "\n" not in block, f"one line per event expected: {block!r}"
        if block.startswith(":"):
            stream.comments.append(block)
            stream.blocks.append(("comment", block))
            continue
        assert block.startswith("data: "), f"not an SSE data line: {block!r}"
        payload = block[len("data: ") :]
        stream.blocks.append(("data", payload))
        stream.events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return stream
