"""The SSE side of `POST /chat/completions`: framing, pacing and mid-stream faults."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from starlette.types import Send

from src.services.emulator.wire import DONE_EVENT, PROCESSING_COMMENT, SSE_HEADERS, ChunkFramer

# OpenRouter repeats its keep-alive comment while a provider is slow to start.
KEEPALIVE_INTERVAL_SECONDS: Final = 1.0
# Tokens sent before an injected mid-stream error: enough for a client to have shown text.
MID_STREAM_ERROR_AFTER_TOKENS: Final = 3
MID_STREAM_ERROR_CODE: Final = 502
MID_STREAM_ERROR_MESSAGE: Final = "Provider disconnected mid-stream (emulated)"


class StreamWriter:
    """Buffers events and sends them before every wait, so bytes leave as soon as they exist.

    Without delays the whole stream goes out in one `send`, which keeps the emulator cheap
    when it is the upstream of a load test.
    """

    __slots__ = ("_buffer", "_send")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._buffer = bytearray()

    async def start(self) -> None:
        await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})

    def write(self, data: bytes) -> None:
        self._buffer += data

    async def flush(self) -> None:
        if self._buffer:
            body = bytes(self._buffer)
            self._buffer.clear()
            await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def sleep(self, seconds: float) -> None:
        await self.flush()
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        body = bytes(self._buffer)
        self._buffer.clear()
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


@dataclass(frozen=True, slots=True)
class StreamPlan:
    tokens: Sequence[str]
    finish_reason: str
    usage: dict[str, object]
    ttft_seconds: float
    tokens_per_second: float
    mid_stream_error: bool = False
    invalid_json: bool = False
    truncated: bool = False


async def stream_answer(send: Send, framer: ChunkFramer, plan: StreamPlan) -> None:
    writer = StreamWriter(send)
    await writer.start()
    # Always before the first data line: clients must be seen to skip comments.
    writer.write(PROCESSING_COMMENT)
    await _wait_first_token(writer, plan.ttft_seconds)

    if plan.invalid_json:
        writer.write(framer.broken())
        writer.write(DONE_EVENT)
        await writer.close()
        return

    tokens = plan.tokens
    if plan.mid_stream_error:
        tokens = tokens[: min(MID_STREAM_ERROR_AFTER_TOKENS, max(1, len(tokens) // 2))]
    elif plan.truncated:
        tokens = tokens[: max(1, len(tokens) // 2)]
    await _write_tokens(writer, framer, tokens, plan.tokens_per_second)

    if plan.truncated:
        # Returning without the final body message makes the server drop the connection
        # mid-body, as a dying upstream does.
        await writer.flush()
        return
    if plan.mid_stream_error:
        writer.write(framer.error(MID_STREAM_ERROR_CODE, MID_STREAM_ERROR_MESSAGE))
    else:
        writer.write(framer.finish(plan.finish_reason))
        writer.write(framer.usage(plan.usage))
    writer.write(DONE_EVENT)
    await writer.close()


async def _wait_first_token(writer: StreamWriter, seconds: float) -> None:
    # Whole keep-alive intervals, then the remainder: looping on the clock instead would spin
    # on the sub-millisecond remainders that an early-waking sleep leaves.
    while seconds > KEEPALIVE_INTERVAL_SECONDS:
        await writer.sleep(KEEPALIVE_INTERVAL_SECONDS)
        writer.write(PROCESSING_COMMENT)
        seconds -= KEEPALIVE_INTERVAL_SECONDS
    if seconds > 0:
        await writer.sleep(seconds)


async def _write_tokens(
    writer: StreamWriter, framer: ChunkFramer, tokens: Sequence[str], tokens_per_second: float
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    # One comment amid the data too: a client that only skips a leading comment is caught.
    middle = len(tokens) // 2
    for index, token in enumerate(tokens):
        if index:
            if tokens_per_second:
                # Scheduled from the start, so per-sleep overshoot does not add up.
                delay = start + index / tokens_per_second - loop.time()
                await writer.sleep(max(delay, 0.0))
            if index == middle:
                writer.write(PROCESSING_COMMENT)
        writer.write(framer.token(token))
