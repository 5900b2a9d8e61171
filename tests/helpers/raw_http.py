"""HTTP/1.1 over plain sockets, for clients no library would be: half-sent requests, huge
headers, one byte at a time; and a /health probe that runs beside them."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from tests.helpers.processes import LOOPBACK

HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.body)
        return parsed


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout=timeout)


def read_response(sock: socket.socket, timeout: float = 10.0) -> RawResponse | None:
    """One response (Content-Length bodies only), or None if the connection closed first."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                return None
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            part = sock.recv(65536)
            if not part:
                break
            body += part
    except ConnectionResetError:
        return None
    return RawResponse(int(lines[0].split()[1]), headers, body)


def answered(sock: socket.socket) -> bool:
    """Has the server sent anything (or closed) yet? Does not wait."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def health(port: int, timeout: float = 10.0) -> tuple[int | None, float]:
    """GET /health on a fresh connection: (status or None, seconds)."""
    started = time.monotonic()
    try:
        with connect(port, timeout) as sock:
            sock.sendall(HEALTH)
            response = read_response(sock, timeout)
    except OSError:
        response = None
    return (response.status if response else None), time.monotonic() - started


@dataclass
class HealthProbe:
    """GET /health every `interval` seconds from a thread, while the block runs."""

    port: int
    interval: float = 0.1
    results: list[tuple[int | None, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthProbe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.results.append(health(self.port))
            self._stop.wait(self.interval)

    @property
    def failures(self) -> list[tuple[int | None, float]]:
        return [result for result in self.results if result[0] != 200]

    @property
    def slowest(self) -> float:
        return max(seconds for _, seconds in self.results)

    def summary(self) -> str:
        times = sorted(seconds for _, seconds in self.results)
        if not times:
            return "no probe"
        middle = times[len(times) // 2]
        return (
            f"{len(times)} probes, {len(self.failures)} failed, "
            f"p50 {middle * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
        )
