"""What the mocked upstream answers: OpenRouter's model list, completions and SSE chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

UPSTREAM = "https://upstream.test/api/v1"
API_KEY = "sk-or-v1-test-secret-0123456789abcdef"
GPT = "openai/gpt-4o"
LLAMA = "meta/llama-3:free"
# A /generate body that any mocked completion answers.
GENERATE = {"model": GPT, "prompt": "hi"}
USAGE = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def model_entry(
    model_id: str, prompt: str = "0.000001", completion: str = "0.000002"
) -> dict[str, Any]:
    return {
        "id": model_id,
        "name": model_id.split("/")[-1].title(),
        "created": 1_700_000_000,
        "context_length": 8192,
        "pricing": {"prompt": prompt, "completion": completion, "request": "0", "image": "0"},
        "architecture": {"modality": "text->text"},
    }


MODELS_BODY = {
    "data": [
        model_entry(GPT),
        model_entry(LLAMA, "0", "0"),
        model_entry("acme/zero-priced", "0", "0"),
    ]
}


def completion_body(
    text: str = "The sky is blue because of Rayleigh scattering.",
    *,
    model: str = GPT,
    finish_reason: str = "stop",
    usage: tuple[int, int, int] = (12, 9, 21),
) -> dict[str, Any]:
    return {
        "id": "gen-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[2],
        },
    }


def chunk(
    content: str | None = None, finish: str | None = None, *, model: str = "m/x", **extra: Any
) -> bytes:
    """One `data:` event of a streamed chat completion."""
    body: dict[str, Any] = {"id": "gen-1", "object": "chat.completion.chunk", "model": model}
    body["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    body.update(extra)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def usage_chunk(usage: Mapping[str, object] = USAGE, *, model: str = "m/x") -> bytes:
    """The last chunk of a stream: no choices, only the usage."""
    body = {"id": "gen-1", "object": "chat.completion.chunk", "model": model, "choices": []}
    return b"data: " + json.dumps({**body, "usage": usage}).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": OPENROUTER PROCESSING\n\n"


def sse_chunks(
    pieces: Sequence[str] = ("Hello", " there", " friend"), model: str = GPT
) -> list[bytes]:
    """A whole stream: one chunk per piece, the finish, the usage, then [DONE]."""
    return [
        *(chunk(piece, model=model) for piece in pieces),
        chunk("", "stop", model=model),
        usage_chunk(model=model),
        DONE,
    ]


def sse_response(*parts: bytes, model: str = GPT) -> httpx.Response:
    """A 200 event stream of `parts` (by default a whole three-token answer)."""
    return httpx.Response(
        200,
        content=b"".join(parts or sse_chunks(model=model)),
        headers={"content-type": "text/event-stream"},
    )


def error_body(status: int, message: str) -> dict[str, Any]:
    """OpenRouter's error shape."""
    return {"error": {"code": status, "message": message}}


class HangAfter:
    """A mocked upstream's side effect: `answer()` for the first `answered` requests, then
    requests that never end; `hanging` is set when the first of those arrives."""

    def __init__(self, answered: int, answer: Callable[[], httpx.Response]) -> None:
        self.answered = answered
        self.answer = answer
        self.calls = 0
        self.hanging = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls > self.answered:
            self.hanging.set()
            await asyncio.sleep(30)
        return self.answer()
