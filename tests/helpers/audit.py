"""The secret audit: every response the e2e clients receive, and every file the services write,
is checked for the upstream key and the inbound key.

The clients check responses as they are read, through a transport wrapper, so nothing has to
be kept in memory and no test can forget to record one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import httpx


class SecretAudit:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [secret.encode() for secret in secrets if secret]
        self.responses_checked = 0
        self.leaks: list[str] = []

    def check_bytes(self, where: str, data: bytes) -> None:
        for secret in self.secrets:
            if secret in data:
                self.leaks.append(f"{where} contains {secret[:6].decode()}...")

    def check_message(
        self, where: str, headers: Iterable[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """One HTTP response: its headers and its body."""
        self.responses_checked += 1
        head = b"\n".join(name + b": " + value for name, value in headers)
        self.check_bytes(where, head + b"\n\n" + body)

    def check_response(self, request: httpx.Request, response: httpx.Response, body: bytes) -> None:
        where = f"response to {request.method} {request.url.path}"
        self.check_message(where, response.headers.raw, body)

    def check_files(self, files: Iterable[Path]) -> int:
        """Check every file (rotated logs included); returns how many were read."""
        count = 0
        for path in files:
            self.check_bytes(str(path), path.read_bytes())
            count += 1
        return count


class _AuditedSyncStream(httpx.SyncByteStream):
    def __init__(
        self,
        inner: httpx.SyncByteStream,
        audit: SecretAudit,
        request: httpx.Request,
        response: httpx.Response,
    ) -> None:
        self._inner = inner
        self._audit = audit
        self._request = request
        self._response = response
        self._body = bytearray()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._body += chunk
            yield chunk

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._audit.check_response(self._request, self._response, bytes(self._body))


class _AuditedAsyncStream(httpx.AsyncByteStream):
    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        audit: SecretAudit,
        request: httpx.Request,
        response: httpx.Response,
    ) -> None:
        self._inner = inner
        self._audit = audit
        self._request = request
        self._response = response
        self._body = bytearray()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._body += chunk
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._audit.check_response(self._request, self._response, bytes(self._body))


class AuditedTransport(httpx.HTTPTransport):
    """httpx's own transport; each response body is checked for secrets as it is closed."""

    def __init__(self, audit: SecretAudit, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._audit = audit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers.raw,
            stream=_AuditedSyncStream(response.stream, self._audit, request, response),
            extensions=response.extensions,
        )


class AuditedAsyncTransport(httpx.AsyncHTTPTransport):
    def __init__(self, audit: SecretAudit, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._audit = audit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers.raw,
            stream=_AuditedAsyncStream(response.stream, self._audit, request, response),
            extensions=response.extensions,
        )
