"""UPSTREAM_TRANSPORT=httpx end to end: the app on httpx's own transport, over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import respx
import trustme
from pydantic import SecretStr, ValidationError

from src.config import Settings
from src.main import create_app
from src.services.base.client import RetryPolicy
from src.services.base.exceptions import UpstreamCertificateError, UpstreamConnectionError
from src.services.base.httpx_transport import HttpxOptions, HttpxTransport
from src.services.base.timing import Timing
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget, connect_openrouter
from tests.conformance.conftest import no_proxies_from_the_environment  # noqa: F401
from tests.conformance.scripted_upstream import Connection, Received, ScriptedUpstream
from tests.helpers.app import Serve, make_settings, read_log, running
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.openrouter import (
    API_KEY,
    GENERATE,
    GPT,
    MODELS_BODY,
    UPSTREAM,
    completion_body,
    sse_response,
)
from tests.helpers.results import run_rows
from tests.helpers.upstream_server import LoopbackUpstream

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_proxies_from_the_environment")]


@pytest.fixture
def router() -> respx.MockRouter:
    # Not started: httpx's own transport must reach the loopback upstream over its socket,
    # not be answered by respx inside the process.
    return respx.MockRouter(base_url=UPSTREAM, assert_all_called=False)


@pytest.fixture
async def loopback(router: respx.MockRouter) -> AsyncIterator[LoopbackUpstream]:
    async with LoopbackUpstream(router, UPSTREAM) as server:
        yield server
    if server.errors:
        raise AssertionError(f"the loopback upstream failed: {server.errors!r}")


@pytest.fixture
async def service(
    tmp_path: Path, loopback: LoopbackUpstream, retry_waits: list[float]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, upstream_transport="httpx")
    async with Serve(loopback.base_url)(settings) as client:
        yield client


async def test_health_names_the_httpx_transport(service: httpx.AsyncClient) -> None:
    response = await service.get("/health")

    assert response.json()["transport"] == "httpx"


async def test_generate_over_httpx_answers_and_sends_the_key(
    service: httpx.AsyncClient, router: respx.MockRouter
) -> None:
    route = router.post("/chat/completions").respond(200, json=completion_body())

    response = await service.post("/generate", json=GENERATE)

    assert response.status_code == 200
    assert response.json()["text"] == completion_body()["choices"][0]["message"]["content"]
    assert response.json()["latency_seconds"] > 0
    assert route.call_count == 1
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(sent.content)["model"] == GPT


async def test_generate_streamed_over_httpx_sends_tokens_then_done(
    service: httpx.AsyncClient, router: respx.MockRouter
) -> None:
    router.post("/chat/completions").mock(return_value=sse_response())

    response = await service.post("/generate?stream=true", json=GENERATE)

    assert response.status_code == 200
    assert "event: token" in response.text
    assert "Hello" in response.text and " friend" in response.text
    assert response.text.rstrip().splitlines()[-2] == "event: done"


async def test_chat_completions_over_httpx_are_relayed_as_sent(
    service: httpx.AsyncClient, router: respx.MockRouter
) -> None:
    raw = json.dumps(completion_body(model=GPT), indent=1).encode()
    router.post("/chat/completions").respond(200, content=raw)

    response = await service.post(
        "/v1/chat/completions",
        json={"model": GPT, "messages": [{"role": "user", "content": "hi"}]},
    )

    assert response.status_code == 200
    assert response.content == raw


async def test_a_429_over_httpx_waits_its_retry_after(
    service: httpx.AsyncClient, router: respx.MockRouter, retry_waits: list[float]
) -> None:
    route = router.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow"}}),
            httpx.Response(200, json=completion_body()),
        ]
    )

    response = await service.post("/generate", json=GENERATE)

    assert response.status_code == 200
    assert route.call_count == 2
    assert retry_waits == [2.0]


async def test_upstream_cookies_are_not_kept_by_the_httpx_transport(
    service: httpx.AsyncClient, router: respx.MockRouter
) -> None:
    route = router.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json=completion_body(), headers={"set-cookie": "session=alice"}),
            httpx.Response(200, json=completion_body()),
        ]
    )

    await service.post("/generate", json={"model": "m/x", "prompt": "from alice"})
    await service.post("/generate", json={"model": "m/x", "prompt": "from bob"})

    assert "cookie" not in route.calls[1].request.headers


def refused_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_connection_over_httpx_is_retried_then_a_502(
    tmp_path: Path, retry_waits: list[float]
) -> None:
    settings = make_settings(tmp_path, upstream_transport="httpx")
    async with Serve(f"http://127.0.0.1:{refused_port()}/api/v1")(settings) as service:
        response = await service.post("/generate", json=GENERATE)

    assert response.status_code == 502
    assert "cannot reach" in response.json()["detail"]
    assert len(retry_waits) == settings.retry_attempts - 1


def test_an_unknown_transport_is_a_clear_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(tmp_path, upstream_transport="curl")

    message = str(caught.value)
    assert "upstream_transport" in message
    assert "'wire' or 'httpx'" in message


def test_client_certificate_without_the_httpx_transport_is_refused(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("a certificate")

    with pytest.raises(ValidationError, match="UPSTREAM_TRANSPORT=httpx"):
        make_settings(tmp_path, upstream_client_cert=tmp_path / "client.pem")


def test_the_transport_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_TRANSPORT", "httpx")
    monkeypatch.setenv("UPSTREAM_HTTP2", "true")

    settings = Settings(_env_file=None)

    assert settings.upstream_transport == "httpx"
    assert settings.upstream_http2


@dataclass
class TlsUpstream:
    """A loopback TLS server with a certificate from `ca`; it asks for a client certificate
    and records the subject of each one presented."""

    ca: trustme.CA
    client_subjects: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL
        server = await asyncio.start_server(self._answer, "127.0.0.1", 0, ssl=context)
        try:
            yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1"
        finally:
            server.close()
            await server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        if peer:
            self.client_subjects.append(str(peer.get("subjectAltName")))
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
            await writer.drain()
        writer.close()


def httpx_client(base_url: str, client_cert: Path | None = None) -> OpenRouterClient:
    return OpenRouterClient(
        HttpxTransport(max_connections=1, options=HttpxOptions(client_cert=client_cert)),
        base_url=base_url,
        timeout=httpx.Timeout(10.0),
        retry_policy=RetryPolicy(attempts=2, min_seconds=0, max_seconds=0),
    )


async def test_the_httpx_transport_trusts_ssl_cert_file_and_presents_the_client_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("gateway@example.org").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "client.pem")
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    upstream = TlsUpstream(ca)
    async with upstream.serving() as base_url:
        client = httpx_client(base_url, client_cert=tmp_path / "client.pem")
        try:
            assert await client.read("GET", "models", Timing()) == b"secure"
        finally:
            await client.aclose()

    assert len(upstream.client_subjects) == 1
    assert "gateway@example.org" in upstream.client_subjects[0]


async def test_an_untrusted_certificate_over_httpx_is_a_clear_error_not_retried(
    retry_waits: list[float],
) -> None:
    upstream = TlsUpstream(trustme.CA())  # a CA nobody trusts
    async with upstream.serving() as base_url:
        client = httpx_client(base_url)
        try:
            with pytest.raises(
                UpstreamCertificateError, match="certificate verify failed"
            ) as caught:
                await client.read("GET", "models", Timing())
        finally:
            await client.aclose()

    assert "127.0.0.1" in str(caught.value)
    assert "SSL_CERT_FILE" in str(caught.value)
    assert retry_waits == []


async def test_the_httpx_transport_goes_through_http_proxy_unless_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def answer(connection: Connection, _: Received) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nproxied")

    async with ScriptedUpstream() as proxy:
        proxy.script = answer
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/api/v1"))
        monkeypatch.setenv("NO_PROXY", "direct.invalid")
        proxied = httpx_client("http://upstream.invalid/api/v1")
        direct = httpx_client("http://direct.invalid/api/v1")
        try:
            assert await proxied.read("GET", "models", Timing()) == b"proxied"
            with pytest.raises(UpstreamConnectionError, match="direct.invalid"):
                await direct.read("GET", "models", Timing())
        finally:
            await proxied.aclose()
            await direct.aclose()

    # Absolute form: the request names its real destination to the proxy.
    assert [request.path for request in proxy.requests] == ["http://upstream.invalid/api/v1/models"]


def test_a_missing_client_certificate_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="UPSTREAM_CLIENT_CERT") as caught:
        make_settings(
            tmp_path, upstream_transport="httpx", upstream_client_cert=tmp_path / "absent.pem"
        )

    assert "absent.pem" in str(caught.value)


async def test_the_embedded_emulator_is_reached_directly_despite_http_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy that refuses every connection: going through it would be a 502.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{refused_port()}")
    settings = make_settings(
        tmp_path,
        openrouter_api_key="",
        upstream_transport="httpx",
        emulator_ttft_seconds=0,
        emulator_tokens_per_second=0,
    )
    async with running(create_app(settings)) as service:
        response = await service.post(
            "/generate", json={"model": "emulator/small", "prompt": "hi", "max_tokens": 4}
        )

    assert response.status_code == 200, response.text
    assert response.json()["text"]


class Socks5Proxy:
    """A minimal SOCKS5 proxy (no authentication, CONNECT only) that records where each
    connection asked to go, then relays bytes both ways."""

    def __init__(self) -> None:
        self.destinations: list[tuple[str, int]] = []
        self._relays: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._tunnel, "127.0.0.1", 0)
        try:
            yield f"socks5://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            server.close()
            relays = list(self._relays)
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            await server.wait_closed()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, methods = await reader.readexactly(2)
        await reader.readexactly(methods)
        writer.write(b"\x05\x00")  # no authentication
        _, command, _, kind = await reader.readexactly(4)
        if kind == 3:  # a name
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:  # an IPv4 address
            host = socket.inet_ntoa(await reader.readexactly(4))
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.destinations.append((host, port))
        assert command == 1  # CONNECT
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00")
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            relay = asyncio.create_task(_relay(source, sink))
            self._relays.add(relay)
            relay.add_done_callback(self._relays.discard)


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        sink.close()


async def test_the_httpx_transport_goes_through_a_socks5_proxy_from_all_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def answer(connection: Connection, _: Received) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsocks")

    socks = Socks5Proxy()
    async with ScriptedUpstream() as upstream, socks.serving() as proxy_url:
        upstream.script = answer
        port = int(upstream.base_url.split(":")[2].split("/")[0])
        monkeypatch.setenv("ALL_PROXY", proxy_url)
        # A name only the proxy resolves (to the scripted upstream, by its port).
        client = httpx_client(f"http://upstream.socks.invalid:{port}/api/v1")
        try:
            assert await client.read("GET", "models", Timing()) == b"socks"
        finally:
            await client.aclose()

    assert socks.destinations == [("upstream.socks.invalid", port)]
    assert [request.path for request in upstream.requests] == ["/api/v1/models"]


class H2Upstream:
    """A loopback TLS server that speaks only HTTP/2 (ALPN h2) and records each request's
    headers."""

    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.requests: list[dict[bytes, bytes]] = []

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        context.set_alpn_protocols(["h2"])
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        try:
            yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1"
        finally:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        connection.initiate_connection()
        writer.write(connection.data_to_send())
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests.append(dict(event.headers))
                        connection.send_headers(
                            event.stream_id, [(":status", "200"), ("content-length", "2")]
                        )
                        connection.send_data(event.stream_id, b"h2", end_stream=True)
                writer.write(connection.data_to_send())
                await writer.drain()
        writer.close()


async def test_upstream_http2_speaks_http2_to_an_upstream_that_offers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    upstream = H2Upstream(ca)
    async with upstream.serving() as base_url:
        settings = make_settings(tmp_path, upstream_transport="httpx", upstream_http2=True)
        client = connect_openrouter(settings, UpstreamTarget(base_url, SecretStr(API_KEY)))
        try:
            assert await client.read("GET", "models", Timing()) == b"h2"
            assert await client.read("GET", "models", Timing()) == b"h2"
        finally:
            await client.aclose()

    assert [request[b":path"] for request in upstream.requests] == [b"/api/v1/models"] * 2
    assert upstream.requests[0][b"authorization"] == f"Bearer {API_KEY}".encode()


async def test_a_benchmark_in_its_own_runner_process_works_over_httpx(
    tmp_path: Path, loopback: LoopbackUpstream, router: respx.MockRouter
) -> None:
    router.get("/models").respond(json=MODELS_BODY)
    chat = router.post("/chat/completions").mock(side_effect=lambda _: sse_response())
    settings = make_settings(tmp_path, upstream_transport="httpx", benchmark_isolation="process")

    async with Serve(loopback.base_url)(settings) as service:
        response = await post_benchmark(service, runs=2, concurrency=2, stream="true")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["finished_requests"]) == ("completed", 4)
    assert chat.call_count == 4
    rows = run_rows(settings.benchmarks_dir, body)
    assert [row["status"] for row in rows] == ["200"] * 4
    assert all(float(row["ttft_seconds"]) > 0 for row in rows)


async def test_the_startup_log_names_the_transport(
    tmp_path: Path, loopback: LoopbackUpstream
) -> None:
    settings = make_settings(tmp_path, upstream_transport="httpx")
    async with Serve(loopback.base_url)(settings):
        pass

    assert f"upstream: 127.0.0.1:{loopback.port}, transport: httpx" in read_log(settings)
