"""A real redis-server on a free loopback port, for the tests of JOBS_BACKEND=redis.

Debian's `redis-server` package (`make test` installs it when missing). Nothing is saved to
disk; each test starts from an empty database.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers.processes import LOOPBACK, free_port, wait_until

START_SECONDS = 10.0
START_ATTEMPTS = 3
STOP_SECONDS = 5.0


class RedisServer:
    """One redis-server process; `pause` and `resume` make it stop answering, as a Redis that
    went away would, without losing what it holds."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        """Start on a free port; another on this machine (a parallel test worker) may take the
        port between our check and redis binding it, and then redis exits: try another."""
        for _ in range(START_ATTEMPTS):
            self._launch()
            wait_until(self._answers_or_exited, START_SECONDS, interval=0.05)
            if self._answers():
                return
            self.stop()
        raise AssertionError(f"redis never answered on {START_ATTEMPTS} ports")

    def _launch(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", LOOPBACK,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--logfile", str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _answers_or_exited(self) -> bool:
        return (self.process is not None and self.process.poll() is not None) or self._answers()

    def _answers(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=5)

    def flush(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_SECONDS)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="redis-tests-") as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an emptied Redis, for one test."""
    redis_server.resume()
    redis_server.flush()
    return redis_server.url
