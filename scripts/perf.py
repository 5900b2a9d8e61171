"""`make perf`: what the service adds to upstream latency, and how true its benchmark figures are.

Everything is measured in one run, on this machine, as a ratio against references run beside
the service: the emulator called directly, a minimal FastAPI + aiohttp proxy
(scripts/reference_proxy.py) and a minimal aiohttp benchmark client (scripts/reference_client.py).
One uvicorn worker per process, loopback only; wrk (Debian package `wrk`) generates the load,
because a Python load generator on 2 cores would measure itself.

Goals:
1. 200 requests in flight, upstream answering after 0.5 s: throughput >= 0.90x and p50 <= 1.10x
   of calling the upstream directly.
2. One connection, upstream answering at once: the service adds at most 1.0 ms to the p50.
3. POST /benchmark, 100 prompts x 2 runs at concurrency 100, upstream at 0.5 s: reported p50
   within 5% of 0.5 s, wall time within 15% of 1.0 s.
4. 500 concurrent streamed /generate requests: all complete; time and memory growth reported.
5. Benchmark truth, same benchmark, plain and streamed: reported latency p50 and TTFT p50 each
   within 3% of 0.5 s, and no further from it than the minimal aiohttp client's.
6. Isolation: the same benchmark while /generate carries 50 connections of traffic (0.5 s
   upstream): the reported p50s move by at most 3%.
7. Hot path: at 200 in flight, throughput >= 1.0x and p50 <= 1.0x of the minimal FastAPI proxy;
   at one connection, the service adds no more latency than the minimal proxy does.
8. The OpenAI-compatible face: /v1/chat/completions at 200 in flight (0.5 s upstream) reaches
   >= 0.95x the throughput of /generate, and at one connection adds no more latency than it.
9. The two upstream transports, reported and not judged: a second service with
   UPSTREAM_TRANSPORT=httpx against the default (wire), on the 200-in-flight and one-connection
   loads and on the benchmark truth goal. `python scripts/perf.py transports` runs only this.
10. The open-loop rate the runner holds: one rate sweep (PERF_RATES, PERF_RATE_SECONDS per
   step) against an emulator answering after 0.1 s; the highest rate whose step kept send lag
   p50 <= 5 ms and p99 <= 50 ms, reported latency p50 within 3% of 0.1 s and no failure. Once
   with one runner process per run, once with RUNNER_PROCESSES=2 (the schedule split between
   two). Beside it, when aiperf is installed in an environment of its own (PERF_AIPERF, PATH,
   or /tmp/aiperf-venv), the highest rate aiperf holds against the same emulator by the same
   rule, its credit-to-start latency standing for the send lag.
   `python scripts/perf.py rates` runs only this.

`python scripts/perf.py profile` (`make profile`) measures no goal: it loads /generate at
PROFILE_CONNECTIONS connections against an upstream that answers at once, samples the service's
process with py-spy for PROFILE_SECONDS, and prints where its time goes: by function (own time)
and by the innermost function of the service's own code. Profile before and after changing a
measured path.

Proxy comparisons run in interleaved rounds (direct, proxy, service, OpenAI face, direct, ...),
and the median of the rounds counts, so that a noisy neighbour on the machine hits every
contender alike. Results are printed as a table and saved as JSON under perf-results/. It is a
benchmark: nothing here is asserted in CI.
"""

from __future__ import annotations

import asyncio
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
from collections import Counter
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
API_KEY = "perf-upstream-key-0123456789"
WRK_SECONDS = int(os.environ.get("PERF_SECONDS", "8"))
ROUNDS = int(os.environ.get("PERF_ROUNDS", "3"))
TRUE_LATENCY = 0.5
# The upstream counts as settled once a burst of the minimal client reads its p50 less than
# this share of the true latency sooner than the burst before.
SETTLED_GAIN = 0.005
SETTLE_BURSTS = 5
RATES = [float(rate) for rate in os.environ.get("PERF_RATES", "100,200,400,800,1600").split(",")]
RATE_SECONDS = float(os.environ.get("PERF_RATE_SECONDS", "3"))
RATE_TRUE_LATENCY = 0.1
PROFILE_SECONDS = int(os.environ.get("PROFILE_SECONDS", "15"))
PROFILE_CONNECTIONS = int(os.environ.get("PROFILE_CONNECTIONS", "50"))
PROFILE_TOP = 12


