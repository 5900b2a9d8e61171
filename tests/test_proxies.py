"""HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY, as an httpx client with trust_env honours
them: which proxy an origin gets (compared with httpx itself), and the service through a real
forward proxy (proxy.py, basic auth) to loopback upstreams, with TLS inside a CONNECT tunnel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx
import trustme

from src.config import Settings
from src.main import create_app
from src.redaction import Redactor
from src.services.base.exceptions import UpstreamConnectionError
from src.services.base.proxies import ProxyRules
from src.services.base.transport import WireTransport
from tests.helpers.app import make_settings, read_log, running
from tests.helpers.errors import assert_error
from tests.helpers.forward_proxy import (
    PROXY_PASSWORD,
    ForwardProxy,
    Socks5Proxy,
    TlsUpstream,
    forward_proxy,
    write_ca_bundle,
)
from tests.helpers.openrouter import MODELS_BODY, UPSTREAM
from tests.helpers.upstream_server import LoopbackUpstream

# The discard port, where nothing listens on a test machine.
DEAD_PROXY = "http://user:pw@127.0.0.1:9"
TIMEOUTS = {"connect": 10.0, "read": 10.0, "write": 10.0, "pool": 10.0}

# (environment, URL): every case is asked of httpx and of the service's rules.
CASES: list[tuple[dict[str, str], str]] = [
    ({}, "https://openrouter.ai/api/v1"),
    ({"HTTPS_PROXY": "http://p.corp:3128"}, "https://openrouter.ai/api/v1"),
    ({"HTTPS_PROXY": "http://p.corp:3128"}, "http://openrouter.ai/api/v1"),
    ({"HTTP_PROXY": "p.corp:8080"}, "http://openrouter.ai/"),
    ({"HTTP_PROXY": "http://p.corp"}, "http://openrouter.ai/"),
    ({"ALL_PROXY": "http://all.corp:3128"}, "https://openrouter.ai/"),
    ({"ALL_PROXY": "http://all.corp:3128"}, "http://openrouter.ai:8080/"),
    ({"ALL_PROXY": "http://all.corp:1", "HTTPS_PROXY": "http://s.corp:2"}, "https://x.ai/"),
    ({"ALL_PROXY": "http://all.corp:1", "HTTPS_PROXY": "http://s.corp:2"}, "http://x.ai/"),
    ({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}, "https://x.ai/"),
    ({"HTTPS_PROXY": "http://u:pw@p.corp:3128"}, "https://openrouter.ai/"),
    ({"ALL_PROXY": "socks5://s.corp:1080"}, "https://openrouter.ai/"),
    ({"ALL_PROXY": "socks5h://u:p%40w@s.corp"}, "http://openrouter.ai/"),
    ({"HTTPS_PROXY": "https://tls.corp"}, "https://openrouter.ai/"),
    *[
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": no_proxy}, url)
        for no_proxy, url in [
            ("openrouter.ai", "https://openrouter.ai/"),
            ("openrouter.ai", "https://api.openrouter.ai/"),
            ("openrouter.ai", "https://xopenrouter.ai/"),
            (".openrouter.ai", "https://openrouter.ai/"),
            (".openrouter.ai", "https://api.openrouter.ai/"),
            ("*", "https://openrouter.ai/"),
            ("example.com, *", "https://openrouter.ai/"),
            ("example.com , openrouter.ai", "https://openrouter.ai/"),
            ("127.0.0.1", "https://127.0.0.1:8443/"),
            ("127.0.0.1", "https://127.0.0.2/"),
            ("::1", "https://[::1]:8443/"),
            ("10.0.0.0/8", "https://10.1.2.3/"),
            ("localhost", "https://localhost/"),
            ("localhost", "https://api.localhost/"),
            ("openrouter.ai:8443", "https://openrouter.ai:8443/"),
            ("openrouter.ai:8443", "https://openrouter.ai/"),
            ("openrouter.ai:443", "https://openrouter.ai/"),
            ("http://openrouter.ai", "https://openrouter.ai/"),
            ("https://openrouter.ai", "https://openrouter.ai/"),
            ("OpenRouter.AI", "https://openrouter.ai/"),
        ]
    ],
    ({"https_proxy": "http://p:1", "no_proxy": "openrouter.ai"}, "https://openrouter.ai/"),
]


def httpx_choice(url: str) -> tuple[str, str, int, bytes | None] | None:
    """The proxy an `httpx.AsyncClient(trust_env=True)` sends `url` through, or None."""
    client = httpx.AsyncClient(trust_env=True)
    transport = client._transport_for_url(httpx.URL(url))
    if transport is client._transport:
        return None
    pool = transport._pool  # type: ignore[attr-defined]
    proxy_url = pool._proxy_url
    scheme = proxy_url.scheme.decode()
    default = {"http": 80, "https": 443}.get(scheme, 1080)
    if scheme.startswith("socks"):
        credentials = pool._proxy_auth
    else:
        credentials = dict(pool._proxy_headers).get(b"Proxy-Authorization")
    return (scheme, proxy_url.host.decode(), proxy_url.port or default, credentials)


@pytest.mark.parametrize(("environment", "url"), CASES)
def test_the_proxy_chosen_for_an_origin_is_the_one_httpx_chooses(
    environment: dict[str, str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    parsed = httpx.URL(url)
    port = parsed.port or {"http": 80, "https": 443}[parsed.scheme]
    proxy = ProxyRules.from_environment().proxy_for(parsed.scheme, parsed.host, port)
    credentials = proxy and (
        proxy.credentials if proxy.scheme.startswith("socks") else proxy.authorization
    )
    ours = proxy and (proxy.scheme, proxy.host, proxy.port, credentials)
    assert ours == httpx_choice(url)


def test_the_proxy_variables_are_read_when_the_transport_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://first.corp:3128")
    transport = WireTransport()
    monkeypatch.setenv("HTTPS_PROXY", "http://second.corp:3128")
    proxy = transport.proxy_for(httpx.URL("https://openrouter.ai/api/v1"))
    assert proxy is not None and proxy.label == "http://first.corp:3128"
    assert WireTransport(trust_env=False).proxy_for(httpx.URL("https://openrouter.ai/")) is None


def test_the_proxy_password_is_scrubbed_like_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://corp-user:S3cret%2Fpw@proxy.corp:3128")
    redact = Redactor(Settings(_env_file=None).secrets())
    authorization = base64.b64encode(b"corp-user:S3cret/pw").decode()
    text = redact(f"via http://corp-user:S3cret/pw@proxy.corp, sent {authorization}")
    assert "S3cret/pw" not in text
    assert authorization not in text


# --- through a real proxy ------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    with forward_proxy(tmp_path_factory.mktemp("proxy")) as server:
        yield server


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_upstream(
    upstream: respx.MockRouter,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[TlsUpstream]:
    """An https upstream with the test CA's certificate, and SSL_CERT_FILE trusting that CA."""
    upstream.get("/models").respond(200, json=MODELS_BODY)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(write_ca_bundle(ca, tmp_path / "ca.pem")))
    server = TlsUpstream(upstream, UPSTREAM, ca.issue_cert("127.0.0.1"))
    async with server:
        yield server


