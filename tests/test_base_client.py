"""The base client on its own, over a mock transport: what the upstream receives (method, URL,
headers, body, timeouts), what a failed answer becomes, how often a request is sent, what its
Timing records, and the deadline held to another transport's answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from src.services.base import client as base_client
from src.services.base.client import BaseClient, RetryPolicy, build_transport
from src.services.base.exceptions import (
    UpstreamCertificateError,
    UpstreamConnectionError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from src.services.base.httpx_transport import HttpxOptions, HttpxTransport
from src.services.base.timing import Timing
from src.services.base.transport import WireBody, WireTransport
from tests.helpers.raw_upstream import OK, RawUpstream, raw_upstream

pytestmark = pytest.mark.anyio

BOUND = 15.0  # every wait ends well within this, unless what is under test is broken
KEY = "sk-or-v1-base-client-test-key"
Handler = Callable[[httpx.Request], httpx.Response]


class Upstream:
    """A mock transport that records every request and answers from a list (the last one
    again once the list runs out)."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.closed = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def transport(self) -> httpx.MockTransport:
        return _Closing(self)


class _Closing(httpx.MockTransport):
    def __init__(self, upstream: Upstream) -> None:
        super().__init__(upstream)
        self._upstream = upstream

    async def aclose(self) -> None:
        self._upstream.closed = True


def client_for(
    upstream: Upstream,
    waits: list[float] | None = None,
    *,
    base_url: str = "http://upstream.test/api/v1",
    api_key: str = KEY,
    attempts: int = 3,
    **options: object,
) -> BaseClient:
    async def record(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)
        if waits is not None and len(waits) > 20:
            raise AssertionError("retries never stop")

    return BaseClient(
        upstream.transport(),
        base_url=base_url,
        api_key=api_key,
        retry_policy=RetryPolicy(attempts=attempts, min_seconds=0.5, max_seconds=8.0),
        sleep=record,
        **options,  # type: ignore[arg-type]
    )


def failure(status: int, body: bytes = b"", retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, content=body, headers=headers)


# --- what the upstream receives ------------------------------------------------------------


async def test_a_read_sends_the_method_url_and_fixed_headers_once() -> None:
    upstream = Upstream(httpx.Response(200, content=b'{"data": []}'))
    client = client_for(upstream)

    body = await client.read("GET", "models", Timing())

    assert body == b'{"data": []}'
    [request] = upstream.requests
    assert request.method == "GET"
    assert str(request.url) == "http://upstream.test/api/v1/models"
    assert request.headers["host"] == "upstream.test"
    assert request.headers["user-agent"] == "llm-gateway/0.1"
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "content-type" not in request.headers
    assert "content-length" not in request.headers
    assert request.content == b""


@pytest.mark.parametrize(
    ("base_url", "base"),
    [
        ("http://upstream.test/api/v1", "http://upstream.test/api/v1"),
        ("http://upstream.test/api/v1/", "http://upstream.test/api/v1"),
        ("http://upstream.test/v1X", "http://upstream.test/v1X"),
    ],
)
async def test_paths_join_the_base_url_with_or_without_its_slash(base_url: str, base: str) -> None:
    upstream = Upstream(httpx.Response(200))
    client = client_for(upstream, base_url=base_url)

    for path in ("models", "models", "generation?id=gen-1", "models/a/b/endpoints"):
        await client.read("GET", path, Timing())

    assert [str(request.url) for request in upstream.requests] == [
        f"{base}/models",
        f"{base}/models",
        f"{base}/generation?id=gen-1",
        f"{base}/models/a/b/endpoints",
    ]


async def test_paths_with_a_query_are_not_kept_so_ids_cannot_grow_memory() -> None:
    upstream = Upstream(httpx.Response(200))
    client = client_for(upstream)

    for n in range(20):
        await client.read("GET", f"generation?id=gen-{n}", Timing())
    await client.read("GET", "models", Timing())

    assert list(client._urls) == ["models"]