@dataclass
class Row:
    goal: str
    metric: str
    reference: str
    reference_value: float
    service: float
    ratio: float
    target: str
    met: bool


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT / "app")}
    return subprocess.Popen(
        [sys.executable, *args],
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
            if httpx.get(url, timeout=1).status_code < 500:
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


def start_service(
    port: int, emulator_url: str, workdir: Path, **env: str
) -> subprocess.Popen[bytes]:
    name = env.get("UPSTREAM_TRANSPORT", "service")
    return start(
        ["-m", "src.serve"],
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": "1",
            "OPENROUTER_API_KEY": API_KEY,
            "OPENROUTER_BASE_URL": f"{emulator_url}/api/v1",
            "LOG_DIR": str(workdir / name / "logs"),
            "BENCHMARKS_DIR": str(workdir / name / "benchmarks"),
            **env,
        },
        workdir / f"{name}.log",
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) // (1024 * 1024)
    return (
        f"{os.cpu_count()} cores, {cpu}, {memory} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


# --- wrk -----------------------------------------------------------------------------------------

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


def wrk_command(
    url: str, body: dict[str, object], connections: int, seconds: int, workdir: Path
) -> list[str]:
    script = workdir / f"post-{abs(hash(json.dumps(body, sort_keys=True)))}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n'
    )
    threads = 1 if connections < 4 else 2
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]


