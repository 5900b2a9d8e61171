"""OpenRouter's wire format: error bodies, chat completions and SSE chunks, built as bytes.

Streams are the hot path of a load test, so a chunk is a precomputed prefix, the JSON of one
token and a precomputed suffix, rather than a dict serialised per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

Headers = list[tuple[bytes, bytes]]

JSON_CONTENT_TYPE: Final = (b"content-type", b"application/json")
SSE_HEADERS: Final[Headers] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # Tells a buffering reverse proxy (nginx) to pass each event on at once.
    (b"x-accel-buffering", b"no"),
]
PROCESSING_COMMENT: Final = b": OPENROUTER PROCESSING\n\n"
DONE_EVENT: Final = b"data: [DONE]\n\n"


def error_body(code: int, message: str, metadata: dict[str, object] | None = None) -> bytes:
    error: dict[str, object] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return orjson.dumps({"error": error})


def usage(prompt_tokens: int, completion_tokens: int, cost: float) -> dict[str, object]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": cost,
    }


@dataclass(frozen=True, slots=True)
class AnswerHead:
    """The fields every object of one answer starts with, plain or streamed."""

    generation_id: str
    provider: str
    model_id: str
    created: int

    def json(self, kind: str) -> dict[str, object]:
        return {
            "id": self.generation_id,
            "provider": self.provider,
            "model": self.model_id,
            "object": kind,
            "created": self.created,
        }


def completion_body(
    head: AnswerHead, *, content: str, finish_reason: str, usage: dict[str, object]
) -> bytes:
    return orjson.dumps(
        {
            **head.json("chat.completion"),
            "choices": [
                {
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "native_finish_reason": finish_reason,
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": None,
                        "reasoning": None,
                    },
                }
            ],
            "usage": usage,
        }
    )


def completion_error_body(head: AnswerHead, *, code: int, message: str) -> bytes:
    """A 200 whose body carries the error: OpenRouter's answer when a provider fails late."""
    return orjson.dumps(
        {**head.json("chat.completion"), "error": {"code": code, "message": message}, "choices": []}
    )


class ChunkFramer:
    """Frames the `data:` events of one stream; every event shares id, model and created."""

    __slots__ = ("_head", "_token_prefix")

    _TOKEN_SUFFIX: Final = (
        b'},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}\n\n'
    )

    def __init__(self, head: AnswerHead) -> None:
        # The object without its closing brace, so each event appends its own fields.
        self._head = b"data: " + orjson.dumps(head.json("chat.completion.chunk"))[:-1]
        self._token_prefix = (
            self._head + b',"choices":[{"index":0,"delta":{"role":"assistant","content":'
        )

    def token(self, text: str) -> bytes:
        return self._token_prefix + orjson.dumps(text) + self._TOKEN_SUFFIX

    def finish(self, reason: str) -> bytes:
        reason_json = orjson.dumps(reason)
        return (
            self._token_prefix
            + b'""},"finish_reason":'
            + reason_json
            + b',"native_finish_reason":'
            + reason_json
            + b',"logprobs":null}]}\n\n'
        )

    def usage(self, usage: dict[str, object]) -> bytes:
        return self._head + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n"

    def error(self, code: int, message: str) -> bytes:
        return (
            self._head
            + b',"error":'
            + orjson.dumps({"code": code, "message": message})
            + b',"choices":[{"index":0,"delta":{"content":""},'
            + b'"finish_reason":"error","native_finish_reason":"error"}]}\n\n'
        )

    def broken(self) -> bytes:
        """An event whose JSON stops half way, for clients that must survive bad chunks."""
        return self._token_prefix + b'"unterminated\n\n'
