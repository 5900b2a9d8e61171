"""How long after a benchmark request finishes its `progress` event reaches a follower of
`GET /benchmarks/{id}/events`, with each run store: `files` (the state file, read every
0.25 s) and `redis` (the runner publishes each change; no polling).

`python scripts/events_latency.py [files|redis ...]` (with PYTHONPATH unset: it sets its own).
It starts, on loopback, the emulator, a service (and, for redis, a redis-server on a free port
and one runner, `python -m src.runner`), runs one benchmark of REQUESTS requests one at a time,
each answered after REQUEST_SECONDS (more than the events' one-progress-a-second pace, so
every finished request makes its own event), and follows its events.

A request ends where the next one starts (concurrency 1): the runner logs each start, with a
millisecond timestamp on this machine's clock, which the follower reads too. Latency: the
event's arrival minus the end of the request that made it. Printed per backend: median and
worst, and the machine. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
REQUESTS = 8
REQUEST_SECONDS = 1.3
MODEL = "emulator/small"
KEY = "events-latency-key"
STARTED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (?:INFO|DEBUG) - STARTED SINGLE PROMPT",
    re.MULTILINE,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def start(module: str, workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    full = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(REPO_ROOT / "app"),
        "LOG_DIR": str(workdir / "logs"),
        # Every request's start line: at INFO only the first of each series is logged.
        "LOG_LEVEL": "DEBUG",
        "BENCHMARKS_DIR": str(workdir / "benchmarks"),
        **env,
    }
    with open(workdir / "output.txt", "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", module], cwd=workdir, env=full, stdout=output, stderr=output
        )


def wait_for(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if callable(check) and check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"not ready after {seconds}s")


def serving(url: str) -> bool:
    return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200


def measure(backend: str, root: Path, emulator_url: str) -> list[float]:
    processes: list[subprocess.Popen[bytes]] = []
    port = free_port()
    env = {
        "HOST": LOOPBACK,
        "PORT": str(port),
        "OPENROUTER_API_KEY": KEY,
        "OPENROUTER_BASE_URL": f"{emulator_url}/api/v1",
        "JOBS_BACKEND": backend,
    }
    logs = [root / backend / "api" / "logs" / "server_logs.txt"]
    try:
        if backend == "redis":
            redis_port = free_port()
            processes.append(
                subprocess.Popen(
                    ["redis-server", "--port", str(redis_port), "--bind", LOOPBACK,
                     "--save", "", "--appendonly", "no", "--dir", str(root)],
                    stdout=subprocess.DEVNULL,
                )
            )  # fmt: skip
            env["REDIS_URL"] = f"redis://{LOOPBACK}:{redis_port}/0"
            processes.append(start("src.runner", root / backend / "runner", env))
            logs.append(root / backend / "runner" / "logs" / "server_logs.txt")
        processes.append(start("src.serve", root / backend / "api", env))
        url = f"http://{LOOPBACK}:{port}"
        wait_for(lambda: serving(f"{url}/health"))
        if backend == "redis":
            wait_for(lambda: httpx.get(f"{url}/health").json()["jobs"]["runners"] == 1)
        arrivals = follow_one_run(url)
        time.sleep(1.0)  # the log lines are written by a queue
        starts = sorted(
            datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for log in logs
            if log.exists()
            for stamp in STARTED.findall(log.read_text(encoding="utf-8"))
        )
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    # The request numbered `done` ended as the next one started.
    return [arrived - starts[done] for arrived, done in arrivals if 0 < done < len(starts)]


def follow_one_run(url: str) -> list[tuple[float, int]]:
    prompts = "\n".join(
        f"Latency {index} [[emulator:ttft={REQUEST_SECONDS},tps=0]] {time.time_ns()}"
        for index in range(REQUESTS)
    )
    with httpx.Client(base_url=url, timeout=60.0, trust_env=False) as http:
        accepted = http.post(
            "/benchmark",
            params={"background": "true"},
            data={"model": MODEL, "runs": "1", "concurrency": "1", "max_tokens": "4"},
            files={"prompt_file": ("prompts.txt", prompts.encode(), "text/plain")},
        )
        accepted.raise_for_status()
        arrivals = []
        with http.stream("GET", f"{accepted.headers['location']}/events") as stream:
            name = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: ") and name == "progress":
                    data = json.loads(line.removeprefix("data: "))
                    arrivals.append((time.time(), int(data["progress"]["done"])))
                elif name == "summary":
                    break
    return arrivals


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    backends = sys.argv[1:] or ["files", "redis"]
    if "redis" in backends and shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="events-latency-") as tmp:
        root = Path(tmp)
        emulator_port = free_port()
        emulator = start(
            "src.services.emulator",
            root / "emulator",
            {"EMULATOR_HOST": LOOPBACK, "EMULATOR_PORT": str(emulator_port)},
        )
        emulator_url = f"http://{LOOPBACK}:{emulator_port}"
        try:
            wait_for(lambda: serving(f"{emulator_url}/api/v1/models"))
            for backend in backends:
                latencies = sorted(measure(backend, root, emulator_url))
                shown = ", ".join(f"{value * 1000:.0f}" for value in latencies)
                print(
                    f"{backend:>5}: request finished -> progress event: median "
                    f"{statistics.median(latencies) * 1000:.0f} ms, worst "
                    f"{latencies[-1] * 1000:.0f} ms over {len(latencies)} events ({shown} ms)"
                )
        finally:
            emulator.send_signal(signal.SIGTERM)
            emulator.wait(10)


if __name__ == "__main__":
    main()