def wrk(url: str, body: dict[str, object], connections: int, workdir: Path) -> WrkResult:
    command = wrk_command(url, body, connections, WRK_SECONDS, workdir)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # wrk pads a figure in seconds ("1.25s ") to the width of one in milliseconds.
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    if "99" not in percentiles:
        raise SystemExit(f"wrk measured nothing at {url}:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50=_seconds(percentiles["50"]),
        p99=_seconds(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
    )


def median_result(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        requests_per_second=statistics.median(r.requests_per_second for r in results),
        p50=statistics.median(r.p50 for r in results),
        p99=statistics.median(r.p99 for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
    )


# --- the lab -------------------------------------------------------------------------------


@dataclass
class Lab:
    workdir: Path
    emulator: str
    service: str
    proxy: str
    service_pid: int

    def bodies(self, directive: str) -> dict[str, tuple[str, dict[str, object]]]:
        """What each contender is sent for the same upstream work."""
        prompt = f"{directive} Why is the sky blue?"
        chat = {
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 32,
        }
        generate = {"model": MODEL, "prompt": prompt, "max_tokens": 32}
        return {
            "direct": (f"{self.emulator}/api/v1/chat/completions", chat),
            "minimal proxy": (f"{self.proxy}/generate", generate),
            "service": (f"{self.service}/generate", generate),
            "openai face": (f"{self.service}/v1/chat/completions", chat),
        }

    def interleaved(self, directive: str, connections: int) -> dict[str, WrkResult]:
        targets = self.bodies(directive)
        runs: dict[str, list[WrkResult]] = {name: [] for name in targets}
        for _ in range(ROUNDS):
            for name, (url, body) in targets.items():
                runs[name].append(wrk(url, body, connections, self.workdir))
        for name, results in runs.items():
            figures = [asdict(r) for r in results]
            print(f"  {connections} connection(s), {directive}: {name}: {figures}")
        return {name: median_result(results) for name, results in runs.items()}


def proxy_goals(lab: Lab) -> list[Row]:
    for url, body in lab.bodies(FAST).values():  # warm pools and caches
        wrk(url, body, 10, lab.workdir)
    slow = lab.interleaved(SLOW, 200)
    fast = lab.interleaved(FAST, 1)
    direct, proxy, service = slow["direct"], slow["minimal proxy"], slow["service"]
    clean = service.errors == 0
    added = (fast["service"].p50 - fast["direct"].p50) * 1000
    proxy_added = (fast["minimal proxy"].p50 - fast["direct"].p50) * 1000
    g1, g2, g7 = (
        "1: 200 in flight, upstream 0.5 s",
        "2: 1 connection, instant upstream",
        "7: hot path vs minimal proxy",
    )
    throughput = service.requests_per_second / direct.requests_per_second
    p50 = service.p50 / direct.p50
    vs_proxy_throughput = service.requests_per_second / proxy.requests_per_second
    vs_proxy_p50 = service.p50 / proxy.p50
    return [
        *openai_face_rows(slow, fast),
        Row(
            g1,
            "throughput (req/s)",
            "direct",
            direct.requests_per_second,
            service.requests_per_second,
            throughput,
            ">= 0.90x",
            throughput >= 0.9 and clean,
        ),
        Row(
            g1,
            "p50 latency (s)",
            "direct",
            direct.p50,
            service.p50,
            p50,
            "<= 1.10x",
            p50 <= 1.1 and clean,
        ),
        Row(
            g2,
            "p50 latency (ms)",
            "direct",
            fast["direct"].p50 * 1000,
            fast["service"].p50 * 1000,
            fast["service"].p50 / fast["direct"].p50,
            f"<= +1.0 ms (added {added:.2f} ms)",
            added <= 1.0 and fast["service"].errors == 0,
        ),
        Row(
            g7,
            "throughput at 200 in flight (req/s)",
            "minimal proxy",
            proxy.requests_per_second,
            service.requests_per_second,
            vs_proxy_throughput,
            ">= 1.0x",
            vs_proxy_throughput >= 1.0 and clean,
        ),
        Row(
            g7,
            "p50 at 200 in flight (s)",
            "minimal proxy",
            proxy.p50,
            service.p50,
            vs_proxy_p50,
            "<= 1.0x",
            vs_proxy_p50 <= 1.0 and clean,
        ),
        Row(
            g7,
            "added p50 at 1 connection (ms)",
            "minimal proxy",
            proxy_added,
            added,
            added / proxy_added if proxy_added > 0 else float("inf"),
            "<= minimal proxy's",
            added <= proxy_added,
        ),
    ]


def openai_face_rows(slow: dict[str, WrkResult], fast: dict[str, WrkResult]) -> list[Row]:
    """Goal 8: /v1/chat/completions against /generate, measured in the same rounds."""
    generate, face = slow["service"], slow["openai face"]
    throughput = face.requests_per_second / generate.requests_per_second
    generate_added = (fast["service"].p50 - fast["direct"].p50) * 1000
    face_added = (fast["openai face"].p50 - fast["direct"].p50) * 1000
    g8 = "8: /v1/chat/completions vs /generate"
    return [
        Row(
            g8,
            "throughput at 200 in flight, upstream 0.5 s (req/s)",
            "/generate",
            generate.requests_per_second,
            face.requests_per_second,
            throughput,
            ">= 0.95x",
            throughput >= 0.95 and face.errors == 0,
        ),
        Row(
            g8,
            "p50 at 200 in flight (s)",
            "/generate",
            generate.p50,
            face.p50,
            face.p50 / generate.p50,
            "reported",
            face.errors == 0,
        ),
        Row(
            g8,
            "added p50 at 1 connection (ms)",
            "/generate",
            generate_added,
            face_added,
            face_added / generate_added if generate_added > 0 else float("inf"),
            "<= /generate's",
            face_added <= generate_added and fast["openai face"].errors == 0,
        ),
    ]


# --- benchmark truth -----------------------------------------------------------------------------


@dataclass
class BenchmarkFigures:
    p50: float
    ttft_p50: float | None
    wall: float
    failed: int


def run_benchmark(lab: Lab, stream: bool) -> BenchmarkFigures:
    prompts = "\n".join(f"{SLOW} prompt number {i}" for i in range(100)) + "\n"
    response = httpx.post(
        f"{lab.service}/benchmark",
        files={"prompt_file": ("prompts.txt", prompts.encode(), "text/plain")},
        data={
            "model": MODEL,
            "runs": "2",
            "concurrency": "100",
            "max_tokens": "16",
            "stream": "true" if stream else "false",
        },
        timeout=120,
    )
    response.raise_for_status()
    summary = response.json()
    stats = summary["models"][0]
    figures = BenchmarkFigures(
        p50=float(stats["latency"]["p50"]),
        ttft_p50=stats["ttft"]["p50"],
        wall=float(summary["wall_seconds"]),
        failed=int(stats["failed"]),
    )
    print(f"  /benchmark stream={stream}: {figures}")
    return figures


def reference_client(lab: Lab, stream: bool) -> dict[str, float]:
    command = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "reference_client.py"),
        f"{lab.emulator}/api/v1/chat/completions",
        MODEL,
        f"{SLOW} the reference client",
        "200",
        "100",
    ]
    if stream:
        command.append("--stream")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out)
    print(f"  minimal client stream={stream}: {result}")
    return result


