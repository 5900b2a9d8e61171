"""`make perf`: what the proxy adds to upstream latency, measured side by side in one run.

Starts the OpenRouter emulator and the app (one uvicorn worker each) on loopback ports, then
measures every goal against a direct call to the same emulator:

1. 200 requests in flight, upstream answering after 0.5 s: throughput and p50 ratios (wrk).
2. One connection, upstream answering at once: p50 added by the proxy, in ms (wrk).
3. POST /benchmark, 100 prompts x 2 runs at concurrency 100, upstream at 0.5 s: reported p50
   and wall time against the ideal.
4. 500 concurrent streamed /generate requests: all complete, and the app's memory growth.

wrk (Debian package `wrk`) is the load generator; without it the script says so and stops,
because a Python load generator on 2 cores would measure itself. Results are printed as a table
and saved as JSON under perf-results/. It is a benchmark: nothing here is asserted in CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "perf-results"
MODEL = "emulator/small"
SLOW = "[[emulator:delay=0.5]]"
FAST = "[[emulator:delay=0]]"
API_KEY = "perf-upstream-key"
WRK_SECONDS = int(os.environ.get("PERF_SECONDS", "10"))


@dataclass
class Row:
    goal: str
    metric: str
    direct: float
    proxy: float
    ratio: float
    target: str
    met: bool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT / "app")}
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class WrkResult:
    requests_per_second: float
    p50: float
    p99: float
    requests: int
    errors: int


def wrk(url: str, body: dict[str, object], connections: int, workdir: Path) -> WrkResult:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n'
    )
    threads = 1 if connections < 4 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{WRK_SECONDS}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50=_seconds(percentiles["50"]),
        p99=_seconds(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
    )


def goal_1_and_2(emulator: str, app: str, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    direct_url = f"{emulator}/api/v1/chat/completions"
    proxy_url = f"{app}/generate"

    def bodies(directive: str) -> tuple[dict[str, object], dict[str, object]]:
        prompt = f"{directive} Why is the sky blue?"
        direct = {
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 32,
        }
        proxy = {"model": MODEL, "prompt": prompt, "max_tokens": 32}
        return direct, proxy

    # Warm both paths (connection pools, caches, JIT-free but lazy imports) before measuring.
    for direct_body, proxy_body in (bodies(FAST),):
        wrk(direct_url, direct_body, 10, workdir)
        wrk(proxy_url, proxy_body, 10, workdir)

    direct_body, proxy_body = bodies(SLOW)
    direct = wrk(direct_url, direct_body, 200, workdir)
    proxy = wrk(proxy_url, proxy_body, 200, workdir)
    print_raw("goal 1 (200 in flight, 0.5 s upstream)", direct, proxy)
    throughput = proxy.requests_per_second / direct.requests_per_second
    p50_ratio = proxy.p50 / direct.p50
    rows.append(
        Row(
            "1: 200 in flight, upstream 0.5 s",
            "throughput (req/s)",
            direct.requests_per_second,
            proxy.requests_per_second,
            throughput,
            ">= 0.90x",
            throughput >= 0.9 and proxy.errors == 0,
        )
    )
    rows.append(
        Row(
            "1: 200 in flight, upstream 0.5 s",
            "p50 latency (s)",
            direct.p50,
            proxy.p50,
            p50_ratio,
            "<= 1.10x",
            p50_ratio <= 1.1 and proxy.errors == 0,
        )
    )

    direct_body, proxy_body = bodies(FAST)
    direct = wrk(direct_url, direct_body, 1, workdir)
    proxy = wrk(proxy_url, proxy_body, 1, workdir)
    print_raw("goal 2 (1 connection, instant upstream)", direct, proxy)
    added_ms = (proxy.p50 - direct.p50) * 1000
    rows.append(
        Row(
            "2: 1 connection, instant upstream",
            "p50 latency (ms)",
            direct.p50 * 1000,
            proxy.p50 * 1000,
            proxy.p50 / direct.p50,
            f"<= +1.0 ms (added {added_ms:.2f} ms)",
            added_ms <= 1.0 and proxy.errors == 0,
        )
    )
    return rows


def print_raw(label: str, direct: WrkResult, proxy: WrkResult) -> None:
    print(f"  {label}: direct {asdict(direct)}")
    print(f"  {label}: proxy  {asdict(proxy)}")


def goal_3(app: str) -> list[Row]:
    prompts = "\n".join(f"{SLOW} prompt number {i}" for i in range(100)) + "\n"
    response = httpx.post(
        f"{app}/benchmark",
        files={"prompt_file": ("prompts.txt", prompts.encode(), "text/plain")},
        data={"model": MODEL, "runs": "2", "concurrency": "100", "max_tokens": "16"},
        timeout=60,
    )
    response.raise_for_status()
    summary = response.json()
    stats = summary["models"][0]
    p50 = float(stats["latency"]["p50"])
    wall = float(summary["wall_seconds"])
    print(f"  goal 3: ok={stats['ok']} failed={stats['failed']} p50={p50:.4f} wall={wall:.3f}")
    return [
        Row(
            "3: /benchmark 100x2 @100, upstream 0.5 s",
            "reported p50 (s)",
            0.5,
            p50,
            p50 / 0.5,
            "within 5% of 0.5 s",
            abs(p50 - 0.5) <= 0.025 and stats["failed"] == 0,
        ),
        Row(
            "3: /benchmark 100x2 @100, upstream 0.5 s",
            "wall time (s)",
            1.0,
            wall,
            wall / 1.0,
            "within 15% of 1.0 s",
            abs(wall - 1.0) <= 0.15,
        ),
    ]


async def _stream_all(
    url: str, payload: dict[str, object], count: int, done_marker: bytes
) -> tuple[int, float]:
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one() -> bool:
            async with session.post(
                url, json=payload, timeout=aiohttp.ClientTimeout(total=60)
            ) as r:
                body = await r.read()
                return r.status == 200 and done_marker in body

        started = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        return sum(1 for r in results if r is True), time.perf_counter() - started


def goal_4(emulator: str, app: str, app_pid: int) -> list[Row]:
    prompt = "[[emulator:delay=0.5,tps=50]] Stream me a long answer please"
    direct_payload = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64,
        "stream": True,
    }
    proxy_payload = {"model": MODEL, "prompt": prompt, "max_tokens": 64, "stream": True}
    direct_ok, direct_time = asyncio.run(
        _stream_all(f"{emulator}/api/v1/chat/completions", direct_payload, 500, b"[DONE]")
    )
    rss_before = rss_kib(app_pid)
    proxy_ok, proxy_time = asyncio.run(
        _stream_all(f"{app}/generate", proxy_payload, 500, b"event: done")
    )
    rss_after = rss_kib(app_pid)
    growth_mib = (rss_after - rss_before) / 1024
    print(
        f"  goal 4: direct {direct_ok}/500 in {direct_time:.2f}s; proxy {proxy_ok}/500 in "
        f"{proxy_time:.2f}s; app RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB"
    )
    return [
        Row(
            "4: 500 concurrent streams",
            "completed",
            direct_ok,
            proxy_ok,
            proxy_ok / 500,
            "all 500",
            proxy_ok == 500,
        ),
        Row(
            "4: 500 concurrent streams",
            "time for all (s)",
            direct_time,
            proxy_time,
            proxy_time / direct_time,
            "reported",
            True,
        ),
        Row(
            "4: 500 concurrent streams",
            "app RSS growth (MiB)",
            0.0,
            growth_mib,
            0.0,
            f"reported ({rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB)",
            True,
        ),
    ]


def render(rows: list[Row]) -> str:
    lines = [
        "| goal | metric | direct | proxy | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.goal} | {r.metric} | {r.direct:.4g} | {r.proxy:.4g} | {r.ratio:.3f} "
            f"| {r.target} | {'yes' if r.met else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: `apt-get install wrk` (Debian) and run `make perf` again.")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="perf-"))
    emulator_port, app_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    app_url = f"http://127.0.0.1:{app_port}"
    emulator = start(
        "src.services.emulator",
        {
            "EMULATOR_HOST": "127.0.0.1",
            "EMULATOR_PORT": str(emulator_port),
            "EMULATOR_TTFT_SECONDS": "0",
            "EMULATOR_TOKENS_PER_SECOND": "0",
        },
        workdir / "emulator.log",
    )
    app = start(
        "src.serve",
        {
            "HOST": "127.0.0.1",
            "PORT": str(app_port),
            "WORKERS": "1",
            "OPENROUTER_API_KEY": API_KEY,
            "OPENROUTER_BASE_URL": f"{emulator_url}/api/v1",
            "LOG_DIR": str(workdir / "logs"),
            "BENCHMARKS_DIR": str(workdir / "benchmarks"),
            "LOG_LEVEL": "WARNING",
        },
        workdir / "app.log",
    )
    try:
        wait_ready(f"{emulator_url}/api/v1/models", emulator)
        wait_ready(f"{app_url}/health", app)
        rows = goal_1_and_2(emulator_url, app_url, workdir)
        rows += goal_3(app_url)
        rows += goal_4(emulator_url, app_url, app.pid)
    finally:
        stop(app)
        stop(emulator)
    table = render(rows)
    print()
    print(
        f"Machine: {os.cpu_count()} cores, one uvicorn worker per process, loopback, "
        f"wrk {WRK_SECONDS}s"
    )
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {"measured_at": stamp, "cores": os.cpu_count(), "rows": [asdict(r) for r in rows]}
    for name in (f"perf-{stamp}.json", "latest.json"):
        (RESULTS_DIR / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nSaved {RESULTS_DIR / f'perf-{stamp}.json'}")
    return 0 if all(r.met for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
