"""Benchmarks as jobs, for real: runner processes, several workers and replicas on one
directory, open-loop schedules and the stream metrics against the emulator's known speed, and
the command line driving a live service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import httpx
import pytest

from src.services.benchmarker.load.schedule import arrival_offsets
from src.services.benchmarker.runs.runner_process import RUNNER_NAME
from tests.helpers.e2e import INBOUND_KEY, MODEL, unique
from tests.helpers.launcher import StartApp
from tests.helpers.processes import APP_DIR, ServiceProcess, wait_until
from tests.helpers.results import csv_rows

RUN_SECONDS = 60.0


def submit(
    http: httpx.Client, prompts: list[str], *, background: bool = False, **form: str
) -> httpx.Response:
    data: dict[str, Any] = {"model": MODEL, **form}
    upload = "\n".join(prompts).encode()
    return http.post(
        "/benchmark",
        params={"background": "true"} if background else None,
        data=data,
        files={"prompt_file": ("prompts.txt", upload, "text/plain")},
    )


def finished(http: httpx.Client, benchmark_id: str) -> dict[str, Any]:
    def done() -> bool:
        return bool(http.get(f"/benchmarks/{benchmark_id}").json()["status"] != "running")

    assert wait_until(done, RUN_SECONDS), f"{benchmark_id} never finished"
    body: dict[str, Any] = http.get(f"/benchmarks/{benchmark_id}").json()
    return body


def test_ttft_itl_and_tpot_match_the_emulators_configured_speed(client: httpx.Client) -> None:
    # The emulator sends the first token after 0.3 s, then one every 1/20 s: an ITL and a TPOT
    # of 0.05 s, and 20 tokens in 0.3 + 19 x 0.05 = 1.25 s.
    prompts = [unique(f"Speed {index} [[emulator:ttft=0.3,tps=20]]") for index in range(4)]

    response = submit(client, prompts, runs="2", concurrency="4", max_tokens="20")

    assert response.status_code == 200, response.text
    [stats] = response.json()["models"]
    assert stats["ok"] == 8
    assert stats["ttft"]["p50"] == pytest.approx(0.3, rel=0.05)
    assert stats["itl"]["p50"] == pytest.approx(0.05, rel=0.05)
    assert stats["tpot"]["p50"] == pytest.approx(0.05, rel=0.05)
    assert stats["latency"]["p50"] == pytest.approx(1.25, rel=0.05)
    assert stats["output_tokens_per_second"] == pytest.approx(20 / 1.25, rel=0.05)


def test_a_constant_rate_keeps_its_schedule(client: httpx.Client) -> None:
    prompts = [unique(f"Rate {index}") for index in range(100)]

    response = submit(
        client, prompts, runs="2", rate="40", arrival="constant", concurrency="50", max_tokens="4"
    )

    assert response.status_code == 200, response.text
    summary = response.json()
    schedule = summary["schedule"]
    assert summary["finished_requests"] == 200
    assert schedule["achieved_rate"] == pytest.approx(40, rel=0.05)
    assert schedule["lag_p50"] < 0.010
    latency = summary["models"][0]["latency"]
    scheduled = summary["models"][0]["scheduled_latency"]
    assert scheduled["p50"] >= latency["p50"]  # from the scheduled time: never shorter


def test_poisson_arrivals_follow_their_seeded_schedule() -> None:
    first = list(islice(arrival_offsets(40, "poisson", 7), 200))
    again = list(islice(arrival_offsets(40, "poisson", 7), 200))
    other = list(islice(arrival_offsets(40, "poisson", 8), 200))

    assert first == again
    assert first != other
    assert first[0] == 0.0
    gaps = [later - earlier for earlier, later in zip(first, first[1:], strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 40, rel=0.15)
    assert min(gaps) >= 0


def test_a_poisson_run_sends_on_its_schedule(client: httpx.Client) -> None:
    prompts = [unique(f"Poisson {index}") for index in range(100)]
    offsets = list(islice(arrival_offsets(40, "poisson", 7), 200))

    response = submit(
        client, prompts, runs="2", rate="40", arrival="poisson", seed="7", max_tokens="4",
        concurrency="50",
    )  # fmt: skip

    assert response.status_code == 200, response.text
    schedule = response.json()["schedule"]
    assert schedule["achieved_rate"] == pytest.approx(199 / offsets[-1], rel=0.05)
    assert schedule["lag_p50"] < 0.010


def slow_prompts(count: int) -> list[str]:
    return [unique(f"Slow {index} [[emulator:ttft=20]]") for index in range(count)]


def test_a_run_started_by_one_replica_is_cancelled_through_another(
    start_app: StartApp, connect: Callable[[ServiceProcess], httpx.Client]
) -> None:
    first = start_app("app-replica-a")
    second = start_app("app-replica-b", BENCHMARKS_DIR=str(first.benchmarks_dir))
    a, b = connect(first), connect(second)

    accepted = submit(a, slow_prompts(3), runs="1", concurrency="3", background=True)
    assert accepted.status_code == 202, accepted.text
    benchmark_id = accepted.json()["id"]
    assert b.get(f"/benchmarks/{benchmark_id}").json()["status"] == "running"
    assert wait_until(lambda: len(runner_processes(first)) == 1, 10.0), "no runner holds the run"

    cancelled = b.delete(f"/benchmarks/{benchmark_id}")

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert a.get(f"/benchmarks/{benchmark_id}").json()["status"] == "cancelled"
    assert wait_until(lambda: not runner_processes(first), 10.0), "the runner process stayed"
    rows = csv_rows(first.benchmarks_dir / f"{benchmark_id}.csv")
    assert rows == []  # nothing had finished; nothing was made up


def test_with_two_workers_any_of_them_follows_and_cancels_a_run(
    start_app: StartApp, connect: Callable[[ServiceProcess], httpx.Client]
) -> None:
    app = start_app("app-two-workers", WORKERS="2")
    http = connect(app)
    accepted = submit(http, slow_prompts(2), runs="1", concurrency="2", background=True)
    assert accepted.status_code == 202, accepted.text
    benchmark_id = accepted.json()["id"]

    # New connections each time: uvicorn's workers take them in turn from one socket.
    seen = set()
    for _ in range(10):
        with httpx.Client(base_url=app.url, trust_env=False) as fresh:
            seen.add(fresh.get(f"/benchmarks/{benchmark_id}").json()["status"])
    with httpx.Client(base_url=app.url, trust_env=False, timeout=30.0) as fresh:
        cancelled = fresh.delete(f"/benchmarks/{benchmark_id}")

    assert len(children(app.pid)) >= 2  # two workers really serve
    assert seen == {"running"}
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert finished(http, benchmark_id)["status"] == "cancelled"


def runner_processes(app: ServiceProcess) -> list[int]:
    """The benchmark runner processes holding a run that are children of the app (or of its
    workers); the warm spare waiting for the next run is not one of them."""
    parents = {app.pid, *children(app.pid)}
    return [
        pid
        for parent in parents
        for pid in children(parent)
        if "src.services.benchmarker.runs.runner_process" in cmdline(pid)
        and process_name(pid) == RUNNER_NAME
    ]


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as file:
            return file.read().strip()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    stat = file.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def prompt_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("cli") / "prompts.txt"
    path.write_text("\n".join(unique(f"CLI {index}") for index in range(3)) + "\n")
    yield str(path)


def cli(app: ServiceProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "src.cli", "benchmark", "--url", app.url, "--key", INBOUND_KEY,
         *args],
        cwd=APP_DIR,
        env={**os.environ, "PYTHONPATH": str(APP_DIR), "COLUMNS": "80"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_the_command_line_runs_a_benchmark_and_prints_the_comparison_with_cost(
    app: ServiceProcess, prompt_file: str
) -> None:
    process = cli(app, "--file", prompt_file, "--models", "emulator/small,emulator/large",
                  "--runs", "2", "--concurrency", "4")  # fmt: skip
    out, err = process.communicate(timeout=RUN_SECONDS)

    assert process.returncode == 0, err
    assert "started; Ctrl-C cancels it." in err
    assert "12/12" in err  # the progress bar reached the end
    assert ": completed" in out
    assert "emulator/small" in out and "emulator/large" in out
    assert "Total cost: $0.0" in out


def test_ctrl_c_cancels_the_run_and_exits_130(
    app: ServiceProcess, client: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("cli-slow") / "slow.txt"
    path.write_text("\n".join(slow_prompts(2)) + "\n")
    process = cli(app, "--file", str(path), "--models", "emulator/small", "--runs", "1")
    assert process.stderr is not None
    started = ""
    while "started" not in started:
        line = process.stderr.readline()
        assert line, f"the command line never said it started: {started!r}"
        started += line
    benchmark_id = started.split("Benchmark ", 1)[1].split()[0]

    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=RUN_SECONDS)

    assert process.returncode == 130, err
    assert ": cancelled" in out
    assert client.get(f"/benchmarks/{benchmark_id}").json()["status"] == "cancelled"


def test_a_failed_command_line_submission_exits_non_zero(app: ServiceProcess) -> None:
    process = cli(app, "--file", "/nonexistent/prompts.txt", "--models", MODEL)
    _, err = process.communicate(timeout=RUN_SECONDS)

    assert process.returncode == 1
    assert "Cannot read /nonexistent/prompts.txt" in err


def test_a_run_the_service_refuses_exits_non_zero(app: ServiceProcess, prompt_file: str) -> None:
    process = cli(app, "--file", prompt_file, "--models", "nobody/nothing")
    _, err = process.communicate(timeout=RUN_SECONDS)

    assert process.returncode == 1
    assert "404" in err and "nobody/nothing" in err
