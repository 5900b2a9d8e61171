"""Attacks that need no key, against a live service process, with what they cost it.

    python scripts/preauth_attacks.py big-header|slowloris|slow-body|idle [--app-dir DIR]
        [--nofile N]

Starts the service (`python -m src.serve` from `--app-dir`, the embedded emulator behind it)
with its descriptor limit lowered to `--nofile`, runs one attack from a child process, and
meanwhile probes `/health` on a fresh connection every 100 ms and samples the service's
memory and open descriptors. Prints one JSON object with the figures.

- big-header: requests whose header is `--size` MiB long, one after the other for `--seconds`.
- slowloris: `--connections` connections, each sending one byte of a header every 2 s.
- slow-body: `--connections` connections, each sending whole headers, then one byte of a
  JSON body every second.
- idle: as many half-sent requests as the attacker can open (up to `--connections`), then idle.

A measurement tool, not a test (tests/e2e/test_preauth_limits.py asserts the mechanisms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROBE_INTERVAL = 0.1
PROBE_TIMEOUT = 10.0
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


# --- the attacker (a child process, so its work does not delay the probe) --------------------


async def _one_big_header(port: int, size_mib: int) -> tuple[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    chunk = b"a" * (1024 * 1024)
    try:
        for _ in range(size_mib):
            writer.write(chunk)
            await writer.drain()
        writer.write(b"\r\n\r\n")
        await writer.drain()
    except OSError:
        pass  # refused mid-way: the answer may still be there to read
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 60)
        status = head.decode(errors="replace").strip()
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        status = f"no answer: {type(exc).__name__}"
    writer.close()
    return status, time.monotonic() - started


async def big_header(port: int, size_mib: int, seconds: float) -> dict[str, object]:
    """One such request after the other, for `seconds` (at least one)."""
    started = time.monotonic()
    statuses: dict[str, int] = {}
    durations: list[float] = []
    while not durations or time.monotonic() - started < seconds:
        status, duration = await _one_big_header(port, size_mib)
        statuses[status] = statuses.get(status, 0) + 1
        durations.append(duration)
    return {
        "requests": len(durations),
        "size_mib": size_mib,
        "statuses": statuses,
        "seconds_each_max": round(max(durations), 3),
    }


SLOW_HEAD = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
SLOW_BODY_HEAD = (
    b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n"
)


async def _trickle(
    port: int, seconds: float, closed: list[float], head: bytes, payload: bytes, every: float
) -> None:
    """Send `head` at once, then `payload` one byte every `every` seconds."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed.append(-1.0)
        return
    writer.write(head)
    index = 0
    eof = asyncio.ensure_future(reader.read(1))
    try:
        while time.monotonic() - started < seconds:
            writer.write(payload[index : index + 1])
            index += 1
            done, _ = await asyncio.wait({eof}, timeout=every)
            if done:
                closed.append(time.monotonic() - started)
                return
    except OSError:
        closed.append(time.monotonic() - started)
        return
    finally:
        eof.cancel()
        writer.close()


async def slowloris(
    port: int, connections: int, seconds: float, *, body: bool = False
) -> dict[str, object]:
    closed: list[float] = []
    if body:
        head, payload, every = SLOW_BODY_HEAD, b"a" * 100_000, 1.0
    else:
        head, payload, every = b"", SLOW_HEAD, 2.0
    await asyncio.gather(
        *(_trickle(port, seconds, closed, head, payload, every) for _ in range(connections))
    )
    refused = sum(1 for t in closed if t < 0)
    times = sorted(t for t in closed if t >= 0)
    return {
        "connections": connections,
        "closed_by_server": len(times),
        "refused": refused,
        "open_after_seconds": seconds,
        "still_open_at_end": connections - len(times) - refused,
        "closed_after_s_min": round(times[0], 2) if times else None,
        "closed_after_s_max": round(times[-1], 2) if times else None,
    }


async def idle(port: int, connections: int, seconds: float) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opened: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    failures = 0
    started = time.monotonic()
    for _ in range(connections):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            failures += 1
            if failures > 50:
                break
            continue
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        opened.append(writer)
        readers.append(reader)
    open_seconds = time.monotonic() - started
    await asyncio.sleep(max(0.0, seconds - open_seconds))

    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            await asyncio.wait_for(reader.read(), 0.05)  # returns only at EOF
        except TimeoutError:
            return False
        except OSError:
            pass
        return True

    still_open = sum(1 for gone in await asyncio.gather(*map(closed, readers)) if not gone)
    for writer in opened:
        writer.close()
    return {
        "attempted": connections,
        "opened": len(opened),
        "connect_failures": failures,
        "seconds_to_open": round(open_seconds, 2),
        "still_open_at_end": still_open,
    }