def settle_upstream(lab: Lab) -> None:
    """Right after the load goals, the emulator answers bursts of new connections late,
    whichever client sends them (the minimal client reads it too), and less late with each
    burst. Unmeasured bursts of the minimal client first, until one reads the upstream no
    sooner than the burst before it (or SETTLE_BURSTS have been sent), so that every client is
    timed against the same upstream."""
    print("  settling the upstream after the load goals (not measured):")
    previous = float("inf")
    for _ in range(SETTLE_BURSTS):
        p50 = reference_client(lab, stream=False)["p50"]
        if p50 > previous - SETTLED_GAIN * TRUE_LATENCY:
            return
        previous = p50


def truth_goals(lab: Lab) -> tuple[list[Row], BenchmarkFigures, BenchmarkFigures]:
    settle_upstream(lab)
    plain = run_benchmark(lab, stream=False)
    streamed = run_benchmark(lab, stream=True)
    client_plain = reference_client(lab, stream=False)
    client_stream = reference_client(lab, stream=True)
    g3, g5 = "3: /benchmark 100x2 @100, upstream 0.5 s", "5: benchmark truth"

    def truthful(value: float, reference: float) -> bool:
        error = abs(value - TRUE_LATENCY)
        return error <= 0.03 * TRUE_LATENCY and error <= abs(reference - TRUE_LATENCY)

    ttft = streamed.ttft_p50 or float("nan")
    rows = [
        Row(
            g3,
            "reported p50 (s)",
            "true latency",
            TRUE_LATENCY,
            plain.p50,
            plain.p50 / TRUE_LATENCY,
            "within 5% of 0.5 s",
            abs(plain.p50 - TRUE_LATENCY) <= 0.05 * TRUE_LATENCY and plain.failed == 0,
        ),
        Row(
            g3,
            "wall time (s)",
            "ideal",
            1.0,
            plain.wall,
            plain.wall,
            "within 15% of 1.0 s",
            abs(plain.wall - 1.0) <= 0.15,
        ),
        Row(
            g5,
            "plain latency p50 (s)",
            "minimal client",
            client_plain["p50"],
            plain.p50,
            plain.p50 / TRUE_LATENCY,
            "within 3% of 0.5 s, <= client's error",
            truthful(plain.p50, client_plain["p50"]) and plain.failed == 0,
        ),
        Row(
            g5,
            "streamed TTFT p50 (s)",
            "minimal client",
            client_stream["ttft_p50"],
            ttft,
            ttft / TRUE_LATENCY,
            "within 3% of 0.5 s, <= client's error",
            truthful(ttft, client_stream["ttft_p50"]) and streamed.failed == 0,
        ),
    ]
    return rows, plain, streamed


