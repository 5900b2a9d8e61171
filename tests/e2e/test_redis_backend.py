"""JOBS_BACKEND=redis for real: two API replicas and two runner processes that share nothing
but a real redis-server, the emulator as their upstream.

A run started through one replica is followed and cancelled through the other; admission is
atomic across both; a runner killed mid-run ends its run failed with its rows; a replica
killed mid-run loses nothing; a Redis that stops answering is a 503 on new runs, and the run
goes on once it is back.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest

from tests.helpers.audit import SecretAudit
from tests.helpers.e2e import MODEL, unique
from tests.helpers.launcher import Launcher, audited_client
from tests.helpers.processes import ServiceProcess, wait_until
from tests.helpers.redis_server import RedisServer

MAX_RUNNING = 4
# Each request of these runs takes about 0.25 s at the emulator: runs last long enough to be
# followed, cancelled and killed mid-way, and no longer.
SLOW = "[[emulator:ttft=0.25,tps=0]]"
END_SECONDS = 30.0


@dataclass
class Cluster:
    redis: RedisServer
    apps: list[ServiceProcess]
    runners: list[ServiceProcess]
    start_app: Callable[[str], ServiceProcess]
    start_runner: Callable[[str], ServiceProcess]
    clients: list[httpx.Client]
    connect: Callable[[ServiceProcess], httpx.Client]

    def replace_app(self, index: int) -> None:
        """A new replica where a test stopped one, so that the next tests find two."""
        self.apps[index] = self.start_app(f"{self.apps[index].name}-again")
        self.clients[index] = self.connect(self.apps[index])

    def replace_runner(self, runner: ServiceProcess) -> None:
        self.runners.remove(runner)
        self.runners.append(self.start_runner(f"{runner.name}-again"))


@pytest.fixture(scope="module")
def cluster(
    launcher: Launcher, emulator: ServiceProcess, redis_server: RedisServer, audit: SecretAudit
) -> Iterator[Cluster]:
    redis_server.resume()
    redis_server.flush()
    shared = {
        "JOBS_BACKEND": "redis",
        "REDIS_URL": redis_server.url,
        "MAX_RUNNING_BENCHMARKS": str(MAX_RUNNING),
        "RUNNER_HEARTBEAT_TIMEOUT_SECONDS": "3",
    }

    def start_runner(name: str) -> ServiceProcess:
        return launcher.runner(
            name,
            emulator,
            redis_server.url,
            RUNNER_CONCURRENCY=str(MAX_RUNNING),
            RUNNER_HEARTBEAT_TIMEOUT_SECONDS="3",
        )

    def start_app(name: str) -> ServiceProcess:
        return launcher.app(name, emulator, **shared)

    made: list[httpx.Client] = []

    def connect(app: ServiceProcess) -> httpx.Client:
        made.append(audited_client(audit, app.url, authorized=False))
        return made[-1]

    apps = [start_app(f"replica-{name}") for name in "ab"]
    runners = [start_runner(f"runner-{index}") for index in (1, 2)]
    clients = [connect(app) for app in apps]
    cluster = Cluster(redis_server, apps, runners, start_app, start_runner, clients, connect)
    try:
        yield cluster
    finally:
        for http in made:
            http.close()
        for process in [*cluster.runners, *cluster.apps]:
            if process.running:
                process.stop()


def submit(http: httpx.Client, count: int, concurrency: int = 1) -> httpx.Response:
    prompts = "\n".join(unique(f"Redis run {index} {SLOW}") for index in range(count))
    return http.post(
        "/benchmark",
        params={"background": "true"},
        data={"model": MODEL, "runs": "1", "concurrency": str(concurrency), "max_tokens": "4"},
        files={"prompt_file": ("prompts.txt", prompts.encode(), "text/plain")},
    )


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def view(http: httpx.Client, benchmark_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/benchmarks/{benchmark_id}").json()
    return body


def ended(http: httpx.Client, benchmark_id: str, seconds: float = END_SECONDS) -> dict[str, Any]:
    assert wait_until(lambda: view(http, benchmark_id)["status"] != "running", seconds), (
        f"{benchmark_id} still running after {seconds}s"
    )
    return view(http, benchmark_id)


def finished_requests(http: httpx.Client, benchmark_id: str) -> int:
    state = view(http, benchmark_id)
    return int(state["progress"]["done"]) if "progress" in state else -1


def follow(http: httpx.Client, benchmark_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's events, to its summary."""
    events: list[tuple[str, dict[str, Any]]] = []
    with http.stream("GET", f"/benchmarks/{benchmark_id}/events", timeout=END_SECONDS) as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name is not None:
                events.append((name, json.loads(line.removeprefix("data: "))))
                if name == "summary":
                    break
    return events


