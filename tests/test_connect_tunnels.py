"""Opening a tunnel through a proxy, byte by byte: what an HTTP proxy is sent for CONNECT and a
SOCKS5 proxy for its handshake, and what each answer the proxy may give becomes.

The proxies here are loopback listeners that play a script and record what they received, so
every refusal, every odd answer and every way of hanging up can be asked for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx
import pytest

from src.services.base.connect import Address
from src.services.base.exceptions import UpstreamConnectionError
from src.services.base.transport import WireBody, WireTransport

pytestmark = pytest.mark.anyio

TIMEOUTS = {"connect": 10.0, "read": 10.0, "write": 10.0, "pool": 10.0}
BOUND = 20.0
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

Script = Callable[["ScriptedProxy", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class ScriptedProxy:
    """A proxy on loopback whose every connection runs `script`; `received` keeps what the
    client sent it, in order."""

    script: Script
    port: int = 0
    received: list[bytes] = field(default_factory=list)

    async def read(self, reader: asyncio.StreamReader, size: int) -> bytes:
        data = await reader.readexactly(size)
        self.received.append(data)
        return data

    async def read_head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.received.append(head)
        return head


@contextlib.asynccontextmanager
async def scripted_proxy(script: Script) -> AsyncIterator[ScriptedProxy]:
    proxy = ScriptedProxy(script)
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await proxy.script(proxy, reader, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client hung up, or the test is over
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in handlers:  # a script still writing to a client that left
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def fetch(url: str) -> tuple[httpx.Response, bytes]:
    """One GET through a transport built now (so it reads the proxy variables just set)."""
    wire = WireTransport()
    try:
        sent = httpx.Request("GET", url, extensions={"timeout": TIMEOUTS})
        response = await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
        assert isinstance(response.stream, WireBody)
        body = await asyncio.wait_for(response.stream.read(), BOUND)
        await response.stream.aclose()
        return response, body
    finally:
        await wire.aclose()


async def refused(url: str) -> UpstreamConnectionError:
    with pytest.raises(UpstreamConnectionError) as caught:
        await fetch(url)
    return caught.value


# --- HTTP CONNECT -----------------------------------------------------------------------------


def answering(*pieces: bytes) -> Script:
    """Reads the CONNECT, then writes `pieces` one read apart and hangs up."""

    async def script(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await proxy.read_head(reader)
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)

    return script


def connect_proxy(monkeypatch: pytest.MonkeyPatch, port: int, credentials: str = "") -> str:
    monkeypatch.setenv("HTTPS_PROXY", f"http://{credentials}127.0.0.1:{port}")
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("credentials", "pieces", "why", "transient"),
    [
        (
            "",
            [b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"],
            "407 (the proxy asks for credentials: put them in the proxy URL "
            "(http://user:password@host:port))",
            False,
        ),
        (
            "user:pa%40ss@",
            [b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"],
            "407 (proxy authentication failed: check the user and password in the proxy URL)",
            False,
        ),
        ("", [b"HTTP/1.1 502 Bad Gateway\r\nvia: p\r\n\r\n"], "502 (502 Bad Gateway)", True),
        ("", [b"HTTP/1.1 503 Service Unavailable\r\n\r\n"], "503 (503 Service Unavailable)", True),
        ("", [b"HTTP/1.1 500 Internal Error\r\n\r\n"], "500 (500 Internal Error)", True),
        ("", [b"HTTP/1.1 499 Client Closed\r\n\r\n"], "499 (499 Client Closed)", False),
        ("", [b"HTTP/1.1 403\r\n\r\n"], "403 (403)", False),
        ("", [b"HTTP/1.1 40", b"3 Forbidden\r\n", b"\r\n"], "403 (403 Forbidden)", False),
        ("", [b"HTTP/1.1 300 Multiple Choices\r\n\r\n"], "300 (300 Multiple Choices)", False),
        ("", [b"HTTP/1.1 199 Odd\r\n\r\n"], "199 (199 Odd)", False),
        (
            "",
            [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
            "invalid answer (not an HTTP answer: 'SSH-2.0-OpenSSH_9.6')",
            False,
        ),
        (
            "",
            [b"HTTP/1.1 abc Odd\r\n\r\n"],
            "invalid answer (not an HTTP answer: 'HTTP/1.1 abc Odd')",
            False,
        ),
        ("", [b"HTTP/1.1\r\n\r\n"], "invalid answer (not an HTTP answer: 'HTTP/1.1')", False),
    ],
)
async def test_a_refused_connect_names_the_proxy_the_target_and_why(
    credentials: str,
    pieces: list[bytes],
    why: str,
    transient: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with scripted_proxy(answering(*pieces)) as proxy:
        label = connect_proxy(monkeypatch, proxy.port, credentials)
        error = await refused("https://upstream.test:8443/api/v1/models")

    assert error.detail == (
        f"Upstream connection failed: proxy {label} refused CONNECT upstream.test:8443: {why}"
    )
    assert (error.before_answer, error.written) == (transient, False)
    authorization = b""
    if credentials:
        authorization = b"Proxy-Authorization: Basic " + base64.b64encode(b"user:pa@ss") + b"\r\n"
    assert proxy.received == [
        b"CONNECT upstream.test:8443 HTTP/1.1\r\nHost: upstream.test:8443\r\n"
        + authorization
        + b"\r\n"
    ]


async def test_connect_to_an_ipv6_upstream_puts_its_address_in_brackets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with scripted_proxy(answering(b"HTTP/1.1 403 Forbidden\r\n\r\n")) as proxy:
        label = connect_proxy(monkeypatch, proxy.port)
        error = await refused("https://[::1]:8443/")

    assert proxy.received == [b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"]
    assert error.detail == (
        f"Upstream connection failed: proxy {label} refused CONNECT [::1]:8443: 403 (403 Forbidden)"
    )


async def test_a_proxy_that_hangs_up_before_answering_connect_is_a_retryable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with scripted_proxy(answering(b"HTTP/1.1 200")) as proxy:
        label = connect_proxy(monkeypatch, proxy.port)
        error = await refused("https://upstream.test:8443/")

    assert error.detail == (
        f"Upstream connection failed: proxy {label} closed the connection before answering "
        "CONNECT upstream.test:8443"
    )
    assert (error.before_answer, error.written) == (True, False)


async def test_an_endless_answer_to_connect_is_refused_past_64_kib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent_before_refusal = asyncio.Event()

    async def endless(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await proxy.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(64):  # 64 KiB of one header line that never ends
            writer.write(b"x" * 1024)
            await writer.drain()
        sent_before_refusal.set()
        for _ in range(64):
            writer.write(b"x" * 1024)
            await writer.drain()
            await asyncio.sleep(0.01)

    async with scripted_proxy(endless) as proxy:
        label = connect_proxy(monkeypatch, proxy.port)
        error = await refused("https://upstream.test:8443/")

    assert sent_before_refusal.is_set()
    assert error.detail == (
        f"Upstream connection failed: proxy {label} sent an over-long answer to CONNECT "
        "upstream.test:8443"
    )
    assert (error.before_answer, error.written) == (False, False)


# --- SOCKS5 -----------------------------------------------------------------------------------


def socks_proxy(monkeypatch: pytest.MonkeyPatch, port: int, credentials: str = "") -> str:
    monkeypatch.setenv("ALL_PROXY", f"socks5://{credentials}127.0.0.1:{port}")
    return f"socks5://127.0.0.1:{port}"


def socks(
    *,
    method: bytes = b"\x00",
    auth_reply: bytes = b"\x01\x00",
    reply: bytes = b"\x05\x00\x00\x01" + bytes(6),
    serve_http: bool = False,
) -> Script:
    """A SOCKS5 proxy that answers the greeting with `method`, a password with `auth_reply`,
    the CONNECT with `reply`; then, with `serve_http`, answers one HTTP request itself (as the
    far end of the tunnel would)."""

    async def script(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        _, count = await proxy.read(reader, 2)
        await proxy.read(reader, count)
        writer.write(b"\x05" + method)
        if method == b"\x02":
            _, user_length = await proxy.read(reader, 2)
            await proxy.read(reader, user_length)
            (password_length,) = await proxy.read(reader, 1)
            await proxy.read(reader, password_length)
            writer.write(auth_reply)
            if auth_reply[1:] != b"\x00":
                return
        elif method != b"\x00":
            return
        _, _, _, kind = await proxy.read(reader, 4)
        length = (await proxy.read(reader, 1))[0] if kind == 3 else {1: 4, 4: 16}[kind]
        await proxy.read(reader, length + 2)
        writer.write(reply)
        if serve_http:
            await proxy.read_head(reader)
            writer.write(ANSWER)
            await writer.drain()
            await reader.read()

    return script


NAME_REQUEST = b"\x05\x01\x00\x03\x0dupstream.test\x20\xfb"  # upstream.test:8443


@pytest.mark.parametrize(
    ("bound", "address"),
    [
        (b"\x01" + bytes(4), "an IPv4 address"),
        (b"\x04" + bytes(16), "an IPv6 address"),
        (b"\x03\x09proxy.lan", "a name"),
    ],
)
async def test_a_socks5_tunnel_is_opened_whatever_bound_address_the_proxy_reports(
    bound: bytes, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reply = b"\x05\x00\x00" + bound + b"\x04\x38"
    async with scripted_proxy(socks(reply=reply, serve_http=True)) as proxy:
        socks_proxy(monkeypatch, proxy.port)
        response, body = await fetch("http://upstream.test:8443/api/v1/models")

    assert (response.status_code, body) == (200, b"ok"), address
    *handshake, http = proxy.received
    assert b"".join(handshake) == b"\x05\x01\x00" + NAME_REQUEST
    assert http.startswith(b"GET /api/v1/models HTTP/1.1\r\n")


async def test_socks5_credentials_are_offered_and_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    script = socks(method=b"\x02", serve_http=True)
    async with scripted_proxy(script) as proxy:
        socks_proxy(monkeypatch, proxy.port, "user:pa%40ss@")
        response, body = await fetch("http://upstream.test:8443/")

    assert (response.status_code, body) == (200, b"ok")
    assert proxy.received[:6] == [
        b"\x05\x02",
        b"\x00\x02",
        b"\x01\x04",
        b"user",
        b"\x05",
        b"pa@ss",
    ]


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.2", b"\x01\x7f\x00\x00\x02"),
        ("[::1]", b"\x04" + bytes(15) + b"\x01"),
    ],
)
async def test_a_socks5_upstream_given_by_address_is_sent_as_an_address(
    host: str, address: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scripted_proxy(socks(serve_http=True)) as proxy:
        socks_proxy(monkeypatch, proxy.port)
        response, _ = await fetch(f"http://{host}:8443/")

    assert response.status_code == 200
    assert proxy.received[2] + proxy.received[3] == b"\x05\x01\x00" + address + b"\x20\xfb"


REFUSED = "Upstream connection failed: SOCKS proxy {label} refused upstream.test:8443: {why}"


@pytest.mark.parametrize(
    ("credentials", "script", "why", "transient"),
    [
        (
            "user:pw@",
            socks(method=b"\x02", auth_reply=b"\x01\x01"),
            "proxy authentication failed: check the user and password in its URL",
            False,
        ),
        ("", socks(method=b"\xff"), "it asks for an authentication method we do not offer", False),
        ("", socks(method=b"\x02"), "it asks for an authentication method we do not offer", False),
        ("", socks(reply=b"\x05\x01\x00\x01" + bytes(6)), "general failure", True),
        (
            "",
            socks(reply=b"\x05\x02\x00\x01" + bytes(6)),
            "connection not allowed by ruleset",
            False,
        ),
        ("", socks(reply=b"\x05\x03\x00\x01" + bytes(6)), "network unreachable", True),
        ("", socks(reply=b"\x05\x04\x00\x01" + bytes(6)), "host unreachable", True),
        ("", socks(reply=b"\x05\x05\x00\x01" + bytes(6)), "connection refused", False),
        ("", socks(reply=b"\x05\x06\x00\x01" + bytes(6)), "TTL expired", True),
        ("", socks(reply=b"\x05\x07\x00\x01" + bytes(6)), "command not supported", False),
        ("", socks(reply=b"\x05\x08\x00\x01" + bytes(6)), "address type not supported", False),
        ("", socks(reply=b"\x05\x09\x00\x01" + bytes(6)), "reply 9", False),
    ],
)
async def test_a_socks5_refusal_names_the_proxy_the_target_and_why(
    credentials: str,
    script: Script,
    why: str,
    transient: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with scripted_proxy(script) as proxy:
        label = socks_proxy(monkeypatch, proxy.port, credentials)
        error = await refused("https://upstream.test:8443/")

    assert error.detail == REFUSED.format(label=label, why=why)
    assert (error.before_answer, error.written) == (transient, False)


async def test_a_socks5_proxy_that_hangs_up_mid_handshake_is_a_retryable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def hangs_up(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await proxy.read(reader, 3)
        writer.write(b"\x05")  # half of its answer to the greeting

    async with scripted_proxy(hangs_up) as proxy:
        label = socks_proxy(monkeypatch, proxy.port)
        error = await refused("https://upstream.test:8443/")

    assert error.detail == (
        f"Upstream connection failed: proxy {label} closed the connection while opening the tunnel"
    )
    assert (error.before_answer, error.written) == (True, False)


def padded_refusal(size: int) -> bytes:
    """A 403 answer to CONNECT, exactly `size` bytes long."""
    start, end = b"HTTP/1.1 403 Forbidden\r\nx-pad: ", b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize(
    ("size", "why"),
    [
        (64 * 1024, "refused CONNECT upstream.test:8443: 403 (403 Forbidden)"),
        (64 * 1024 + 1, "sent an over-long answer to CONNECT upstream.test:8443"),
    ],
)
async def test_an_answer_to_connect_may_take_64_kib_and_no_more(
    size: int, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scripted_proxy(answering(padded_refusal(size))) as proxy:
        label = connect_proxy(monkeypatch, proxy.port)
        error = await refused("https://upstream.test:8443/")

    assert error.detail == f"Upstream connection failed: proxy {label} {why}"


async def test_an_http_upstream_goes_to_an_http_proxy_as_an_absolute_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def forward(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await proxy.read_head(reader)
        writer.write(ANSWER)
        await writer.drain()
        await reader.read()

    async with scripted_proxy(forward) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        response, body = await fetch("http://upstream.test:8080/api/v1/models")

    assert (response.status_code, body) == (200, b"ok")
    [head] = proxy.received
    assert head.startswith(b"GET http://upstream.test:8080/api/v1/models HTTP/1.1\r\n")


async def test_a_proxy_given_by_name_is_found_through_the_resolver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    async with scripted_proxy(answering(b"HTTP/1.1 403 Forbidden\r\n\r\n")) as proxy:

        async def resolver(host: str, port: int) -> Sequence[Address]:
            asked.append(f"{host}:{port}")
            return [(socket.AF_INET, ("127.0.0.1", proxy.port))]

        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
        wire = WireTransport(resolver=resolver)
        try:
            sent = httpx.Request("GET", "https://upstream.test/", extensions={"timeout": TIMEOUTS})
            with pytest.raises(UpstreamConnectionError) as refused:
                await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
        finally:
            await wire.aclose()

    assert asked == ["proxy.test:3128"]  # the proxy's name, never the upstream's
    assert refused.value.detail.endswith("refused CONNECT upstream.test:443: 403 (403 Forbidden)")


@pytest.mark.parametrize(
    "sent",
    [
        b"\x05",  # half of its answer to the greeting
        b"\x05\x00\x05\x00\x00\x03",  # its reply, up to the length of the bound name
        b"\x05\x00\x05\x00\x00\x03\x09prox",  # ... and part of that name
    ],
)
async def test_a_socks5_proxy_that_hangs_up_anywhere_in_the_handshake_is_a_retryable_error(
    sent: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs_up(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await proxy.read(reader, 3)
        writer.write(sent)
        await writer.drain()
        await asyncio.sleep(0.2)  # the client reads what came, then the end

    async with scripted_proxy(hangs_up) as proxy:
        label = socks_proxy(monkeypatch, proxy.port)
        error = await refused("https://upstream.test:8443/")

    assert error.detail == (
        f"Upstream connection failed: proxy {label} closed the connection while opening the tunnel"
    )
    assert (error.before_answer, error.written) == (True, False)


async def test_a_socks5_proxy_answering_a_byte_at_a_time_is_understood(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def trickles(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await proxy.read(reader, 3)
        replies = b"\x05\x00" + b"\x05\x00\x00\x03\x09proxy.lan\x04\x38"
        for index, byte in enumerate(replies):
            if index == 2:
                await proxy.read(reader, len(NAME_REQUEST))
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.01)
        await proxy.read_head(reader)
        writer.write(ANSWER)
        await writer.drain()
        await reader.read()

    async with scripted_proxy(trickles) as proxy:
        socks_proxy(monkeypatch, proxy.port)
        response, body = await fetch("http://upstream.test:8443/")

    assert (response.status_code, body) == (200, b"ok")


@pytest.mark.parametrize(
    ("variable", "proxy_url", "detail", "transient"),
    [
        (
            "HTTPS_PROXY",
            "https://user:pw@127.0.0.1:3129",
            "Proxy https://127.0.0.1:3129 is not supported: the upstream transport speaks to "
            "http:// and socks5:// proxies only (check HTTPS_PROXY, HTTP_PROXY, ALL_PROXY)",
            False,
        ),
        (
            "ALL_PROXY",
            "socks5://user:pw@127.0.0.1:{port}",
            "Upstream connection failed: cannot reach proxy socks5://127.0.0.1:{port} "
            "(ConnectionRefusedError: Connect call failed ('127.0.0.1', {port}))",
            True,
        ),
    ],
)
async def test_a_proxy_that_cannot_be_used_is_named_never_with_its_password(
    variable: str, proxy_url: str, detail: str, transient: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
        port = closed.getsockname()[1]
        monkeypatch.setenv(variable, proxy_url.format(port=port))
        error = await refused("https://upstream.test:8443/")

    assert error.detail == detail.format(port=port)
    assert (error.before_answer, error.written) == (transient, False)


async def test_a_socks5_refusal_of_an_ipv6_upstream_puts_its_address_in_brackets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with scripted_proxy(socks(reply=b"\x05\x05\x00\x01" + bytes(6))) as proxy:
        label = socks_proxy(monkeypatch, proxy.port)
        error = await refused("https://[::1]:8443/")

    assert error.detail == (
        f"Upstream connection failed: SOCKS proxy {label} refused [::1]:8443: connection refused"
    )


async def test_a_socks5_proxy_that_hangs_up_instead_of_answering_the_password_is_retryable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def hangs_up(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await proxy.read(reader, 4)  # the greeting, offering a password
        writer.write(b"\x05\x02")
        _, user_length = await proxy.read(reader, 2)
        await proxy.read(reader, user_length)
        (password_length,) = await proxy.read(reader, 1)
        await proxy.read(reader, password_length)

    async with scripted_proxy(hangs_up) as proxy:
        label = socks_proxy(monkeypatch, proxy.port, "user:pw@")
        error = await refused("https://upstream.test:8443/")

    assert error.detail == (
        f"Upstream connection failed: proxy {label} closed the connection while opening the tunnel"
    )


async def test_after_a_200_to_connect_tls_begins_inside_the_tunnel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def agrees(
        proxy: ScriptedProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await proxy.read_head(reader)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await proxy.read(reader, 1)  # the first byte of what comes through the tunnel

    async with scripted_proxy(agrees) as proxy:
        connect_proxy(monkeypatch, proxy.port)
        with pytest.raises(UpstreamConnectionError) as failed:
            await fetch("https://upstream.test:8443/")

    assert proxy.received[1] == b"\x16"  # a TLS handshake record: the client's hello
    assert "refused CONNECT" not in failed.value.detail