def isolation_goals(
    lab: Lab, quiet_plain: BenchmarkFigures, quiet_stream: BenchmarkFigures
) -> list[Row]:
    url, body = lab.bodies(SLOW)["service"]
    load = subprocess.Popen(
        wrk_command(url, body, 50, 60, lab.workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2)  # steady state: 50 connections in flight
        plain = run_benchmark(lab, stream=False)
        streamed = run_benchmark(lab, stream=True)
    finally:
        load.send_signal(signal.SIGINT)
        load.wait(10)
    g6 = "6: isolation, /generate at 50 connections"
    plain_shift = plain.p50 / quiet_plain.p50
    quiet_ttft = quiet_stream.ttft_p50 or float("nan")
    ttft_shift = (streamed.ttft_p50 or float("nan")) / quiet_ttft
    return [
        Row(
            g6,
            "plain latency p50 (s)",
            "same, quiet",
            quiet_plain.p50,
            plain.p50,
            plain_shift,
            "moves <= 3%",
            abs(plain_shift - 1) <= 0.03 and plain.failed == 0,
        ),
        Row(
            g6,
            "streamed TTFT p50 (s)",
            "same, quiet",
            quiet_ttft,
            streamed.ttft_p50 or 0.0,
            ttft_shift,
            "moves <= 3%",
            abs(ttft_shift - 1) <= 0.03 and streamed.failed == 0,
        ),
    ]


# --- streams -----------------------------------------------------------------------------------


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


def stream_goals(lab: Lab) -> list[Row]:
    """500 streams at once, direct and through both faces of the service, in interleaved
    rounds (medians): the relay's side of high load."""
    prompt = "[[emulator:delay=0.5,tps=50]] Stream me a long answer please"
    chat = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64,
        "stream": True,
    }
    generate = {"model": MODEL, "prompt": prompt, "max_tokens": 64, "stream": True}
    contenders = {
        "direct": (f"{lab.emulator}/api/v1/chat/completions", chat, b"[DONE]"),
        "/generate": (f"{lab.service}/generate", generate, b"event: done"),
        "/v1": (f"{lab.service}/v1/chat/completions", chat, b"[DONE]"),
    }
    completed: dict[str, list[int]] = {name: [] for name in contenders}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    rss_before = rss_kib(lab.service_pid)
    for _ in range(ROUNDS):
        for name, (url, payload, marker) in contenders.items():
            ok, seconds = asyncio.run(_stream_all(url, payload, 500, marker))
            completed[name].append(ok)
            times[name].append(seconds)
    rss_after = rss_kib(lab.service_pid)
    print(f"  500 streams: completed {completed}, seconds {times}")
    direct_time = statistics.median(times["direct"])
    g4 = "4: 500 concurrent streams"
    memory = f"reported ({rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB)"
    rows: list[Row] = []
    for face in ("/generate", "/v1"):
        ok = min(completed[face])
        face_time = statistics.median(times[face])
        rows.append(Row(g4, f"{face} completed", "direct", 500, ok, ok / 500, "all 500", ok == 500))
        rows.append(
            Row(
                g4,
                f"{face} time for all (s)",
                "direct",
                direct_time,
                face_time,
                face_time / direct_time,
                "<= 1.2x direct",
                face_time <= 1.2 * direct_time,
            )
        )
    growth = (rss_after - rss_before) / 1024
    rows.append(Row(g4, "app RSS growth (MiB)", "none", 0.0, growth, 0.0, memory, True))
    return rows


# --- the open-loop rate the runner holds -------------------------------------------------------


def rate_goals(lab: Lab) -> list[Row]:
    """Goal 10: a rate sweep on a service of its own whose caps let the highest rate through,
    once with one runner process per run and once with RUNNER_PROCESSES=2; beside it, when
    aiperf is installed (in an environment of its own), the rate aiperf holds on the same
    emulator."""
    held = {processes: _highest_rate_held(lab, processes) for processes in (1, 2)}
    aiperf = aiperf_rate_held(lab)
    goal = "10: open-loop rate held, upstream 0.1 s"
    target = "lag p50<=5 ms, p99<=50 ms, p50 within 3%"
    return [
        Row(
            goal,
            "highest rate held (req/s), 1 runner process",
            "aiperf not installed" if aiperf is None else "aiperf",
            float("nan") if aiperf is None else aiperf,
            held[1],
            held[1] / aiperf if aiperf else held[1] / RATES[-1],
            target,
            held[1] > 0,
        ),
        Row(
            goal,
            "highest rate held (req/s), RUNNER_PROCESSES=2",
            "1 runner process",
            held[1],
            held[2],
            held[2] / held[1] if held[1] else float("nan"),
            target,
            held[2] > 0,
        ),
    ]


def _highest_rate_held(lab: Lab, processes: int) -> float:
    port = free_port()
    caps = {
        "MAX_CONCURRENCY": "2000",
        "MAX_INFLIGHT_TOTAL": "2000",
        "MAX_BENCHMARK_REQUESTS": "1000000",
        "UPSTREAM_MAX_CONNECTIONS": "2000",
        "RUNNER_PROCESSES": str(processes),
    }
    workdir = lab.workdir / f"rates-{processes}"
    workdir.mkdir(exist_ok=True)
    service = start_service(port, lab.emulator, workdir, **caps)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", service)
        print(f"  RUNNER_PROCESSES={processes}:")
        steps = _rate_sweep(f"http://127.0.0.1:{port}")
    finally:
        stop(service)
    return max((step.rate for step in steps if step.held()), default=0.0)


