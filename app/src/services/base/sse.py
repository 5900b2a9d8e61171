"""Server-sent events, decoded from the bytes as they arrive (the WHATWG event-stream format),
and framed again (`encode_event`) for every stream this service sends.

One layer over the transport's chunks: lines may end in CRLF, LF or CR and may be split
across chunks; several `data:` lines make one event whose data are joined with "\\n"; lines
starting with ":" are comments (OpenRouter's keep-alives); an event ends at a blank line.
"""

from __future__ import annotations

from dataclasses import dataclass

from src.services.base.exceptions import UpstreamInvalidResponseError

_LINE_ENDS = (b"\n", b"\r")
KEEP_ALIVE = b": keep-alive\n\n"
DONE_EVENT = b"data: [DONE]\n\n"


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """One event on the wire; data holding line breaks becomes one `data:` line a line."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data.replace(b"\n", b"\ndata: ") + b"\n\n"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: bytes
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed it chunks; it returns the events each chunk completes."""

    __slots__ = (
        "_data",
        "_event",
        "_has_data",
        "_id",
        "_max_line",
        "_pending",
        "_retry",
        "_skip_lf",
    )

    def __init__(self, max_line_bytes: int | None = None) -> None:
        self._max_line = max_line_bytes
        self._pending = b""
        self._skip_lf = False  # the last chunk ended in CR: a LF starting the next is its pair
        self._data: list[bytes] = []
        self._has_data = False
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        if not chunk:
            return []
        # bytes.splitlines breaks at CR, LF and CRLF only: exactly the SSE line ends.
        lines = (self._pending + chunk).splitlines(keepends=True)
        if not lines[-1].endswith(_LINE_ENDS):
            self._pending = lines.pop()
            self._check_length(self._pending)
        else:
            self._pending = b""
            self._skip_lf = lines[-1].endswith(b"\r")
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line.rstrip(b"\r\n"))
            if event is not None:
                events.append(event)
        return events

    def _check_length(self, line: bytes) -> None:
        if self._max_line is not None and len(line) > self._max_line:
            raise UpstreamInvalidResponseError(
                "Upstream stream line is longer than "
                f"MAX_UPSTREAM_LINE_BYTES={self._max_line} bytes"
            )

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        self._check_length(line)
        if line.startswith(b":"):
            return None
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._has_data:
            self._event = ""
            return None
        event = ServerSentEvent(
            data=b"\n".join(self._data),
            event=self._event or "message",
            id=self._id,
            retry=self._retry,
        )
        self._data = []
        self._has_data = False
        self._event = ""
        return event