def hosting(cluster: Cluster, benchmark_id: str) -> ServiceProcess:
    found = [r for r in cluster.runners if f"id={benchmark_id}" in r.log_text() and r.running]
    assert len(found) == 1, f"{len(found)} runners host {benchmark_id}"
    return found[0]


def test_health_names_the_backend_redis_and_the_live_runners(cluster: Cluster) -> None:
    expected = {"backend": "redis", "redis": "ok", "runners": 2}
    for http in cluster.clients:
        # A runner another test stopped is counted until its key expires.
        assert wait_until(partial(jobs_health_is, http, expected), 10.0)
        assert http.get("/health").json()["status"] == "ok"


def jobs_health_is(http: httpx.Client, expected: dict[str, Any]) -> bool:
    return bool(http.get("/health").json()["jobs"] == expected)


def test_a_run_started_on_one_replica_is_followed_and_cancelled_through_the_other(
    cluster: Cluster, e2e_report: list[str]
) -> None:
    a, b = cluster.clients
    accepted = submit(a, 40)
    assert accepted.status_code == 202, accepted.text
    benchmark_id = accepted.json()["id"]

    events: list[tuple[str, dict[str, Any]]] = []
    with b.stream("GET", f"/benchmarks/{benchmark_id}/events") as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name is not None:
                events.append((name, json.loads(line.removeprefix("data: "))))
                if name == "progress" and events[-1][1]["progress"]["done"] >= 2:
                    cancelled = b.delete(f"/benchmarks/{benchmark_id}")
                if name == "summary":
                    break

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    names = [name for name, _ in events]
    assert names[0] == "progress" and names[-1] == "summary", names
    summary = events[-1][1]
    assert summary["status"] == "cancelled"
    assert 2 <= summary["finished_requests"] < 40
    csv = a.get(f"/benchmarks/{benchmark_id}/results.csv")
    assert csv.status_code == 200
    assert len(csv_rows(csv.text)) == summary["finished_requests"]
    assert a.get(f"/benchmarks/{benchmark_id}/summary.json").json()["status"] == "cancelled"
    listed = [run["id"] for run in b.get("/benchmarks").json()["benchmarks"]]
    assert benchmark_id in listed
    report = a.get(f"/benchmarks/{benchmark_id}/report")
    assert report.status_code == 200 and benchmark_id in report.text
    e2e_report.append(
        f"redis: run started on replica a, followed on b ({len(events)} events), cancelled on b "
        f"after {summary['finished_requests']} of 40 requests; its CSV ({len(csv_rows(csv.text))} "
        "rows), summary and report served by a"
    )


def test_a_run_waited_for_is_answered_by_the_replica_that_took_it(cluster: Cluster) -> None:
    prompts = "\n".join(unique(f"Quick {index}") for index in range(3))
    answer = cluster.clients[1].post(
        "/benchmark",
        data={"model": MODEL, "runs": "1", "max_tokens": "4"},
        files={"prompt_file": ("prompts.txt", prompts.encode(), "text/plain")},
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed"
    assert answer.json()["finished_requests"] == 3
    # The runner that ran it also keeps its files, in its own BENCHMARKS_DIR.
    benchmark_id = answer.json()["id"]
    [runner] = [r for r in cluster.runners if f"id={benchmark_id}" in r.log_text()]
    assert len(csv_rows((runner.benchmarks_dir / f"{benchmark_id}.csv").read_text())) == 3
    assert (runner.benchmarks_dir / f"{benchmark_id}.json").is_file()


def test_ten_concurrent_submissions_admit_exactly_the_cap(
    cluster: Cluster, e2e_report: list[str]
) -> None:
    def one(index: int) -> httpx.Response:
        return submit(cluster.clients[index % 2], 40)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(one, range(10)))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [202] * MAX_RUNNING + [429] * (10 - MAX_RUNNING), statuses
    admitted = [answer.json()["id"] for answer in answers if answer.status_code == 202]
    for benchmark_id in admitted:
        assert cluster.clients[1].delete(f"/benchmarks/{benchmark_id}").status_code == 200
    for benchmark_id in admitted:
        assert ended(cluster.clients[0], benchmark_id)["status"] == "cancelled"
    e2e_report.append(
        f"redis: 10 submissions at once over 2 replicas, MAX_RUNNING_BENCHMARKS={MAX_RUNNING}: "
        f"{statuses.count(202)} admitted (202), {statuses.count(429)} refused (429)"
    )