# aiperf lives in an environment of its own (never a dependency of this project): PERF_AIPERF,
# else on PATH, else where `python3 -m venv /tmp/aiperf-venv` put it.
AIPERF_CANDIDATES = (
    os.environ.get("PERF_AIPERF"),
    shutil.which("aiperf"),
    "/tmp/aiperf-venv/bin/aiperf",
)
# aiperf counts tokens with a Hugging Face tokenizer; this machine has no network, so a
# byte-level one (every byte a token) is built here and served from a local hub cache.
AIPERF_TOKENIZER = "local/bytes"
_TOKENIZER_SCRIPT = """
import json, pathlib, string, sys
from tokenizers import ByteLevelBPETokenizer
snapshot = pathlib.Path(sys.argv[1])
snapshot.mkdir(parents=True, exist_ok=True)
tokenizer = ByteLevelBPETokenizer()
tokenizer.train_from_iterator([string.printable], vocab_size=300, min_frequency=1,
                              show_progress=False)
tokenizer.save(str(snapshot / "tokenizer.json"))
config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1000000}
(snapshot / "tokenizer_config.json").write_text(json.dumps(config))
"""


def find_aiperf() -> Path | None:
    for candidate in AIPERF_CANDIDATES:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def aiperf_rate_held(lab: Lab) -> float | None:
    """The highest of RATES that aiperf holds against the same emulator, by the same rule
    (its credit-to-start latency standing for the send lag); None when it is not installed."""
    aiperf = find_aiperf()
    if aiperf is None:
        print("  aiperf is not installed: its rate is not measured (see PERF_AIPERF).")
        return None
    hub = lab.workdir / "aiperf-hub"
    commit = "0" * 39 + "1"
    repo = hub / ("models--" + AIPERF_TOKENIZER.replace("/", "--"))
    subprocess.run(
        [str(aiperf.parent / "python"), "-c", _TOKENIZER_SCRIPT, str(repo / "snapshots" / commit)],
        check=True,
    )
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    held = 0.0
    print(f"  aiperf ({aiperf}):")
    for rate in RATES:
        step = _aiperf_step(aiperf, lab, rate, env)
        print(f"  rate step: {step}")
        if step.held():
            held = rate
    return held


def _aiperf_step(aiperf: Path, lab: Lab, rate: float, env: dict[str, str]) -> RateStep:
    artifacts = lab.workdir / f"aiperf-{rate:g}"
    # fmt: off
    command = [
        str(aiperf), "profile", "--model", MODEL, "--url", f"{lab.emulator}/api",
        "--endpoint-type", "chat", "--request-rate", f"{rate:g}",
        "--arrival-pattern", "constant", "--benchmark-duration", f"{RATE_SECONDS:g}",
        "--warmup-request-count", "20", "--tokenizer", AIPERF_TOKENIZER,
        "--header", f"X-Emulator-Scenario:delay={RATE_TRUE_LATENCY}",
        "--prompt-input-tokens-mean", "32", "--prompt-output-tokens-mean", "16",
        "--ui", "none", "--no-gpu-telemetry", "--artifact-dir", str(artifacts),
        "--api-key", API_KEY,
    ]
    # fmt: on
    with (artifacts.parent / f"aiperf-{rate:g}.log").open("wb") as log:
        subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    try:
        figures = json.loads((artifacts / "profile_export_aiperf.json").read_text())
    except (OSError, ValueError):
        return RateStep(rate, None, None, None, None, failed=1)

    def metric(name: str, stat: str, scale: float = 1.0) -> float | None:
        value = figures.get(name, {}).get(stat)
        return None if value is None else float(value) * scale

    errors = metric("request_error_rate", "avg") or 0.0
    return RateStep(
        rate=rate,
        achieved=metric("request_throughput", "avg"),
        lag_p50=metric("credit_to_start_latency", "p50", 0.001),
        lag_p99=metric("credit_to_start_latency", "p99", 0.001),
        p50=metric("request_latency", "p50", 0.001),
        failed=1 if errors > 0 else 0,
    )


@dataclass
class RateStep:
    rate: float
    achieved: float | None
    lag_p50: float | None
    lag_p99: float | None
    p50: float | None
    failed: int

    def held(self) -> bool:
        if self.lag_p50 is None or self.lag_p99 is None or self.p50 is None or self.failed:
            return False
        error = abs(self.p50 - RATE_TRUE_LATENCY) / RATE_TRUE_LATENCY
        return self.lag_p50 <= 0.005 and self.lag_p99 <= 0.05 and error <= 0.03


