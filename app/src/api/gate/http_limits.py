"""What a connection may cost before its request reaches the app: uvicorn's httptools protocol
with limits, passed to uvicorn as its `http` protocol class (serve.py).

uvicorn reads a request's line and headers with no bound on their size or on the time they
take, and accepts connections until the process runs out of file descriptors. Here:
- MAX_HEADER_BYTES bounds the request line and headers: past it, 431. Bytes are counted as
  they arrive, so a huge header is refused after about that many bytes instead of being
  buffered whole (httptools grows a header by concatenation, at a cost that grows with the
  square of its size).
- HEADER_TIMEOUT_SECONDS: a connection must send its request line and headers within this
  time of opening, or of its previous answer; else 408, or a silent close if it sent nothing.
  The deadline is not moved by the bytes that arrive: one byte every 2 s does not keep it.
- BODY_TIMEOUT_SECONDS: the same for the body, counted from the end of the headers (for a
  pipelined request, from when its turn comes), for every route: else 408 (the app sees the
  client gone), or a close if an answer has already begun.
- MAX_CONNECTIONS (uvicorn's `limit_concurrency`): a request arriving past it is answered
  503. A connection opened past it first closes the connection that has waited longest for
  its headers (or, when none is, for its body), so half-sent requests cannot crowd out real
  ones, and the descriptors stay bounded (descriptors.py fits the limit into the process's
  descriptor limit).

Each refusal is our JSON error with X-Request-ID. Timeouts are logged as counts, a line per
kind by the sweep of deadlines that finds them (sweeps come SWEEP_SECONDS apart or more,
unless a timeout setting is shorter); closes to make room likewise, at once when no count was
logged in the last second, else with the next sweep's: a flood must not become a flood of log
lines.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Callable
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from src.api.errors.payload import error_answer, new_request_id
from src.config import Settings, get_settings
from src.services.base.error_status import status_for
from src.services.base.exceptions import (
    RefusedRequestError,
    RequestHeadersTooLarge,
    RequestTimeout,
    ServiceUnavailable,
)

logger = logging.getLogger(__name__)

# After a refusal, what the client still sends is read and dropped for this long before the
# connection closes: closing with unread data sends a reset, which can destroy the answer
# before the client reads it.
LINGER_SECONDS = 1.0
# Timeouts are swept in batches at most this often.
SWEEP_SECONDS = 0.25
REPORT_SECONDS = 1.0


class _Server:
    """What the connections of one server share: those still waiting for their request line
    and headers, and those waiting for the rest of a body, each oldest first, with their
    deadlines; and the counts to report."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings) -> None:
        self.loop = loop
        self.max_header_bytes = settings.max_header_bytes
        self.header_timeout = settings.header_timeout_seconds
        self.body_timeout = settings.body_timeout_seconds
        self.waiting: dict[LimitedHttpToolsProtocol, float] = {}
        self.in_body: dict[LimitedHttpToolsProtocol, float] = {}
        self.closing = 0  # closed by us, not yet gone from uvicorn's set of connections
        # The app tasks of connections closed to make room: ending, no longer counted.
        self.doomed: set[asyncio.Task[None]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = 0
        self.body_timed_out = 0
        self.made_room = 0
        self.reported = 0.0

    def wait(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._enqueue(self.waiting, protocol, self.header_timeout)

    def wait_for_body(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._enqueue(self.in_body, protocol, self.body_timeout)

    def _enqueue(
        self,
        pending: dict[LimitedHttpToolsProtocol, float],
        protocol: LimitedHttpToolsProtocol,
        timeout: float,
    ) -> None:
        deadline = self.loop.time() + timeout
        pending.pop(protocol, None)  # re-inserted last: the dict stays in deadline order
        pending[protocol] = deadline
        # One timer for both kinds of deadline: moved earlier only when a body's comes first.
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self.sweep)
        elif self.timer.when() > deadline + SWEEP_SECONDS:
            self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self.sweep)

    def make_room(self, newcomer: LimitedHttpToolsProtocol) -> None:
        """Close the connection that has waited longest for its headers, else the one that has
        waited longest for its body (never the newcomer)."""
        oldest = next(iter(self.waiting), None)
        if oldest is not None and oldest is not newcomer:
            del self.waiting[oldest]
        else:
            oldest = next(iter(self.in_body), None)
            if oldest is None or oldest is newcomer:
                return
            del self.in_body[oldest]
            oldest.give_up_task(self.doomed)
        oldest.close()
        self.made_room += 1
        now = self.loop.time()
        if now - self.reported >= REPORT_SECONDS:
            self.report()
        elif self.timer is None or self.timer.when() > now + REPORT_SECONDS:
            # The count is reported by a sweep within the second.
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(now + REPORT_SECONDS, self.sweep)

    def sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        self.timed_out += _expire(self.waiting, now, LimitedHttpToolsProtocol.header_timeout)
        self.body_timed_out += _expire(self.in_body, now, LimitedHttpToolsProtocol.body_timeout)
        upcoming = [
            next(iter(pending.values())) for pending in (self.waiting, self.in_body) if pending
        ]
        if upcoming:
            self.timer = self.loop.call_at(max(min(upcoming), now + SWEEP_SECONDS), self.sweep)
        self.report()

    def report(self) -> None:
        self.reported = self.loop.time()
        if self.timed_out:
            logger.warning(
                "Closed %d connections: no complete request line and headers within "
                "HEADER_TIMEOUT_SECONDS=%g",
                self.timed_out,
                self.header_timeout,
            )
        if self.body_timed_out:
            logger.warning(
                "Closed %d connections: no complete request body within "
                "BODY_TIMEOUT_SECONDS=%g of its headers",
                self.body_timed_out,
                self.body_timeout,
            )
        if self.made_room:
            logger.warning(
                "Closed %d connections still waiting for their headers or body, to make room "
                "for new ones: MAX_CONNECTIONS reached",
                self.made_room,
            )
        self.timed_out = self.body_timed_out = self.made_room = 0


def _expire(
    pending: dict[LimitedHttpToolsProtocol, float],
    now: float,
    timeout: Callable[[LimitedHttpToolsProtocol], None],
) -> int:
    """Time out the connections whose deadline has passed (the dict is in deadline order)."""
    expired = 0
    while pending:
        protocol, deadline = next(iter(pending.items()))
        if deadline > now:
            break
        del pending[protocol]
        timeout(protocol)
        expired += 1
    return expired


_servers: weakref.WeakKeyDictionary[ServerState, _Server] = weakref.WeakKeyDictionary()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        server = _servers.get(server_state)
        if server is None:
            server = _servers[server_state] = _Server(self.loop, get_settings())
        self._server = server
        # Enforced here instead of by uvicorn: with our JSON answer, and without counting the
        # connections we are already closing.
        self.max_connections = config.limit_concurrency
        self.limit_concurrency = None
        self._in_head = True  # between messages or inside a request line and headers
        self._head_bytes = 0
        self._refused = False
        self._closing = False
        self._lost = False
        self._task: asyncio.Task[None] | None = None  # the app's task for the current request
        self._task_cycle: RequestResponseCycle | None = None  # and its request

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._server.wait(self)
        if self.max_connections is not None and self._open() > self.max_connections:
            self._server.make_room(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server.waiting.pop(self, None)
        self._server.in_body.pop(self, None)
        if self._closing:
            self._closing = False
            self._server.closing -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self._server.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(self._head_too_large())

    # --- httptools callbacks ---------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._server.waiting.pop(self, None)
        # Only a large read can hide a large head: measure it exactly only then.
        if self._head_bytes > self._server.max_header_bytes and self._head_size() > (
            self._server.max_header_bytes
        ):
            self._refuse(self._head_too_large())
            return
        self._head_bytes = 0
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self.max_connections is not None and self._over_capacity():
            self._refuse(
                ServiceUnavailable(
                    f"The server is at MAX_CONNECTIONS={self.max_connections}; retry shortly."
                )
            )
            return
        super().on_headers_complete()
        if idle:
            # A queued pipelined request's body is not read until its turn; timed from then.
            self._server.wait_for_body(self)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn's, keeping a handle on the task: a connection closed to make room stops
        # counting against MAX_CONNECTIONS at once, not only once its task has unwound.
        context = contextvars.Context() if self.config.reset_contextvars else None
        task = self.loop.create_task(cycle.run_asgi(app), context=context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._task = task
        self._task_cycle = cycle

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_head = True
        self._server.in_body.pop(self, None)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # Answered before its body ended (a 413, a 401): the rest of the body is not awaited.
        self._server.in_body.pop(self, None)
        # uvicorn starts the next pipelined request here, taking it off the queue: only with
        # none queued does the connection wait for a head.
        queued = bool(self.pipeline)
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if not queued:
            self._server.wait(self)
        elif self._task_cycle is self.cycle and self.cycle.more_body:
            # The request whose turn has come is still sending its body: from now on that is
            # held to BODY_TIMEOUT_SECONDS, as if its headers had just ended.
            self._server.wait_for_body(self)

    # --- limits ---------------------------------------------------------------------------------

    def header_timeout(self) -> None:
        """Called by the server's sweep once this connection's deadline has passed."""
        if self._head_bytes:
            seconds = self._server.header_timeout
            self._refuse(
                RequestTimeout(
                    "The request line and headers did not arrive within "
                    f"HEADER_TIMEOUT_SECONDS={seconds:g}."
                ),
                log=False,  # counted, and reported by the sweep
            )
        else:
            self.close()

    def body_timeout(self) -> None:
        """Called by the server's sweep once this request's body deadline has passed."""
        seconds = self._server.body_timeout
        self._refuse(
            RequestTimeout(
                f"The request body did not arrive within BODY_TIMEOUT_SECONDS={seconds:g} of "
                "its headers."
            ),
            log=False,  # counted, and reported by the sweep
        )

    def give_up_task(self, doomed: set[asyncio.Task[None]]) -> None:
        """This connection is being closed: its app task, ending, no longer counts."""
        task = self._task
        if task is not None and not task.done():
            doomed.add(task)
            task.add_done_callback(doomed.discard)

    def close(self) -> None:
        if self._lost:
            return
        if not self._closing:
            self._closing = True
            self._server.closing += 1
        self.transport.close()

    def _open(self) -> int:
        return len(self.connections) - self._server.closing

    def _over_capacity(self) -> bool:
        assert self.max_connections is not None
        busy = len(self.tasks) - len(self._server.doomed)
        return self._open() > self.max_connections or busy >= self.max_connections

    def _head_size(self) -> int:
        # "METHOD url HTTP/1.1\r\n", each header as "name: value\r\n", and the blank line.
        line = len(self.parser.get_method()) + len(self.url) + 12
        return line + sum(len(name) + len(value) + 4 for name, value in self.headers) + 2

    def _head_too_large(self) -> RequestHeadersTooLarge:
        limit = self._server.max_header_bytes
        return RequestHeadersTooLarge(
            f"The request line and headers are larger than MAX_HEADER_BYTES={limit} bytes."
        )

    def _refuse(self, refusal: RefusedRequestError, *, log: bool = True) -> None:
        """Answer with the refusal (unless an answer is under way), then linger and close."""
        self._refused = True
        self._server.waiting.pop(self, None)
        self._server.in_body.pop(self, None)
        if log:
            peer = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            logger.warning(
                "REFUSED | %s | status_code=%d | %s", peer, status_for(refusal), refusal.detail
            )
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.close()  # an answer is being sent on this connection: nothing can follow it
                return
            # The app still waits for the body: to it the client is gone, and what it might
            # answer is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(self._answer(refusal))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.close)

    def _answer(self, refusal: RefusedRequestError) -> bytes:
        request_id = new_request_id()
        status, headers, body = error_answer(refusal, request_id)
        headers += [(b"x-request-id", request_id.encode()), (b"connection", b"close")]
        head = [STATUS_LINE[status]]
        for name, value in [*self.server_state.default_headers, *headers]:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        return b"".join(head) + body