async def test_a_post_sends_its_json_body_with_type_and_length() -> None:
    upstream = Upstream(httpx.Response(200, content=b"{}"))
    client = client_for(upstream)
    content = b'{"model": "m", "messages": []}'

    await client.read("POST", "chat/completions", Timing(), content)

    [request] = upstream.requests
    assert request.method == "POST"
    assert request.content == content
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(content))
    assert request.headers["authorization"] == f"Bearer {KEY}"


async def test_without_a_key_no_authorization_is_sent() -> None:
    upstream = Upstream(httpx.Response(200))
    client = client_for(upstream, api_key="")

    await client.read("GET", "models", Timing())

    assert "authorization" not in upstream.requests[0].headers


async def test_the_timeouts_deadline_and_size_cap_reach_the_transport() -> None:
    upstream = Upstream(httpx.Response(200, content=b"x"))
    client = client_for(
        upstream,
        timeout=httpx.Timeout(7.0, connect=2.0),
        max_response_bytes=1234,
        deadline_seconds=None,
    )

    await client.read("GET", "models", Timing())
    body = await client.open("GET", "models", Timing())
    await body.aclose()

    whole, streamed = (request.extensions for request in upstream.requests)
    timeouts = {"connect": 2.0, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert whole["timeout"] == timeouts and streamed["timeout"] == timeouts
    assert whole["max_body_bytes"] == 1234
    assert "max_body_bytes" not in streamed  # a body read piece by piece is its reader's to bound
    assert whole["deadline"] is None and streamed["deadline"] is None


async def test_without_timeouts_every_phase_waits_two_minutes() -> None:
    upstream = Upstream(httpx.Response(200))
    client = client_for(upstream, deadline_seconds=9.5)

    await client.read("GET", "models", Timing())

    extensions = upstream.requests[0].extensions
    assert extensions["timeout"] == {"connect": 120.0, "read": 120.0, "write": 120.0, "pool": 120.0}
    assert extensions["deadline"] == 9.5


async def test_closing_the_client_closes_its_transport() -> None:
    upstream = Upstream(httpx.Response(200))
    client = client_for(upstream)

    await client.aclose()

    assert upstream.closed


# --- answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 299])
async def test_any_2xx_is_an_answer(status: int) -> None:
    upstream = Upstream(httpx.Response(status, content=b"ok"))

    assert await client_for(upstream).read("GET", "models", Timing()) == b"ok"


@pytest.mark.parametrize("status", [199, 300, 304, 400, 500])
async def test_anything_else_is_an_upstream_status_error_with_its_message(status: int) -> None:
    upstream = Upstream(failure(status, b'{"error": {"message": "not today"}}'))

    with pytest.raises(UpstreamStatusError) as caught:
        await client_for(upstream).read("GET", "models", Timing())

    assert caught.value.status_code == status
    assert caught.value.message == "not today"
    assert len(upstream.requests) == 1


async def test_a_failed_answer_without_a_body_is_named_by_its_reason() -> None:
    upstream = Upstream(failure(418))

    with pytest.raises(UpstreamStatusError, match="Upstream returned 418: I'm a teapot"):
        await client_for(upstream).read("GET", "models", Timing())


async def test_a_failed_answer_passes_its_retry_after_on() -> None:
    upstream = Upstream(failure(429, b"slow down", retry_after="30"))

    with pytest.raises(UpstreamStatusError) as caught:
        await client_for(upstream).read("GET", "models", Timing())

    assert caught.value.retry_after == 30.0
    assert caught.value.message == "slow down"
    assert len(upstream.requests) == 1  # 30 s is past RETRY_MAX_SECONDS: not retried


class Pieces(httpx.AsyncByteStream):
    """A streamed body, counting the pieces read and whether it was closed."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.read = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.read += 1
            yield piece

    async def aclose(self) -> None:
        self.closed = True


async def test_a_failed_answer_is_read_only_up_to_64_kib_and_closed() -> None:
    piece = b"e" * 16 * 1024
    stream = Pieces([piece] * 100)
    upstream = Upstream(httpx.Response(500, stream=stream))

    with pytest.raises(UpstreamStatusError) as caught:
        await client_for(upstream).read("GET", "models", Timing())

    assert stream.read == 4  # 64 KiB in pieces of 16 KiB, not the 1.6 MB sent
    assert stream.closed
    assert caught.value.message == "e" * 500


async def test_a_failed_answer_cut_mid_piece_is_cut_at_64_kib() -> None:
    captured: list[bytes] = []
    original = base_client._read_bounded

    async def spy(body: base_client.Body, limit: int) -> bytes:
        data = await original(body, limit)
        captured.append(data)
        return data

    stream = Pieces([b"a" * 50_000, b"b" * 50_000])
    upstream = Upstream(httpx.Response(500, stream=stream))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base_client, "_read_bounded", spy)
        with pytest.raises(UpstreamStatusError):
            await client_for(upstream).read("GET", "models", Timing())

    assert captured == [b"a" * 50_000 + b"b" * (64 * 1024 - 50_000)]


async def test_a_short_failed_answer_is_read_whole() -> None:
    stream = Pieces([b'{"error": ', b'{"message": "two pieces"}}'])
    upstream = Upstream(httpx.Response(503, stream=stream))

    with pytest.raises(UpstreamStatusError) as caught:
        await client_for(upstream, attempts=1).read("GET", "models", Timing())

    assert caught.value.message == "two pieces"
    assert stream.closed


async def test_a_successful_body_read_whole_is_closed() -> None:
    stream = Pieces([b"one ", b"two"])
    upstream = Upstream(httpx.Response(200, stream=stream))

    assert await client_for(upstream).read("GET", "models", Timing()) == b"one two"
    assert stream.closed


async def test_a_body_opened_is_read_piece_by_piece() -> None:
    upstream = Upstream(httpx.Response(200, stream=Pieces([b"one ", b"two"])))
    body = await client_for(upstream).open("GET", "models", Timing())

    first, second, end = await body.next(), await body.next(), await body.next()

    assert first is not None and first[0] == b"one "
    assert second is not None and second[0] == b"two"
    assert end is None
    assert body.timing.end >= second[1] >= first[1] > 0


# --- retries -------------------------------------------------------------------------------


async def test_a_retried_read_counts_its_attempts_and_waits_between_them() -> None:
    waits: list[float] = []
    upstream = Upstream(failure(503), failure(503), httpx.Response(200, content=b"ok"))
    timing = Timing()

    assert await client_for(upstream, waits).read("GET", "models", timing) == b"ok"

    assert len(upstream.requests) == 3
    assert timing.attempts == 3
    assert len(waits) == 2 and all(0.5 <= wait <= 8.0 for wait in waits)
    assert timing.began <= timing.sent <= timing.ended
    assert timing.ended > 0


async def test_retries_stop_after_the_attempts_and_raise_the_last_error() -> None:
    waits: list[float] = []
    upstream = Upstream(failure(502, b"first"), failure(503, b"second"), failure(504, b"third"))
    timing = Timing()

    with pytest.raises(UpstreamStatusError) as caught:
        await client_for(upstream, waits, attempts=3).read("GET", "models", timing)

    assert caught.value.status_code == 504 and caught.value.message == "third"
    assert len(upstream.requests) == 3
    assert timing.attempts == 3
    assert len(waits) == 2
    assert timing.ended >= timing.sent > 0


async def test_the_same_body_is_sent_again_on_a_retry() -> None:
    upstream = Upstream(failure(429, retry_after="1"), httpx.Response(200))
    content = b'{"model": "m"}'

    await client_for(upstream, []).read("POST", "chat/completions", Timing(), content)

    assert [request.content for request in upstream.requests] == [content, content]
    assert [request.headers["content-length"] for request in upstream.requests] == ["14", "14"]


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (UpstreamConnectionError("refused", before_answer=True, written=False), 3),
        (UpstreamTimeoutError("connect", during_connect=True), 3),
        (UpstreamTimeoutError("read"), 1),
        (UpstreamCertificateError("bad certificate"), 1),
        (UpstreamConnectionError("reset mid-answer"), 1),
    ],
)
async def test_a_transport_failure_is_retried_only_when_nothing_was_written(
    error: Exception, sent: int
) -> None:
    upstream = Upstream(error)
    timing = Timing()

    with pytest.raises(type(error)):
        await client_for(upstream, []).read("GET", "models", timing)

    assert len(upstream.requests) == sent
    assert timing.attempts == sent
    assert timing.ended >= timing.sent > 0


async def test_an_error_of_ours_is_never_retried() -> None:
    upstream = Upstream(RuntimeError("a bug"))
    timing = Timing()

    with pytest.raises(RuntimeError, match="a bug"):
        await client_for(upstream, []).read("GET", "models", timing)

    assert len(upstream.requests) == 1
    assert timing.ended > 0 and timing.ended >= timing.began


async def test_every_retry_is_logged_with_its_status_attempt_and_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waits: list[float] = []
    upstream = Upstream(
        failure(503),
        UpstreamConnectionError("refused", before_answer=True, written=False),
        httpx.Response(200),
    )

    with caplog.at_level(logging.WARNING, logger=base_client.__name__):
        await client_for(upstream, waits, attempts=4).read("GET", "models", Timing())

    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        f"RETRY | GET models | status=503 | attempt=1/4 | wait={waits[0]:.2f}s",
        f"RETRY | GET models | status=UpstreamConnectionError | attempt=2/4 | wait={waits[1]:.2f}s",
    ]
    assert all(record.levelno == logging.WARNING for record in caplog.records)


async def test_the_default_wait_sleeps_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    await base_client.retry_sleep(1.5)

    assert slept == [1.5]


async def test_without_a_sleep_of_its_own_the_client_waits_with_retry_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(base_client, "retry_sleep", record)
    upstream = Upstream(failure(503, retry_after="2"), httpx.Response(200))
    client = BaseClient(upstream.transport(), base_url="http://upstream.test")

    await client.read("GET", "models", Timing())

    assert waits == [2.0]
    assert client.retry_policy == RetryPolicy()
    assert "authorization" not in upstream.requests[0].headers  # no key unless given


# --- another transport's answer, held to the deadline --------------------------------------


def trickling(pause: float) -> httpx.Response:
    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield b" "
            await asyncio.sleep(pause)

    return httpx.Response(200, content=trickle())


async def test_an_answer_within_the_deadline_is_read_whole() -> None:
    upstream = Upstream(httpx.Response(200, stream=Pieces([b"a", b"b"])))
    timing = Timing()

    body = await client_for(upstream, deadline_seconds=BOUND).read("GET", "models", timing)

    assert body == b"ab"
    assert timing.ended >= timing.sent > 0


async def test_an_answer_within_the_deadline_is_read_piece_by_piece() -> None:
    upstream = Upstream(httpx.Response(200, stream=Pieces([b"a", b"b"])))
    client = client_for(upstream, deadline_seconds=BOUND, timeout=httpx.Timeout(0.1))

    body = await client.open("GET", "models", Timing())
    pieces = [await body.next(), await body.next(), await body.next()]

    assert [piece[0] if piece else None for piece in pieces] == [b"a", b"b", None]


@pytest.mark.parametrize("whole", [True, False])
async def test_an_answer_past_its_deadline_already_is_not_read(whole: bool) -> None:
    upstream = Upstream(httpx.Response(200, stream=Pieces([b"late"])))
    client = client_for(upstream, deadline_seconds=0.2)
    body = await client.open("GET", "models", Timing())
    await asyncio.sleep(0.3)

    with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=0.2 s"):
        await (body.read() if whole else body.next())


async def test_a_slow_head_from_another_transport_ends_at_the_deadline() -> None:
    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(BOUND * 2)
            return httpx.Response(200)

    client = BaseClient(
        Slow(),
        base_url="http://upstream.test",
        retry_policy=RetryPolicy(attempts=3),
        deadline_seconds=0.3,
        sleep=lambda _: asyncio.sleep(0),
    )
    timing = Timing()

    with pytest.raises(
        UpstreamTimeoutError,
        match=r"^Upstream timed out: the answer took longer than UPSTREAM_DEADLINE_SECONDS=0.3 s$",
    ):
        await asyncio.wait_for(client.read("GET", "models", timing), BOUND)

    assert timing.attempts == 1  # the request was written: never sent again


async def test_a_read_timeout_shorter_than_what_is_left_of_the_deadline_ends_a_silence() -> None:
    # The transport's own read timeout fires first: the client sets no timer of its own, so
    # the mock's silence is only ended by the deadline once less than the read timeout is left.
    upstream = Upstream(trickling(0.05))
    client = client_for(upstream, deadline_seconds=0.6, timeout=httpx.Timeout(0.2))
    body = await client.open("GET", "models", Timing())

    with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=0.6"):
        await asyncio.wait_for(_drain(body), BOUND)


async def _drain(body: base_client.Body) -> None:
    while await body.next() is not None:
        pass


class FrozenClock:
    """The client's clock, moved only by the test: the deadline's arithmetic without waiting."""

    def __init__(self) -> None:
        self.time = 1000.0

    def __call__(self) -> float:
        return self.time


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(base_client, "now", frozen)
    return frozen


def silent() -> httpx.Response:
    async def nothing() -> AsyncIterator[bytes]:
        await asyncio.sleep(BOUND * 2)
        yield b""

    return httpx.Response(200, stream=_Stream(nothing()))


class _Stream(httpx.AsyncByteStream):
    def __init__(self, parts: AsyncIterator[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._parts:
            yield part


@pytest.mark.parametrize("whole", [True, False])
async def test_what_is_left_of_the_deadline_bounds_a_late_body(
    clock: FrozenClock, whole: bool
) -> None:
    # Sent 29.7 s ago by the client's clock: 0.3 s of the 30 s deadline are left, not 30.
    client = client_for(Upstream(silent()), deadline_seconds=30.0, timeout=httpx.Timeout(None))
    body = await client.open("GET", "models", Timing())
    clock.time += 29.7

    with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=30 s"):
        await asyncio.wait_for(body.read() if whole else body.next(), BOUND)


@pytest.mark.parametrize("whole", [True, False])
async def test_a_body_ready_within_what_is_left_of_the_deadline_is_read(
    clock: FrozenClock, whole: bool
) -> None:
    upstream = Upstream(httpx.Response(200, stream=Pieces([b"in time"])))
    client = client_for(upstream, deadline_seconds=30.0, timeout=httpx.Timeout(None))
    body = await client.open("GET", "models", Timing())
    clock.time += 29.5

    if whole:
        assert await body.read() == b"in time"
        assert body.timing.end == clock.time
    else:
        piece = await body.next()
        assert piece == (b"in time", clock.time)
        assert await body.next() is None
        assert body.timing.end == clock.time


@pytest.mark.parametrize("whole", [True, False])
async def test_a_body_read_exactly_at_the_deadline_is_too_late(
    clock: FrozenClock, whole: bool
) -> None:
    upstream = Upstream(httpx.Response(200, stream=Pieces([b"just late"])))
    client = client_for(upstream, deadline_seconds=30.0)
    body = await client.open("GET", "models", Timing())
    clock.time += 30.0

    with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=30 s"):
        await (body.read() if whole else body.next())


async def test_without_a_read_timeout_the_deadline_alone_ends_a_silence() -> None:
    client = client_for(
        Upstream(silent()), deadline_seconds=0.3, timeout=httpx.Timeout(5.0, read=None)
    )
    body = await client.open("GET", "models", Timing())

    with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=0.3 s"):
        await asyncio.wait_for(body.next(), BOUND)


async def test_a_failed_answer_is_read_until_64_kib_have_arrived() -> None:
    stream = Pieces([b"a" * (64 * 1024 - 1), b"b" * 10, b"c" * 10])
    upstream = Upstream(httpx.Response(500, stream=stream))

    with pytest.raises(UpstreamStatusError):
        await client_for(upstream).read("GET", "models", Timing())

    assert stream.read == 2  # one byte short of the limit: the next piece is read too


class ClosingLate(Pieces):
    """A long failed answer whose first 64 KiB take 2 s to arrive, and whose closing (the rest
    is not read) takes 5 s more, by the client's clock."""

    def __init__(self, clock: FrozenClock) -> None:
        super().__init__([])
        self.clock = clock

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.clock.time += 2.0
        yield b"b" * 64 * 1024
        yield b"never read"

    async def aclose(self) -> None:
        self.clock.time += 5.0
        await super().aclose()


async def test_a_failed_answers_latency_ends_at_its_last_byte_not_its_closing(
    clock: FrozenClock,
) -> None:
    upstream = Upstream(httpx.Response(400, stream=ClosingLate(clock)))
    timing = Timing()

    with pytest.raises(UpstreamStatusError):
        await client_for(upstream).read("GET", "models", timing)

    assert (timing.sent, timing.ended) == (1000.0, 1002.0)
    assert timing.latency == 2.0


async def test_a_body_that_fails_mid_read_still_records_when_it_ended() -> None:
    timing = Timing()
    client = client_for(Upstream(silent()), deadline_seconds=0.3, timeout=httpx.Timeout(None))

    with pytest.raises(UpstreamTimeoutError):
        await asyncio.wait_for(client.read("GET", "models", timing), BOUND)

    assert timing.ended >= timing.sent > 0


async def test_over_our_own_transport_the_body_is_timed_at_the_socket() -> None:
    async def ok(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(OK)
        await writer.drain()

    async with raw_upstream(ok) as up:
        client = BaseClient(WireTransport(trust_env=False), base_url=up.url)
        try:
            timing = Timing()
            body = await asyncio.wait_for(client.open("GET", "models", timing), BOUND)
            assert isinstance(body, WireBody)  # its times are the transport's own
            assert await body.read() == b"ok"
            assert timing.sent == body.timing.sent > 0
            await body.aclose()
        finally:
            await client.aclose()


# --- the transport of a process ------------------------------------------------------------


@pytest.mark.parametrize("trust_env", [True, False])
async def test_the_wire_transport_is_built_by_default_with_its_limit_and_proxies(
    monkeypatch: pytest.MonkeyPatch, trust_env: bool
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    transport = build_transport(max_connections=7, trust_env=trust_env)
    try:
        assert isinstance(transport, WireTransport)
        assert transport._max_connections == 7
        proxy = transport._proxies.proxy_for_url(httpx.URL("https://openrouter.ai/api/v1"))
        assert (proxy is not None) is trust_env
    finally:
        await transport.aclose()


@pytest.mark.parametrize("trust_env", [True, False])
async def test_the_httpx_transport_is_built_when_asked(trust_env: bool) -> None:
    transport = build_transport("httpx", max_connections=3, trust_env=trust_env)
    try:
        assert isinstance(transport, HttpxTransport)
        assert transport._max_connections == 3
        assert transport._client.trust_env is trust_env
    finally:
        await transport.aclose()


def test_an_unknown_transport_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="Unknown upstream transport 'carrier-pigeon'"):
        build_transport("carrier-pigeon", max_connections=1)  # type: ignore[arg-type]


class Recorder:
    """Stands for a transport class: records what it was built with."""

    def __init__(self) -> None:
        self.built: list[dict[str, object]] = []

    def __call__(self, **options: object) -> Recorder:
        self.built.append(options)
        return self


def test_the_transport_settings_reach_the_transport_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    httpx_kind, wire_kind = Recorder(), Recorder()
    monkeypatch.setattr(base_client, "HttpxTransport", httpx_kind)
    monkeypatch.setattr(base_client, "WireTransport", wire_kind)
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"

    build_transport("httpx", max_connections=4)
    build_transport(
        "httpx",
        max_connections=5,
        httpx_options=HttpxOptions(http2=True, client_cert=cert, client_key=key),
        trust_env=False,
    )
    build_transport(max_connections=6)

    assert httpx_kind.built == [
        {"max_connections": 4, "options": HttpxOptions(), "trust_env": True},
        {
            "max_connections": 5,
            "options": HttpxOptions(http2=True, client_cert=cert, client_key=key),
            "trust_env": False,
        },
    ]
    assert wire_kind.built == [{"max_connections": 6, "trust_env": True}]
