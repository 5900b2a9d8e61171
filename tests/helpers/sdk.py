"""The official `openai` SDK pointed at a running service, its responses read through the
secret audit like every other e2e client's.

The SDK brings its own HTTP stack (httpx2), so the audit gets a transport of that stack here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2
from openai import AsyncOpenAI, OpenAI

from tests.helpers.audit import SecretAudit
from tests.helpers.e2e import INBOUND_KEY

SDK_TIMEOUT_SECONDS = 30.0


def _where(request: httpx2.Request) -> str:
    return f"response to {request.method} {request.url.path}"


class _AuditedStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, audit: SecretAudit, where: str) -> None:
        self._inner, self._audit, self._where = inner, audit, where
        self.headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._body += chunk
            yield chunk

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._audit.check_message(self._where, self.headers, bytes(self._body))


class _AuditedAsyncStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, audit: SecretAudit, where: str) -> None:
        self._inner, self._audit, self._where = inner, audit, where
        self.headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._body += chunk
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._audit.check_message(self._where, self.headers, bytes(self._body))


class AuditedSDKTransport(httpx2.HTTPTransport):
    def __init__(self, audit: SecretAudit, max_connections: int) -> None:
        super().__init__(limits=httpx2.Limits(max_connections=max_connections), trust_env=False)
        self._audit = audit

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        assert isinstance(response.stream, httpx2.SyncByteStream)
        stream = _AuditedStream(response.stream, self._audit, _where(request))
        stream.headers = list(response.headers.raw)
        return httpx2.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=stream,
            extensions=response.extensions,
        )


class AuditedAsyncSDKTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, audit: SecretAudit, max_connections: int) -> None:
        super().__init__(limits=httpx2.Limits(max_connections=max_connections), trust_env=False)
        self._audit = audit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        stream = _AuditedAsyncStream(response.stream, self._audit, _where(request))
        stream.headers = list(response.headers.raw)
        return httpx2.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=stream,
            extensions=response.extensions,
        )


def sdk_client(
    audit: SecretAudit, service_url: str, *, api_key: str = INBOUND_KEY, max_retries: int = 0
) -> OpenAI:
    """The SDK as an application would build it, with its own retries off by default: what
    a test sees is then the service's answer, not the SDK's second try."""
    return OpenAI(
        base_url=f"{service_url}/v1",
        api_key=api_key,
        max_retries=max_retries,
        timeout=SDK_TIMEOUT_SECONDS,
        http_client=httpx2.Client(
            transport=AuditedSDKTransport(audit, max_connections=10), trust_env=False
        ),
    )


def async_sdk_client(audit: SecretAudit, service_url: str, *, connections: int) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{service_url}/v1",
        api_key=INBOUND_KEY,
        max_retries=0,
        timeout=SDK_TIMEOUT_SECONDS,
        http_client=httpx2.AsyncClient(
            transport=AuditedAsyncSDKTransport(audit, max_connections=connections),
            trust_env=False,
        ),
    )