def seen_by(proxy: ForwardProxy, port: int) -> list[str]:
    """The proxy's access lines for the upstream on `port`."""
    return [line for line in proxy.access_lines() if f"127.0.0.1:{port}" in line]


async def eventually(condition: object, seconds: float = 20.0) -> None:
    """proxy.py writes its access line after the exchange: wait for it, within bounds."""
    assert callable(condition)
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.05)


def app_settings(tmp_path: Path, base_url: str, **overrides: object) -> Settings:
    return make_settings(tmp_path, openrouter_base_url=base_url, **overrides)


@pytest.mark.anyio
async def test_an_https_upstream_is_reached_through_a_connect_tunnel_with_tls_inside(
    tmp_path: Path,
    proxy_server: ForwardProxy,
    tls_upstream: TlsUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy_server.url())
    settings = app_settings(tmp_path, tls_upstream.base_url)
    async with running(create_app(settings)) as service:
        models = await service.get("/models")
        health = await service.get("/health")
    assert models.status_code == 200, models.text
    assert models.json()["count"] == len(MODELS_BODY["data"])
    await eventually(lambda: seen_by(proxy_server, tls_upstream.port))
    [line] = seen_by(proxy_server, tls_upstream.port)
    assert f"CONNECT 127.0.0.1:{tls_upstream.port}" in line
    label = f"http://127.0.0.1:{proxy_server.port}"
    assert health.json()["proxy"] == label
    log = read_log(settings)
    assert f"proxy: {label}" in log
    assert PROXY_PASSWORD not in log + models.text + health.text