def _rate_sweep(service: str) -> list[RateStep]:
    prompts = "\n".join(f"[[emulator:delay={RATE_TRUE_LATENCY}]] rate {i}" for i in range(50))
    response = httpx.post(
        f"{service}/benchmark",
        files={"prompt_file": ("prompts.txt", prompts.encode() + b"\n", "text/plain")},
        data={
            "model": MODEL,
            "sweep": "rate",
            "sweep_values": ",".join(f"{rate:g}" for rate in RATES),
            "duration": str(RATE_SECONDS),
            "concurrency": "2000",
            "max_tokens": "16",
            "stream": "false",
            "warmup": "20",
        },
        timeout=RATE_SECONDS * len(RATES) * 3 + 60,
    )
    response.raise_for_status()
    steps = []
    for step in response.json()["steps"]:
        stats, schedule = step["models"][0], step["schedule"]
        figures = RateStep(
            rate=float(step["rate"]),
            achieved=schedule["achieved_rate"],
            lag_p50=schedule["lag_p50"],
            lag_p99=schedule["lag_p99"],
            p50=stats["latency"]["p50"],
            failed=int(stats["failed"]),
        )
        print(f"  rate step: {figures}")
        steps.append(figures)
    return steps


# --- the two transports ------------------------------------------------------------------------


def transport_goals(lab: Lab) -> list[Row]:
    """Goal 9, reported only: the same service on httpx's transport against our own, each
    measured in the same interleaved rounds, started only for this and stopped after."""
    port = free_port()
    process = start_service(port, lab.emulator, lab.workdir, UPSTREAM_TRANSPORT="httpx")
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", process)
        other = Lab(lab.workdir, lab.emulator, f"http://127.0.0.1:{port}", lab.proxy, process.pid)
        url, body = other.bodies(FAST)["service"]
        wrk(url, body, 10, lab.workdir)  # warm its pool
        loads: dict[int, dict[str, WrkResult]] = {}
        for directive, connections in ((SLOW, 200), (FAST, 1)):
            runs: dict[str, list[WrkResult]] = {"wire": [], "httpx": []}
            for _ in range(ROUNDS):
                for name, one in (("wire", lab), ("httpx", other)):
                    url, body = one.bodies(directive)["service"]
                    runs[name].append(wrk(url, body, connections, lab.workdir))
            loads[connections] = {name: median_result(r) for name, r in runs.items()}
            print(f"  transports, {connections} connection(s): {loads[connections]}")
        truth = {
            name: (run_benchmark(one, stream=False), run_benchmark(one, stream=True))
            for name, one in (("wire", lab), ("httpx", other))
        }
    finally:
        stop(process)
    g9 = "9: UPSTREAM_TRANSPORT=httpx vs wire"
    busy, single = loads[200], loads[1]
    wire_plain, wire_stream = truth["wire"]
    httpx_plain, httpx_stream = truth["httpx"]
    pairs = [
        (
            "throughput at 200 in flight, upstream 0.5 s (req/s)",
            busy["wire"].requests_per_second,
            busy["httpx"].requests_per_second,
            busy["httpx"].errors == 0,
        ),
        ("p50 at 200 in flight (s)", busy["wire"].p50, busy["httpx"].p50, True),
        ("p50 at 1 connection (ms)", single["wire"].p50 * 1000, single["httpx"].p50 * 1000, True),
        ("benchmark plain latency p50 (s), true 0.5", wire_plain.p50, httpx_plain.p50, True),
        (
            "benchmark streamed TTFT p50 (s), true 0.5",
            wire_stream.ttft_p50 or float("nan"),
            httpx_stream.ttft_p50 or float("nan"),
            httpx_stream.failed == 0,
        ),
    ]
    return [
        Row(g9, metric, "wire", wire, other_value, other_value / wire, "reported", clean)
        for metric, wire, other_value, clean in pairs
    ]


# --- profile ---------------------------------------------------------------------------------