def test_a_runner_killed_mid_run_ends_its_run_failed_with_its_rows(
    cluster: Cluster, e2e_report: list[str]
) -> None:
    a, b = cluster.clients
    accepted = submit(a, 60)
    assert accepted.status_code == 202, accepted.text
    benchmark_id = accepted.json()["id"]
    assert wait_until(lambda: finished_requests(b, benchmark_id) >= 3, END_SECONDS)
    runner = hosting(cluster, benchmark_id)

    runner.kill()  # SIGKILL: no chance to say anything
    killed_at = time.monotonic()
    state = ended(b, benchmark_id, seconds=10.0)

    noticed = time.monotonic() - killed_at
    assert noticed < 10.0
    assert state["status"] == "failed"
    assert "stopped showing it is alive" in state["error"]
    assert state["finished_requests"] >= 3
    rows = csv_rows(a.get(f"/benchmarks/{benchmark_id}/results.csv").text)
    assert len(rows) >= 3
    e2e_report.append(
        f"redis: runner kill -9 mid-run: run failed {noticed:.1f} s later "
        f"(RUNNER_HEARTBEAT_TIMEOUT_SECONDS=3), {len(rows)} rows kept"
    )
    cluster.replace_runner(runner)


def test_a_sweep_runs_on_a_runner_step_by_step(cluster: Cluster) -> None:
    prompts = "\n".join(unique(f"Sweep {index}") for index in range(4))
    answer = cluster.clients[0].post(
        "/benchmark",
        data={
            "model": MODEL,
            "runs": "1",
            "max_tokens": "4",
            "sweep": "concurrency",
            "sweep_values": "1,2",
        },
        files={"prompt_file": ("prompts.txt", prompts.encode(), "text/plain")},
    )

    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["status"] == "completed"
    assert [step["concurrency"] for step in summary["steps"]] == [1, 2]
    rows = csv_rows(cluster.clients[1].get(f"/benchmarks/{summary['id']}/results.csv").text)
    assert sorted({row["step"] for row in rows}) == ["1", "2"]


def test_a_runner_stopped_mid_run_saves_its_run_as_interrupted(cluster: Cluster) -> None:
    a = cluster.clients[0]
    accepted = submit(a, 60)
    assert accepted.status_code == 202, accepted.text
    benchmark_id = accepted.json()["id"]
    assert wait_until(lambda: finished_requests(a, benchmark_id) >= 2, END_SECONDS)
    runner = hosting(cluster, benchmark_id)

    assert runner.stop() == 0  # SIGTERM: a deployment stopping its runners
    state = view(a, benchmark_id)

    assert state["status"] == "interrupted"
    assert state["finished_requests"] >= 2
    rows = csv_rows(a.get(f"/benchmarks/{benchmark_id}/results.csv").text)
    assert len(rows) == state["finished_requests"]
    cluster.replace_runner(runner)


def test_a_replica_killed_mid_run_loses_nothing(cluster: Cluster, e2e_report: list[str]) -> None:
    a, b = cluster.clients
    accepted = submit(a, 8)
    assert accepted.status_code == 202, accepted.text
    benchmark_id = accepted.json()["id"]
    assert wait_until(lambda: finished_requests(b, benchmark_id) >= 1, END_SECONDS)

    cluster.apps[0].kill()
    summary = ended(b, benchmark_id)

    assert summary["status"] == "completed"
    assert summary["finished_requests"] == 8
    assert len(csv_rows(b.get(f"/benchmarks/{benchmark_id}/results.csv").text)) == 8
    e2e_report.append(
        "redis: replica a kill -9 mid-run: the run completed (8/8), replica b serves it"
    )
    cluster.replace_app(0)


def test_redis_stopped_for_five_seconds_is_a_503_on_new_runs_and_the_run_goes_on(
    cluster: Cluster, e2e_report: list[str]
) -> None:
    b = cluster.clients[1]
    accepted = submit(b, 40, concurrency=2)
    assert accepted.status_code == 202, accepted.text
    benchmark_id = accepted.json()["id"]
    assert wait_until(lambda: finished_requests(b, benchmark_id) >= 2, END_SECONDS)

    with ThreadPoolExecutor(1) as pool:
        followed = pool.submit(follow, b, benchmark_id)
        time.sleep(0.5)  # the follower is subscribed
        cluster.redis.pause()
        paused_at = time.monotonic()
        try:
            refused = submit(b, 2)
            refused_after = time.monotonic() - paused_at
            time.sleep(max(0.0, 5.0 - (time.monotonic() - paused_at)))
        finally:
            cluster.redis.resume()
        events = followed.result(timeout=END_SECONDS)

    assert refused.status_code == 503, refused.text
    assert "Redis" in refused.json()["detail"]
    assert events[-1][0] == "summary" and events[-1][1]["status"] == "completed", events[-1]
    summary = ended(b, benchmark_id)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["finished_requests"] == 40
    assert len(csv_rows(b.get(f"/benchmarks/{benchmark_id}/results.csv").text)) == 40
    e2e_report.append(
        f"redis: Redis paused 5 s mid-run: a new run was a 503 after {refused_after:.1f} s; "
        f"the run completed (40/40, {summary['wall_seconds']:.1f} s), its follower saw its summary"
    )