@pytest.mark.anyio
async def test_an_http_upstream_is_reached_through_the_proxy_in_absolute_form(
    tmp_path: Path,
    proxy_server: ForwardProxy,
    upstream: respx.MockRouter,
    upstream_server: LoopbackUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route = upstream.get("/models").respond(200, json=MODELS_BODY)
    monkeypatch.setenv("HTTP_PROXY", proxy_server.url())
    settings = app_settings(tmp_path, upstream_server.base_url)
    async with running(create_app(settings)) as service:
        models = await service.get("/models")
    assert models.status_code == 200, models.text
    assert route.call_count == 1
    await eventually(lambda: seen_by(proxy_server, upstream_server.port))
    [line] = seen_by(proxy_server, upstream_server.port)
    assert f"GET 127.0.0.1:{upstream_server.port}/api/v1/models - 200" in line
    assert PROXY_PASSWORD not in read_log(settings)


@pytest.mark.anyio
async def test_wrong_proxy_credentials_are_one_attempt_and_a_502_naming_407(
    tmp_path: Path,
    proxy_server: ForwardProxy,
    tls_upstream: TlsUpstream,
    retry_waits: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = "not-the-Pr0xy-password"
    monkeypatch.setenv("HTTPS_PROXY", proxy_server.url(password=wrong))
    settings = app_settings(tmp_path, tls_upstream.base_url, retry_attempts=3)
    async with running(create_app(settings)) as service:
        models = await service.get("/models")
    body = assert_error(models, 502, "UpstreamConnectionError", "407")
    assert "proxy authentication failed" in body["detail"]
    assert f"127.0.0.1:{proxy_server.port}" in body["detail"]
    assert retry_waits == []
    assert tls_upstream.accepted == 0
    assert wrong not in models.text and wrong not in read_log(settings)


@pytest.mark.anyio
async def test_no_proxy_sends_the_upstream_around_the_proxy(
    tmp_path: Path, tls_upstream: TlsUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through this proxy nothing could arrive: the answer proves the connection was direct.
    monkeypatch.setenv("HTTPS_PROXY", DEAD_PROXY)
    monkeypatch.setenv("NO_PROXY", "example.com, 127.0.0.1")
    settings = app_settings(tmp_path, tls_upstream.base_url)
    async with running(create_app(settings)) as service:
        models = await service.get("/models")
        health = await service.get("/health")
    assert models.status_code == 200, models.text
    assert tls_upstream.accepted == 1
    assert health.json()["proxy"] is None


@pytest.mark.anyio
async def test_the_embedded_emulator_is_reached_directly_whatever_the_proxy_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, DEAD_PROXY)
    settings = make_settings(tmp_path, openrouter_api_key="")
    async with running(create_app(settings)) as service:
        models = await service.get("/models")
        health = await service.get("/health")
    assert models.status_code == 200, models.text
    assert health.json() == {
        "status": "ok",
        "upstream": "emulator",
        "transport": "wire",
        "proxy": None,
        "jobs": {"backend": "files"},
    }


@pytest.mark.anyio
async def test_a_forward_proxy_receives_the_absolute_url_and_the_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What goes on the wire to a forward proxy, read by a loopback listener posing as one."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not received.done():
            received.set_result(head)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pa%40ss@127.0.0.1:{port}")
    transport = WireTransport()
    try:
        request = httpx.Request(
            "GET", "http://upstream.test:8080/api/v1/models?x=1", extensions={"timeout": TIMEOUTS}
        )
        response = await transport.handle_async_request(request)
        assert await response.aread() == b"ok"
        async with asyncio.timeout(10):
            head = await received
    finally:
        await transport.aclose()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET http://upstream.test:8080/api/v1/models?x=1 HTTP/1.1"
    # user:pa@ss, the password percent-decoded as httpx decodes it.
    assert "Proxy-Authorization: Basic dXNlcjpwYUBzcw==" in lines
    assert "host: upstream.test:8080" in [line.lower() for line in lines]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("proxy_url", "detail"),
    [
        (DEAD_PROXY, "cannot reach proxy http://127.0.0.1:9 (ConnectionRefusedError"),
        ("https://user:pw@127.0.0.1:3129", "Proxy https://127.0.0.1:3129 is not supported"),
    ],
)
async def test_a_proxy_that_cannot_be_used_is_named_in_the_error_without_credentials(
    proxy_url: str, detail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)
    transport = WireTransport()
    request = httpx.Request(
        "GET", "https://upstream.test/api/v1/models", extensions={"timeout": TIMEOUTS}
    )
    try:
        with pytest.raises(UpstreamConnectionError) as failed:
            await transport.handle_async_request(request)
    finally:
        await transport.aclose()
    assert detail in failed.value.detail
    assert "pw" not in failed.value.detail


@pytest.mark.anyio
async def test_an_https_upstream_through_a_socks5_proxy_with_credentials(
    tmp_path: Path, tls_upstream: TlsUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Socks5Proxy(b"user", b"s0cks-pw") as socks:
        monkeypatch.setenv("ALL_PROXY", f"socks5://user:s0cks-pw@127.0.0.1:{socks.port}")
        settings = app_settings(tmp_path, tls_upstream.base_url)
        async with running(create_app(settings)) as service:
            models = await service.get("/models")
            health = await service.get("/health")
    assert models.status_code == 200, models.text
    assert socks.destinations == [("127.0.0.1", tls_upstream.port)]
    assert health.json()["proxy"] == f"socks5://127.0.0.1:{socks.port}"
    assert "s0cks-pw" not in read_log(settings)


@pytest.mark.anyio
async def test_an_http_upstream_through_socks5h_is_sent_in_origin_form(
    tmp_path: Path,
    upstream: respx.MockRouter,
    upstream_server: LoopbackUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route = upstream.get("/models").respond(200, json=MODELS_BODY)
    async with Socks5Proxy(b"user", b"s0cks-pw") as socks:
        monkeypatch.setenv("ALL_PROXY", f"socks5h://user:s0cks-pw@127.0.0.1:{socks.port}")
        settings = app_settings(tmp_path, upstream_server.base_url)
        async with running(create_app(settings)) as service:
            models = await service.get("/models")
    assert models.status_code == 200, models.text
    assert route.call_count == 1
    assert socks.destinations == [("127.0.0.1", upstream_server.port)]


@pytest.mark.anyio
async def test_wrong_socks5_credentials_are_one_attempt_and_a_clear_502(
    tmp_path: Path,
    tls_upstream: TlsUpstream,
    retry_waits: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with Socks5Proxy(b"user", b"s0cks-pw") as socks:
        monkeypatch.setenv("ALL_PROXY", f"socks5://user:not-it@127.0.0.1:{socks.port}")
        settings = app_settings(tmp_path, tls_upstream.base_url, retry_attempts=3)
        async with running(create_app(settings)) as service:
            models = await service.get("/models")
    body = assert_error(models, 502, "UpstreamConnectionError", "proxy authentication failed")
    assert f"socks5://127.0.0.1:{socks.port}" in body["detail"]
    assert retry_waits == []
    assert tls_upstream.accepted == 0


def test_an_unusable_proxy_url_is_refused_naming_its_variable_never_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "ftp://corp-user:S3cret-pw@proxy.corp:21")
    with pytest.raises(ValueError, match="HTTPS_PROXY") as refused:
        WireTransport()
    assert "ftp://proxy.corp:21" in str(refused.value)
    assert "S3cret-pw" not in str(refused.value)
    # Whatever else prints it (a startup traceback), the log sink scrubs it.
    assert "S3cret-pw" in Settings(_env_file=None).secrets()


@pytest.mark.anyio
async def test_wrong_credentials_for_an_http_upstream_are_a_502_naming_407(
    tmp_path: Path,
    proxy_server: ForwardProxy,
    upstream: respx.MockRouter,
    upstream_server: LoopbackUpstream,
    retry_waits: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route = upstream.get("/models").respond(200, json=MODELS_BODY)
    monkeypatch.setenv("HTTP_PROXY", proxy_server.url(password="not-the-Pr0xy-password"))
    settings = app_settings(tmp_path, upstream_server.base_url, retry_attempts=3)
    async with running(create_app(settings)) as service:
        models = await service.get("/models")
    body = assert_error(models, 502, "UpstreamStatusError", "Upstream returned 407")
    assert "Proxy Authentication Required" in body["detail"]
    assert route.call_count == 0
    assert retry_waits == []
