"""The service as a real process behind a real forward proxy (proxy.py, basic auth), on uvloop:
an https upstream through a CONNECT tunnel (TLS inside, a private CA trusted through
SSL_CERT_FILE), an http one in absolute form, and what /health, the answers and the log files
show of the proxy: its address, never its password.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
import trustme

from tests.helpers.errors import assert_error
from tests.helpers.forward_proxy import (
    PROXY_PASSWORD,
    ForwardProxy,
    TlsUpstream,
    forward_proxy,
    tls_upstream_in_thread,
    write_ca_bundle,
)
from tests.helpers.launcher import StartApp
from tests.helpers.openrouter import MODELS_BODY
from tests.helpers.processes import ServiceProcess

WAIT_SECONDS = 20.0
# How long a request that went through the proxy takes to show in its log, at most.
SETTLE_SECONDS = 2.0


@pytest.fixture(scope="module")
def proxy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    with forward_proxy(tmp_path_factory.mktemp("proxy")) as server:
        yield server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_upstream(ca: trustme.CA) -> Iterator[TlsUpstream]:
    router = respx.MockRouter(base_url="https://upstream.test/api/v1", assert_all_called=False)
    router.get("/models").respond(200, json=MODELS_BODY)
    with tls_upstream_in_thread(router, ca.issue_cert("127.0.0.1")) as server:
        yield server


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ca_bundle(ca, tmp_path_factory.mktemp("ca") / "ca.pem")


def access_lines_for(
    proxy: ForwardProxy, port: int, at_least: int, seconds: float = WAIT_SECONDS
) -> list[str]:
    """The proxy's access lines about the upstream on `port`, once there are `at_least` (or
    when `seconds` have passed)."""
    deadline = time.monotonic() + seconds
    while True:
        lines = [line for line in proxy.access_lines() if f"127.0.0.1:{port}" in line]
        if len(lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def assert_password_nowhere(process: ServiceProcess, *answers: httpx.Response) -> None:
    for answer in answers:
        assert PROXY_PASSWORD not in answer.text
    for path in process.files():
        assert PROXY_PASSWORD not in path.read_text(encoding="utf-8", errors="replace"), path


def test_an_https_upstream_through_a_connect_tunnel(
    start_app: StartApp,
    proxy_server: ForwardProxy,
    tls_upstream: TlsUpstream,
    ca_file: Path,
) -> None:
    app = start_app(
        "proxied-https",
        tls_upstream.base_url,
        HTTPS_PROXY=proxy_server.url(),
        SSL_CERT_FILE=str(ca_file),
    )
    with httpx.Client(base_url=app.url, trust_env=False, timeout=15.0) as http:
        health = http.get("/health")
        models = http.get("/models")
    assert models.status_code == 200, models.text
    assert models.json()["count"] == len(MODELS_BODY["data"])
    label = f"http://127.0.0.1:{proxy_server.port}"
    assert health.json() == {
        "status": "ok",
        "upstream": f"127.0.0.1:{tls_upstream.port}",
        "transport": "wire",
        "proxy": label,
        "jobs": {"backend": "files"},
    }
    assert f"proxy: {label}" in app.log_text()
    app.stop()  # proxy.py logs a tunnel once it closes
    [line] = access_lines_for(proxy_server, tls_upstream.port, 1)
    assert f"CONNECT 127.0.0.1:{tls_upstream.port}" in line
    assert_password_nowhere(app, health, models)


def test_without_the_private_ca_the_certificate_failure_is_one_attempt_and_a_502(
    start_app: StartApp, tls_upstream: TlsUpstream
) -> None:
    app = start_app("untrusted-https", tls_upstream.base_url)
    accepted = tls_upstream.accepted
    with httpx.Client(base_url=app.url, trust_env=False, timeout=15.0) as http:
        models = http.get("/models")
    body = assert_error(models, 502, "UpstreamCertificateError", "certificate verify failed")
    assert "unable to get local issuer certificate" in body["detail"]
    assert "SSL_CERT_FILE" in body["detail"]
    assert tls_upstream.accepted == accepted + 1
    assert "RETRY" not in app.log_text()


def test_an_http_upstream_through_the_proxy_in_absolute_form(
    start_app: StartApp, emulator: ServiceProcess, proxy_server: ForwardProxy
) -> None:
    # GET only: proxy.py adds a second Content-Length to a body whose header is lowercase,
    # which the emulator rightly refuses; a real proxy does not.
    app = start_app("proxied-http", emulator, HTTP_PROXY=proxy_server.url())
    with httpx.Client(base_url=app.url, trust_env=False, timeout=15.0) as http:
        health = http.get("/health")
        models = http.get("/models")
    assert models.status_code == 200, models.text
    assert health.json()["proxy"] == f"http://127.0.0.1:{proxy_server.port}"
    port = int(emulator.url.rsplit(":", 1)[1])
    app.stop()  # proxy.py logs a request once its connection closes, not while it is kept alive
    lines = access_lines_for(proxy_server, port, 1)
    assert any(f"GET 127.0.0.1:{port}/api/v1/models - 200" in line for line in lines), lines
    assert_password_nowhere(app, health, models)


def test_wrong_proxy_credentials_are_a_502_naming_407(
    start_app: StartApp, proxy_server: ForwardProxy, tls_upstream: TlsUpstream, ca_file: Path
) -> None:
    wrong = "wrong-Pr0xy-password"
    app = start_app(
        "proxy-refuses",
        tls_upstream.base_url,
        HTTPS_PROXY=proxy_server.url(password=wrong),
        SSL_CERT_FILE=str(ca_file),
    )
    with httpx.Client(base_url=app.url, trust_env=False, timeout=15.0) as http:
        models = http.get("/models")
    body = assert_error(models, 502, "UpstreamConnectionError", "407")
    assert "proxy authentication failed" in body["detail"]
    app.stop()
    assert wrong not in models.text
    for path in app.files():
        assert wrong not in path.read_text(encoding="utf-8", errors="replace"), path


def test_no_proxy_sends_the_upstream_around_the_proxy(
    start_app: StartApp, emulator: ServiceProcess, proxy_server: ForwardProxy
) -> None:
    port = int(emulator.url.rsplit(":", 1)[1])
    before = len(access_lines_for(proxy_server, port, 0))
    app = start_app(
        "no-proxy", emulator, HTTP_PROXY=proxy_server.url(), NO_PROXY="localhost,127.0.0.1"
    )
    with httpx.Client(base_url=app.url, trust_env=False, timeout=15.0) as http:
        health = http.get("/health")
        models = http.get("/models")
    assert models.status_code == 200, models.text
    assert health.json()["proxy"] is None
    app.stop()  # its connections close: the proxy would have logged any tunnel by now
    assert len(access_lines_for(proxy_server, port, before + 1, SETTLE_SECONDS)) == before