def attacker_main(argv: list[str]) -> None:
    kind, port, amount, seconds = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    if kind == "big-header":
        result = asyncio.run(big_header(port, amount, seconds))
    elif kind in ("slowloris", "slow-body"):
        result = asyncio.run(slowloris(port, amount, seconds, body=kind == "slow-body"))
    else:
        result = asyncio.run(idle(port, amount, seconds))
    print(json.dumps(result))


# --- the observer --------------------------------------------------------------------------------


def probe(port: int) -> tuple[float, str]:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            sock.sendall(HEALTH)
            data = b""
            while b"\r\n" not in data:
                part = sock.recv(4096)
                if not part:
                    break
                data += part
        status = data.split(b"\r\n", 1)[0].decode(errors="replace") or "empty reply"
    except OSError as exc:
        status = type(exc).__name__
    return time.monotonic() - started, status


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) // 1024
    return values


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_service(
    app_dir: Path, nofile: int, workdir: Path, extra: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "PYTHONPATH": str(app_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPENROUTER_API_KEY": "",
        "LOG_DIR": str(workdir / "logs"),
        "BENCHMARKS_DIR": str(workdir / "benchmarks"),
        "EMULATOR_TTFT_SECONDS": "0",
        "EMULATOR_TOKENS_PER_SECOND": "0",
        **extra,
    }

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen(
        [sys.executable, "-m", "src.serve"],
        cwd=workdir,
        env=env,
        stdout=(workdir / "stdout.txt").open("wb"),
        stderr=(workdir / "stderr.txt").open("wb"),
        preexec_fn=limit,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if probe(port)[1].endswith("200 OK"):
            return process, port
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the service did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("attack", choices=["big-header", "slowloris", "slow-body", "idle"])
    parser.add_argument("--app-dir", type=Path, default=REPO_ROOT / "app")
    parser.add_argument("--nofile", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64, help="MiB, for big-header")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the service")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    workdir = Path(tempfile.mkdtemp(prefix="attack-"))
    service, port = start_service(args.app_dir, args.nofile, workdir, extra)
    try:
        time.sleep(1.0)
        baseline = [probe(port)[0] for _ in range(10)]
        before = {**proc_status(service.pid), "fds": fd_count(service.pid)}
        amount = args.size if args.attack == "big-header" else args.connections
        attacker = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--attacker",
                args.attack,
                str(port),
                str(amount),
                str(args.seconds),
            ],
            stdout=subprocess.PIPE,
        )
        latencies: list[float] = []
        failures: dict[str, int] = {}
        peak_rss = peak_fds = 0
        while attacker.poll() is None:
            seconds, status = probe(port)
            if status.endswith("200 OK"):
                latencies.append(seconds)
            else:
                failures[status] = failures.get(status, 0) + 1
            peak_rss = max(peak_rss, proc_status(service.pid)["VmRSS"])
            peak_fds = max(peak_fds, fd_count(service.pid))
            time.sleep(PROBE_INTERVAL)
        assert attacker.stdout is not None
        outcome = json.loads(attacker.stdout.read() or b"{}")
        after = {**proc_status(service.pid), "fds": fd_count(service.pid)}
        ok_after = probe(port)
    finally:
        service.terminate()
        try:
            service.wait(15)
        except subprocess.TimeoutExpired:
            service.kill()

    def ms(values: list[float], q: int) -> float | None:
        if len(values) < 2:
            return round(values[0] * 1000, 1) if values else None
        return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 1)

    print(
        json.dumps(
            {
                "attack": args.attack,
                "app_dir": str(args.app_dir),
                "nofile": args.nofile,
                "attacker": outcome,
                "health_baseline_ms_p50": ms(baseline, 50),
                "health_during": {
                    "ok": len(latencies),
                    "failed": failures,
                    "p50_ms": ms(latencies, 50),
                    "p99_ms": ms(latencies, 99),
                    "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
                },
                "health_after": {"ms": round(ok_after[0] * 1000, 1), "status": ok_after[1]},
                "rss_mib": {
                    "before": before["VmRSS"],
                    "peak_sampled": peak_rss,
                    "peak_hwm": after["VmHWM"],
                    "after": after["VmRSS"],
                },
                "fds": {"before": before["fds"], "peak": peak_fds, "after": after["fds"]},
                "workdir": str(workdir),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--attacker":
        attacker_main(sys.argv[2:])
    else:
        main()
