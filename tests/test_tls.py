"""Real TLS to the upstream: a private CA made here (trustme), trusted through SSL_CERT_FILE.

A certificate that fails verification never heals, so it is one connection attempt and a 502
that names the problem and the way out (SSL_CERT_FILE / SSL_CERT_DIR), for the model list and
for the catalog lookup behind /generate alike.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import respx
import trustme

from src.config import Settings
from src.main import create_app
from src.services.base.client import RetryPolicy, should_retry
from src.services.base.exceptions import UpstreamCertificateError
from src.services.base.transport import WireTransport
from tests.helpers.app import make_settings, running
from tests.helpers.errors import assert_error
from tests.helpers.forward_proxy import TlsUpstream, write_ca_bundle
from tests.helpers.openrouter import GENERATE, MODELS_BODY, UPSTREAM

pytestmark = pytest.mark.anyio

TlsFactory = Callable[..., AbstractAsyncContextManager[TlsUpstream]]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_upstream(upstream: respx.MockRouter, ca: trustme.CA) -> TlsFactory:
    """`async with tls_upstream(names, host)`: the upstream behind TLS, its certificate for
    `names`, reached by the name `host`."""
    upstream.get("/models").respond(200, json=MODELS_BODY)

    @asynccontextmanager
    async def make(
        names: tuple[str, ...] = ("127.0.0.1", "localhost"), host: str = "127.0.0.1"
    ) -> AsyncIterator[TlsUpstream]:
        server = TlsUpstream(upstream, UPSTREAM, ca.issue_cert(*names), host)
        async with server:
            yield server

    return make


def trust(monkeypatch: pytest.MonkeyPatch, ca: trustme.CA | None, tmp_path: Path) -> None:
    """SSL_CERT_FILE names the test CA; None: neither variable is set (certifi's bundle)."""
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if ca is None:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv("SSL_CERT_FILE", str(write_ca_bundle(ca, tmp_path / "ca.pem")))


async def test_an_unknown_ca_is_one_attempt_and_a_502_naming_the_problem(
    tmp_path: Path,
    tls_upstream: TlsFactory,
    retry_waits: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trust(monkeypatch, None, tmp_path)
    async with tls_upstream() as server:
        settings = make_settings(tmp_path, openrouter_base_url=server.base_url, retry_attempts=3)
        async with running_app(settings) as service:
            models = await service.get("/models")
            assert server.accepted == 1
            generated = await service.post("/generate", json=GENERATE)
            assert server.accepted == 2
    for answer in (models, generated):
        body = assert_error(
            answer,
            502,
            "UpstreamCertificateError",
            "certificate verify failed: unable to get local issuer certificate",
        )
        assert "SSL_CERT_FILE" in body["detail"] and "SSL_CERT_DIR" in body["detail"]
    assert retry_waits == []


async def test_a_hostname_mismatch_is_one_attempt_and_a_502_naming_the_problem(
    tmp_path: Path,
    tls_upstream: TlsFactory,
    ca: trustme.CA,
    retry_waits: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trust(monkeypatch, ca, tmp_path)
    async with tls_upstream(names=("other.test",), host="localhost") as server:
        settings = make_settings(tmp_path, openrouter_base_url=server.base_url, retry_attempts=3)
        async with running_app(settings) as service:
            models = await service.get("/models")
    body = assert_error(models, 502, "UpstreamCertificateError", "Hostname mismatch")
    assert "localhost" in body["detail"]
    assert server.accepted == 1
    assert retry_waits == []


async def test_ssl_cert_file_naming_the_private_ca_is_trusted(
    tmp_path: Path, tls_upstream: TlsFactory, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust(monkeypatch, ca, tmp_path)
    async with tls_upstream() as server:
        settings = make_settings(tmp_path, openrouter_base_url=server.base_url)
        async with running_app(settings) as service:
            models = await service.get("/models")
    assert models.status_code == 200, models.text
    assert models.json()["count"] == len(MODELS_BODY["data"])
    assert server.handshake_failures == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs `openssl rehash`")
async def test_ssl_cert_dir_with_the_private_ca_is_trusted(
    tmp_path: Path, tls_upstream: TlsFactory, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    write_ca_bundle(ca, certs / "test-ca.pem")
    subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(certs))
    async with tls_upstream() as server:
        transport = WireTransport()
        try:
            response = await transport.handle_async_request(
                httpx.Request(
                    "GET",
                    f"{server.base_url}/models",
                    extensions={"timeout": {"connect": 10.0, "read": 10.0, "pool": 10.0}},
                )
            )
            await response.aread()
        finally:
            await transport.aclose()
    assert response.status_code == 200


def test_a_certificate_failure_is_never_retried() -> None:
    error = UpstreamCertificateError("certificate verify failed", before_answer=True)
    assert should_retry(error, RetryPolicy()) is False


def running_app(settings: Settings) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The app with its production transport (no injected one), called in process."""
    return running(create_app(settings))