def profile(lab: Lab) -> None:
    """Where the service's process spends its time under load (py-spy samples, own time)."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: `make sync` installs it with the dev tools.")
    url, body = lab.bodies(FAST)["service"]
    wrk(url, body, 10, lab.workdir)  # warm pools and caches
    load = subprocess.Popen(
        wrk_command(url, body, PROFILE_CONNECTIONS, PROFILE_SECONDS + 4, lab.workdir),
        stdout=subprocess.DEVNULL,
    )
    raw = lab.workdir / "profile.txt"
    try:
        time.sleep(2)
        subprocess.run(
            [spy, "record", "-p", str(lab.service_pid), "-d", str(PROFILE_SECONDS), "-r", "250"]
            + ["--nolineno", "--nonblocking", "-f", "raw", "-o", str(raw)],
            check=True,
            capture_output=True,
        )
    finally:
        load.wait()
    own, ours, total = _profile_shares(raw.read_text())
    load_text = f"/generate at {PROFILE_CONNECTIONS} connections, upstream answering at once"
    print(f"\nMachine: {machine()}. {total} samples, {load_text}")
    for title, counts in (("own time, by function", own), ("innermost service code", ours)):
        print(f"\n{title}:")
        for frame, count in counts.most_common(PROFILE_TOP):
            print(f"  {count / total:6.1%}  {frame}")
    print(f"\nRaw stacks: {raw}")


def _profile_shares(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's collapsed stacks ("outer;...;inner count") as samples per leaf function and per
    innermost frame in the service's own code (src/)."""
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        own[frames[-1]] += count
        innermost_ours = next((frame for frame in reversed(frames) if "(src/" in frame), None)
        ours[innermost_ours or "outside src/"] += count
    return own, ours, max(own.total(), 1)


# --- report --------------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    lines = [
        "| goal | metric | reference | reference value | service | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.goal} | {r.metric} | {r.reference} | {r.reference_value:.4g} | "
            f"{r.service:.4g} | {r.ratio:.3f} | {r.target} | {'yes' if r.met else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: `apt-get install wrk` (Debian) and run `make perf` again.")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="perf-"))
    emulator_port, service_port, proxy_port = free_port(), free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    service_url = f"http://127.0.0.1:{service_port}"
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    emulator = start(
        ["-m", "src.services.emulator"],
        {
            "EMULATOR_HOST": "127.0.0.1",
            "EMULATOR_PORT": str(emulator_port),
            "EMULATOR_TTFT_SECONDS": "0",
            "EMULATOR_TOKENS_PER_SECOND": "0",
        },
        workdir / "emulator.log",
    )
    service = start_service(service_port, emulator_url, workdir)
    proxy = start(
        [
            "-m",
            "uvicorn",
            "scripts.reference_proxy:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(proxy_port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        {
            "UPSTREAM": f"{emulator_url}/api/v1",
            "UPSTREAM_KEY": API_KEY,
            "PYTHONPATH": str(REPO_ROOT),
        },
        workdir / "proxy.log",
    )
    processes = [service, proxy, emulator]
    try:
        wait_ready(f"{emulator_url}/api/v1/models", emulator)
        wait_ready(f"{service_url}/health", service)
        wait_ready(f"{proxy_url}/docs", proxy)
        lab = Lab(workdir, emulator_url, service_url, proxy_url, service.pid)
        rows: list[Row] = []
        only = sys.argv[1:]
        if only == ["profile"]:
            profile(lab)
            return 0
        if not only:
            rows += proxy_goals(lab)
            truth, quiet_plain, quiet_stream = truth_goals(lab)
            rows += truth
            rows += isolation_goals(lab, quiet_plain, quiet_stream)
            rows += stream_goals(lab)
        if not only or only == ["rates"]:
            rows += rate_goals(lab)
        if not only or only == ["transports"]:
            rows += transport_goals(lab)
    finally:
        for process in processes:
            stop(process)
    rows.sort(key=lambda row: int(row.goal.split(":")[0]))
    table = render(rows)
    header = (
        f"Machine: {machine()}. One uvicorn worker per process, loopback, "
        f"wrk {WRK_SECONDS} s x {ROUNDS} interleaved rounds (medians)."
    )
    print()
    print(header)
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {"measured_at": stamp, "machine": machine(), "rows": [asdict(r) for r in rows]}
    for name in (f"perf-{stamp}.json", "latest.json"):
        (RESULTS_DIR / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nSaved {RESULTS_DIR / f'perf-{stamp}.json'}")
    return 0 if all(r.met for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
