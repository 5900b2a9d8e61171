"""Real service processes on loopback ports, and what /proc says about them.

Each process gets every setting explicitly in its environment, so a `.env` at the repo root
(read by the settings) can never change what a test runs against.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from pydantic import SecretStr

from src.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "app"
LOOPBACK = "127.0.0.1"
START_SECONDS = 20.0
STOP_SECONDS = 10.0
# A process that loses the race for its free port exits at once; it is restarted on another.
START_ATTEMPTS = 3
# Variables a Python process needs to run at all; nothing else of ours is inherited.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
# Read by the process from its environment, though not settings: proxies, trusted CAs, and
# where prometheus-client keeps each process's values.
_PROCESS_ENV = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "PROMETHEUS_MULTIPROC_DIR",
    }
)
_TCP_LISTEN = "0A"
TCP_ESTABLISHED = "01"
TCP_CLOSE_WAIT = "08"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return ",".join(_env_value(item) for item in value)
    return "" if value is None else str(value)


def settings_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """Every setting of the service at its default, then `overrides` (names as env vars).

    Environment variables beat `.env` in pydantic-settings, so a value for every field leaves
    nothing for a `.env` to fill in; a setting added later is covered without touching this.
    """
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    for name, info in Settings.model_fields.items():
        env[name.upper()] = _env_value(info.get_default(call_default_factory=True))
    unknown = {
        name
        for name in overrides
        if name.lower() not in Settings.model_fields and name.upper() not in _PROCESS_ENV
    }
    assert not unknown, f"not settings of the service: {sorted(unknown)}"
    env.update(overrides)
    env["PYTHONPATH"] = str(APP_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ServiceProcess:
    """One `python -m <module>` child with its own directory for output, logs and results."""

    name: str
    module: str
    port: int
    workdir: Path
    env: dict[str, str]
    ready_path: str
    # SIGTERM waits this long for a clean exit before SIGKILL.
    stop_seconds: float = STOP_SECONDS
    popen: subprocess.Popen[bytes] | None = None
    # Set once a test or a fixture signals the process: any other exit is unexpected.
    stopping: bool = False
    _outputs: list[IO[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.txt"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.txt"

    @property
    def log_path(self) -> Path:
        return Path(self.env["LOG_DIR"]) / "server_logs.txt"

    @property
    def benchmarks_dir(self) -> Path:
        return Path(self.env["BENCHMARKS_DIR"])

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8") if self.log_path.exists() else ""

    def output(self) -> str:
        """Captured stdout and stderr, for failure messages."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def files(self) -> list[Path]:
        """Every file this process produced: captured output, logs, benchmark results."""
        return sorted(path for path in self.workdir.rglob("*") if path.is_file())

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        stdout = self.stdout_path.open("ab")
        stderr = self.stderr_path.open("ab")
        self._outputs += [stdout, stderr]
        self.popen = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            # Its own session: a Ctrl-C in the terminal reaches pytest, which stops it cleanly.
            start_new_session=True,
        )

    def wait_ready(self, seconds: float = START_SECONDS) -> bool:
        """True once this very process listens on its port and answers `ready_path` with 200.

        False when it exited first (its port was taken meanwhile). Checking that the listening
        socket is ours matters: other services may run on this machine.
        """
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=self.url, timeout=1.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                assert self.popen is not None
                if self.popen.poll() is not None:
                    return False
                if self.port in listening_ports(self.pid):
                    try:
                        if http.get(self.ready_path).status_code == 200:
                            return True
                    except httpx.TransportError:
                        pass
                time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{self.name} not ready after {seconds}s\n{self.output()}")

    def signal(self, signum: signal.Signals) -> None:
        assert self.popen is not None
        self.stopping = True
        self.popen.send_signal(signum)

    def wait_exit(self, seconds: float) -> int | None:
        """The exit code, or None if it is still running after `seconds`."""
        assert self.popen is not None
        try:
            return self.popen.wait(seconds)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after `stop_seconds`; returns the exit code."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait_exit(self.stop_seconds) is None:
                self.kill()
        self._close_outputs()
        return self.popen.returncode

    def kill(self) -> None:
        assert self.popen is not None
        self.stopping = True
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(STOP_SECONDS)
        self._close_outputs()

    def _close_outputs(self) -> None:
        while self._outputs:
            self._outputs.pop().close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def died_unexpectedly(self) -> bool:
        return not self.stopping and not self.running

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_kinds(self) -> tuple[int, int]:
        """(sockets, everything else): pools make the first vary, the second should not."""
        sockets = len(socket_inodes(self.pid))
        return sockets, self.fd_count() - sockets

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")  # pragma: no cover - Linux always has it

    def connections_to(self, port: int) -> list[TcpSocket]:
        """This process's open TCP connections to `LOOPBACK:port` (established)."""
        inodes = socket_inodes(self.pid)
        return [
            entry
            for entry in tcp_table()
            if entry.inode in inodes
            and entry.remote_port == port
            and entry.state == TCP_ESTABLISHED
        ]


def launch(
    name: str,
    module: str,
    workdir: Path,
    env: Mapping[str, str],
    ready_path: str,
    stop_seconds: float = STOP_SECONDS,
) -> ServiceProcess:
    """Start `module` on a free port (HOST/PORT or EMULATOR_HOST/EMULATOR_PORT) and wait for it."""
    port_var = "EMULATOR_PORT" if module.endswith("emulator") else "PORT"
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        process = ServiceProcess(
            name=name,
            module=module,
            port=port,
            workdir=workdir,
            env={**env, port_var: str(port)},
            ready_path=ready_path,
            stop_seconds=stop_seconds,
        )
        process.start()
        if process.wait_ready():
            return process
        process.stop()
        if attempt == START_ATTEMPTS:
            raise AssertionError(f"{name} exited during startup\n{process.output()}")
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str
    inode: str


def tcp_table() -> list[TcpSocket]:
    """IPv4 TCP sockets of this network namespace, from /proc/net/tcp."""
    entries = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        entries.append(
            TcpSocket(
                local_port=int(fields[1].rsplit(":", 1)[1], 16),
                remote_port=int(fields[2].rsplit(":", 1)[1], 16),
                state=fields[3],
                inode=fields[9],
            )
        )
    return entries


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:  # closed between listdir and readlink
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listening_ports(pid: int) -> set[int]:
    try:
        inodes = socket_inodes(pid)
    except FileNotFoundError:
        return set()
    return {
        entry.local_port
        for entry in tcp_table()
        if entry.state == _TCP_LISTEN and entry.inode in inodes
    }


def wait_until(predicate: Callable[[], object], seconds: float, interval: float = 0.02) -> bool:
    """Poll `predicate()` until it is truthy or `seconds` pass; the last answer is returned."""
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)
