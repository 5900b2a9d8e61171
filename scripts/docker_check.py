"""`make docker-check`: build the image and run it, alone and through docker-compose.yml.

Needs a running Docker engine, so it is not part of `make test`. It does what a new user does
and checks what they would see:

1. `docker build`: the build time and the image size.
2. `docker run` with host directories mounted: healthy, /health, /models, /generate, a small
   /benchmark whose files appear on the host, the process is not root, `docker stop` is quick
   and clean. Then a run whose log directory the process cannot write: it must keep serving,
   and say once, on stdout, that the file log is off.
3. The compose file, with every Compose found (`docker compose` v2, `docker-compose` v1), from a
   fresh directory (no .env, no logs/): `--profile emulator up`, the three services healthy,
   the instance on :8002 answering through the emulator container, results and logs kept
   across `down` and `up`; then with a .env, whose settings must reach the container.

Each check prints one line; the script exits 1 if any failed. Ports 8001 and 8002 must be free
(the compose file publishes them); the service's own port is taken from a free one via PORT.
DOCKER_CHECK_COMPOSE=v1 or v2 checks only that Compose.

4. The `scale` profile (`python scripts/docker_check.py scale` runs only this after the build):
   Redis, two API replicas behind the balancer on SCALE_PORT, four runners; a run posted,
   followed to its summary and served through the one port, then again with one replica
   stopped.
5. The `observability` profile (`... docker_check.py observability`): Prometheus scrapes the
   service, and every query of the Grafana dashboard answers with data after some traffic;
   Grafana starts only where its image can be had.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE = "fastapi-app"
MODEL = "emulator/small"
EMULATOR_PORT = 8001
EMULATED_PORT = 8002
HEALTHY_SECONDS = 120.0
STOP_SECONDS = 10.0
FILE_LOG_OFF = "File log is off"
BENCHMARK_LINE = " | POST /benchmark | "
PROMPTS = b"Why is the sky blue?\nName three rivers.\n"


class CheckFailed(Exception):
    """A step cannot go on; what follows it in the same section is skipped."""


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    count: int = 0

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.count += 1
        suffix = f" ({detail})" if detail else ""
        print(f"{'ok  ' if ok else 'FAIL'}  {name}{suffix}", flush=True)
        if not ok:
            self.failures.append(name)
        return ok

    def require(self, name: str, ok: bool, detail: str = "") -> None:
        if not self.check(name, ok, detail):
            raise CheckFailed(name)

    def note(self, text: str) -> None:
        print(f"      {text}", flush=True)


def run(
    command: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def output_of(command: Sequence[str]) -> str:
    result = run(command)
    if result.returncode != 0:
        raise CheckFailed(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def inspect(container: str, template: str) -> str:
    return output_of(["docker", "inspect", "--format", template, container])


def wait_healthy(container: str) -> float:
    """Seconds until Docker's health check says healthy; CheckFailed if it exits or never does."""
    started = time.monotonic()
    while time.monotonic() - started < HEALTHY_SECONDS:
        state = inspect(container, "{{.State.Status}} {{.State.Health.Status}}")
        if state == "running healthy":
            return time.monotonic() - started
        if not state.startswith("running"):
            logs = run(["docker", "logs", "--tail", "30", container])
            raise CheckFailed(f"{container} is {state}:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.5)
    raise CheckFailed(f"{container} not healthy after {HEALTHY_SECONDS:.0f} s")


def process_uid(container: str) -> int:
    """The real uid of the container's main process, as its /proc says."""
    status = output_of(["docker", "exec", container, "cat", "/proc/1/status"])
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return int(line.split()[1])


def anonymous_volumes(container: str) -> list[str]:
    """Volumes Docker made for the image's VOLUME paths that nothing else mounts."""
    names = inspect(container, '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}')
    return [name for name in names.split() if re.fullmatch(r"[0-9a-f]{64}", name)]


def stop_seconds(container: str) -> float:
    started = time.monotonic()
    output_of(["docker", "stop", "--time", str(int(STOP_SECONDS)), container])
    return time.monotonic() - started


def check_api(report: Report, base_url: str, label: str, upstream: str) -> dict[str, Any]:
    """/health, /models, /generate and a small /benchmark; returns the benchmark's answer."""
    with httpx.Client(base_url=base_url, timeout=60.0, trust_env=False) as http:
        health = http.get("/health")
        report.require(
            f"{label} GET /health",
            health.status_code == 200
            and health.json().get("status") == "ok"
            and health.json().get("upstream") == upstream,
            f"{health.status_code} {health.text}",
        )
        models = http.get("/models")
        ids = [m["id"] for m in models.json().get("models", [])] if models.is_success else []
        report.require(
            f"{label} GET /models", MODEL in ids, f"{models.status_code}, {len(ids)} models"
        )
        generated = http.post(
            "/generate", json={"model": MODEL, "prompt": "Hello from Docker", "max_tokens": 8}
        )
        body = generated.json() if generated.is_success else {}
        report.require(
            f"{label} POST /generate",
            bool(body.get("text")) and body.get("completion_tokens") == 8,
            f"{generated.status_code}, {body.get('tokens_used')} tokens",
        )
        benchmark = http.post(
            "/benchmark",
            files={"prompt_file": ("prompts.txt", PROMPTS, "text/plain")},
            data={"model": MODEL, "runs": "2", "concurrency": "2", "max_tokens": "4"},
        )
        summary: dict[str, Any] = benchmark.json() if benchmark.is_success else {}
        report.require(
            f"{label} POST /benchmark (2 prompts x 2 runs)",
            summary.get("status") == "completed" and summary.get("finished_requests") == 4,
            f"{benchmark.status_code}, id {summary.get('id')}",
        )
        return summary


def check_result_files(report: Report, host_dir: Path, summary: dict[str, Any]) -> None:
    csv_name = Path(summary["files"]["csv"]).name
    json_name = Path(summary["files"]["json"]).name
    csv_path, json_path = host_dir / csv_name, host_dir / json_name
    rows = csv_path.read_text().splitlines() if csv_path.is_file() else []
    report.check("result CSV on the host", len(rows) == 5, f"{csv_path}, {len(rows)} lines")
    saved = json.loads(json_path.read_text()) if json_path.is_file() else {}
    report.check("result JSON on the host", saved.get("id") == summary["id"], str(json_path))


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary directory; what containers wrote into it is removed by a container too,
    since its files belong to the image's user."""
    path = Path(tempfile.mkdtemp(prefix="docker-check-"))
    try:
        yield path
    finally:
        run(
            ["docker", "run", "--rm", "--user", "0", "-v", f"{path}:/scratch", IMAGE]
            + ["find", "/scratch", "-mindepth", "1", "-delete"]
        )
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def container(args: Sequence[str]) -> Iterator[str]:
    name = f"docker-check-{secrets.token_hex(4)}"
    output_of(["docker", "run", "-d", "--name", name, *args, IMAGE])
    try:
        yield name
    finally:
        run(["docker", "rm", "-f", "-v", name])


def check_build(report: Report) -> None:
    report.section("build")
    started = time.monotonic()
    result = run(["docker", "build", "-t", IMAGE, "."], cwd=REPO_ROOT)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        print(result.stdout[-3000:] + result.stderr[-3000:])
    report.require(f"docker build -t {IMAGE} .", result.returncode == 0, f"{seconds:.1f} s")
    size = int(output_of(["docker", "image", "inspect", "--format", "{{.Size}}", IMAGE]))
    report.note(f"image size: {size / 1e6:.0f} MB")
    user = output_of(["docker", "image", "inspect", "--format", "{{.Config.User}}", IMAGE])
    report.check("image runs as a non-root user", user.split(":")[0] not in ("", "0", "root"), user)


def check_run(report: Report) -> None:
    report.section("docker run, results and logs mounted from the host")
    with scratch_dir() as scratch:
        for name in ("logs", "benchmarks"):
            # Any uid may write here, as a directory handed to the container must allow.
            (scratch / name).mkdir(mode=0o777)
            (scratch / name).chmod(0o777)
        port = free_port()
        args = ["-p", f"127.0.0.1:{port}:8000"]
        args += [
            "-v",
            f"{scratch / 'logs'}:/srv/logs",
            "-v",
            f"{scratch / 'benchmarks'}:/srv/benchmarks",
        ]
        with container(args) as name:
            report.check("healthy", True, f"after {wait_healthy(name):.1f} s")
            summary = check_api(report, f"http://127.0.0.1:{port}", "run", "emulator")
            check_result_files(report, scratch / "benchmarks", summary)
            log = scratch / "logs" / "server_logs.txt"
            logged = wait_for_text(lambda: log.read_text() if log.is_file() else "", BENCHMARK_LINE)
            report.check("log file on the host", logged, str(log))
            uid = process_uid(name)
            report.check("the server process is not root", uid != 0, f"uid {uid}")
            seconds = stop_seconds(name)
            code = inspect(name, "{{.State.ExitCode}}")
            report.check(
                "docker stop",
                seconds < STOP_SECONDS and code == "0",
                f"{seconds:.1f} s, exit {code}",
            )

    report.section("docker run, a log directory the process cannot write")
    with scratch_dir() as scratch:
        logs = scratch / "logs"
        logs.mkdir(mode=0o755)
        with container(["-p", f"127.0.0.1:{free_port()}:8000", "-v", f"{logs}:/srv/logs"]) as name:
            report.check("healthy all the same", True, f"after {wait_healthy(name):.1f} s")
            restarts = inspect(name, "{{.RestartCount}} {{.State.Status}}")
            report.check("running, never restarted", restarts == "0 running", restarts)
            output = run(["docker", "logs", name])
            lines = [line for line in output.stdout.splitlines() if FILE_LOG_OFF in line]
            report.check("one warning on stdout", len(lines) == 1, lines[0] if lines else "none")
            report.check("log directory left empty", not any(logs.iterdir()))


@dataclass
class Compose:
    label: str
    command: list[str]
    project_dir: Path
    env: dict[str, str]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        base = [*self.command, "--project-directory", str(self.project_dir)]
        base += ["-f", str(self.project_dir / "docker-compose.yml"), "-p", self.project]
        return run([*base, *args], cwd=self.project_dir, env=self.env)

    @property
    def project(self) -> str:
        return f"docker-check-{self.label}"

    def must(self, *args: str) -> str:
        result = self(*args)
        if result.returncode != 0:
            raise CheckFailed(f"{self.label} {' '.join(args)}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def container_id(self, service: str) -> str:
        return self.must("--profile", "emulator", "ps", "-q", service).strip()


def compose_commands() -> list[tuple[str, list[str]]]:
    """Every Compose on this machine, or only the one DOCKER_CHECK_COMPOSE names (v1, v2)."""
    wanted = os.environ.get("DOCKER_CHECK_COMPOSE", "v1,v2").split(",")
    found = []
    for label, command in (("v2", ["docker", "compose"]), ("v1", ["docker-compose"])):
        if label not in wanted:
            continue
        if shutil.which(command[0]) and run([*command, "version"]).returncode == 0:
            found.append((label, command))
    return found


def check_compose(report: Report, label: str, command: list[str]) -> None:
    version = output_of([*command, "version", "--short"])
    with tempfile.TemporaryDirectory(prefix="docker-check-compose-") as tmp:
        project_dir = Path(tmp)
        shutil.copy(REPO_ROOT / "docker-compose.yml", project_dir)
        port = free_port()
        env = {**os.environ, "PORT": str(port)}
        for name in ("OPENROUTER_API_KEY", "PROXY_API_KEYS", "PROXY_ADMIN_KEYS"):
            env.pop(name, None)
        compose = Compose(label, command, project_dir, env)
        try:
            report.section(f"Compose {version}: --profile emulator up, no .env")
            compose_profile_run(report, compose, port)
            report.section(f"Compose {version}: up with a .env")
            compose_env_file_run(report, compose, port)
        finally:
            compose("--profile", "emulator", "down", "-v", "--remove-orphans")


def compose_profile_run(report: Report, compose: Compose, port: int) -> None:
    compose.must("--profile", "emulator", "up", "-d", "--no-build")
    services = ("app", "emulator", "app-emulated")
    ids = {service: compose.container_id(service) for service in services}
    # Read at once: the health log keeps only the last few probes.
    probes = json.loads(inspect(ids["emulator"], "{{json .State.Health.Log}}") or "[]")
    passed = [_timestamp(probe["End"]) for probe in probes if probe["ExitCode"] == 0]
    emulated_up = _timestamp(inspect(ids["app-emulated"], "{{.State.StartedAt}}"))
    gap = emulated_up - min(passed) if passed else -1.0
    report.check(
        "app-emulated started once the emulator was healthy",
        gap >= 0,
        f"{gap:.1f} s after its first passing probe" if passed else "no passing probe yet",
    )
    for service, cid in ids.items():
        report.check(f"{service} healthy", True, f"after {wait_healthy(cid):.1f} s")
    local = f"http://127.0.0.1:{port}"
    emulated = f"http://127.0.0.1:{EMULATED_PORT}"
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        models = http.get(f"http://127.0.0.1:{EMULATOR_PORT}/api/v1/models")
        report.check(f"emulator on :{EMULATOR_PORT}", models.status_code == 200)
        health = http.get(f"{local}/health")
        report.check(f"app on :{port} (PORT)", health.json().get("upstream") == "emulator")
    summary = check_api(report, emulated, f":{EMULATED_PORT}", f"emulator:{EMULATOR_PORT}")
    for service in ("app", "app-emulated"):
        uid = process_uid(ids[service])
        report.check(f"{service} process is not root", uid != 0, f"uid {uid}")

    restarts = {service: inspect(cid, "{{.RestartCount}}") for service, cid in ids.items()}
    report.check("no container restarted", set(restarts.values()) == {"0"}, str(restarts))
    started = time.monotonic()
    compose.must("--profile", "emulator", "stop")
    seconds = time.monotonic() - started
    codes = {s: inspect(cid, "{{.State.ExitCode}}") for s, cid in ids.items()}
    clean = seconds < STOP_SECONDS * 2 and set(codes.values()) == {"0"}
    report.check("stop", clean, f"{seconds:.1f} s for three containers, exit codes {codes}")

    # `down` keeps named volumes, which is the point, and the image's anonymous ones, which
    # `down -v` no longer sees once their containers are gone.
    anonymous = [name for cid in ids.values() for name in anonymous_volumes(cid)]
    compose.must("--profile", "emulator", "down")
    run(["docker", "volume", "rm", *anonymous])
    compose.must("--profile", "emulator", "up", "-d", "--no-build")
    recreated = compose.container_id("app-emulated")
    report.check("recreated", recreated != ids["app-emulated"])
    wait_healthy(recreated)
    with httpx.Client(base_url=emulated, timeout=10.0, trust_env=False) as http:
        listed = [item["id"] for item in http.get("/benchmarks").json()["benchmarks"]]
    report.check("results kept across down and up", summary["id"] in listed)
    log = run(["docker", "exec", recreated, "cat", "/srv/logs/server_logs.txt"]).stdout
    report.check("log kept across down and up", BENCHMARK_LINE in log)
    with tempfile.TemporaryDirectory(prefix="docker-check-copy-") as out:
        copied = run(["docker", "cp", f"{recreated}:/srv/benchmarks/.", out])
        report.check("docker cp copies the results to the host", copied.returncode == 0)
        check_result_files(report, Path(out), summary)
    compose.must("--profile", "emulator", "down", "-v")


def compose_env_file_run(report: Report, compose: Compose, port: int) -> None:
    """The key and the inbound keys come from the .env beside the compose file. With a key the
    service names OpenRouter as its upstream (no request goes there)."""
    inbound, upstream_key = secrets.token_hex(8), f"sk-or-v1-check-{secrets.token_hex(8)}"
    env_file = f"OPENROUTER_API_KEY={upstream_key}\nPROXY_API_KEYS={inbound}\n"
    (compose.project_dir / ".env").write_text(env_file)
    compose.must("up", "-d", "--no-build")
    app = compose.container_id("app")
    wait_healthy(app)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0, trust_env=False) as http:
        upstream = http.get("/health").json().get("upstream")
        refused = http.get("/benchmarks").status_code
        allowed = http.get("/benchmarks", headers={"Authorization": f"Bearer {inbound}"})
    report.check(".env's OPENROUTER_API_KEY reaches the container", upstream == "openrouter.ai")
    statuses = (refused, allowed.status_code)
    report.check(
        ".env's PROXY_API_KEYS reaches the container", statuses == (401, 200), str(statuses)
    )
    logs = run(["docker", "logs", app])
    report.check("the key is not in docker logs", upstream_key not in logs.stdout + logs.stderr)
    compose.must("down", "-v")


def check_compose_scale(report: Report, label: str, command: list[str]) -> None:
    """`--profile scale up --scale runner=4`: Redis, two API replicas behind the balancer, four
    runners; a run started, followed and served through the one port, one replica stopped."""
    version = output_of([*command, "version", "--short"])
    with tempfile.TemporaryDirectory(prefix="docker-check-scale-") as tmp:
        project_dir = Path(tmp)
        shutil.copy(REPO_ROOT / "docker-compose.yml", project_dir)
        port = free_port()
        env = {**os.environ, "SCALE_PORT": str(port)}
        for name in ("OPENROUTER_API_KEY", "PROXY_API_KEYS", "PROXY_ADMIN_KEYS"):
            env.pop(name, None)
        compose = Compose(f"{label}-scale", command, project_dir, env)
        try:
            report.section(f"Compose {version}: --profile scale up --scale runner=4")
            compose.must("--profile", "scale", "up", "-d", "--no-build", "--scale", "runner=4")
            for service in ("redis", "api-a", "api-b", "balancer"):
                cid = compose.must("--profile", "scale", "ps", "-q", service).strip()
                report.check(f"{service} healthy", True, f"after {wait_healthy(cid):.1f} s")
            scale_run(report, compose, f"http://127.0.0.1:{port}")
        finally:
            compose("--profile", "scale", "down", "-v", "--remove-orphans")


def scale_run(report: Report, compose: Compose, base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=60.0, trust_env=False) as http:
        deadline = time.monotonic() + HEALTHY_SECONDS
        jobs: dict[str, Any] = {}
        while time.monotonic() < deadline and jobs.get("runners") != 4:
            jobs = http.get("/health").json().get("jobs") or {}
            time.sleep(0.5)
        report.require("4 live runners, Redis reachable", jobs.get("runners") == 4, str(jobs))
        accepted = http.post(
            "/benchmark",
            params={"background": "true"},
            data={"model": MODEL, "runs": "2", "max_tokens": "8"},
            files={"prompt_file": ("prompts.txt", PROMPTS, "text/plain")},
        )
        report.require(
            "POST /benchmark?background through the balancer", accepted.status_code == 202
        )
        location = accepted.headers["location"]
        with http.stream("GET", f"{location}/events") as stream:
            names = [line for line in stream.iter_lines() if line.startswith("event: ")]
        report.check("followed to its summary", names[-1:] == ["event: summary"], str(names))
        compose.must("--profile", "scale", "stop", "api-a")
        answers = [http.get(location).json().get("status") for _ in range(4)]
        report.check("served with one replica stopped", answers == ["completed"] * 4, str(answers))
        csv = http.get(f"{location}/results.csv")
        report.check("its CSV from Redis", csv.status_code == 200 and csv.text.count("\n") == 5)


def check_observability(report: Report, label: str, command: list[str]) -> None:
    """`--profile observability up`: Prometheus scrapes the service on the compose network, and
    every query of the Grafana dashboard answers with data after some traffic. Grafana itself
    starts only where its image can be had (it is pulled from Docker Hub)."""
    version = output_of([*command, "version", "--short"])
    with tempfile.TemporaryDirectory(prefix="docker-check-observability-") as tmp:
        project_dir = Path(tmp)
        shutil.copy(REPO_ROOT / "docker-compose.yml", project_dir)
        shutil.copytree(REPO_ROOT / "deploy", project_dir / "deploy")
        port = free_port()
        env = {**os.environ, "PORT": str(port)}
        for name in ("OPENROUTER_API_KEY", "PROXY_API_KEYS", "PROXY_ADMIN_KEYS"):
            env.pop(name, None)
        compose = Compose(f"{label}-observability", command, project_dir, env)
        grafana_image = _compose_image(project_dir, "grafana")
        has_grafana = run(["docker", "image", "inspect", grafana_image]).returncode == 0
        services = ["app", "prometheus", *(["grafana"] if has_grafana else [])]
        try:
            report.section(f"Compose {version}: --profile observability up")
            report.check(
                "Grafana's image is here", has_grafana, f"{grafana_image}: not started without it"
            )
            compose.must("--profile", "observability", "up", "-d", "--no-build", *services)
            app = compose.must("--profile", "observability", "ps", "-q", "app").strip()
            report.check("app healthy", True, f"after {wait_healthy(app):.1f} s")
            dashboard_queries_answer(report, f"http://127.0.0.1:{port}")
        finally:
            compose("--profile", "observability", "down", "-v", "--remove-orphans")


def _compose_image(project_dir: Path, service: str) -> str:
    text = (project_dir / "docker-compose.yml").read_text()
    match = re.search(rf"\n  {service}:\n(?:    .*\n)*?    image: (\S+)", text)
    if match is None:
        raise CheckFailed(f"no image for {service} in docker-compose.yml")
    return match.group(1)


def dashboard_queries_answer(report: Report, base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=60.0, trust_env=False) as http:
        for number in range(20):
            http.post("/generate", json={"model": MODEL, "prompt": f"hi {number}", "max_tokens": 4})
            http.post(
                "/generate",
                json={"model": MODEL, "prompt": "stream", "max_tokens": 4, "stream": True},
            )
        http.post("/generate", json={"model": "nobody/none", "prompt": "x"})  # a 404
        # A retry that succeeds, and an upstream that keeps failing (a 502 after its retries).
        for directive in ("[[emulator:rate_limit_once]]", "[[emulator:server_error]]"):
            http.post("/generate", json={"model": MODEL, "prompt": f"{directive} hi"})
        http.post(
            "/benchmark",
            data={"model": MODEL, "runs": "1", "max_tokens": "4"},
            files={"prompt_file": ("prompts.txt", PROMPTS, "text/plain")},
        )
        # More slow runs at once than MAX_RUNNING_BENCHMARKS (4) admits: the last is refused.
        slow = b"[[emulator:delay=20]] wait\n"
        for _ in range(5):
            http.post(
                "/benchmark",
                params={"background": "true"},
                data={"model": MODEL, "runs": "1", "max_tokens": "4"},
                files={"prompt_file": ("slow.txt", slow, "text/plain")},
            )
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/gateway.json").read_text())
    queries = [
        (panel["title"], target["expr"].replace("$__rate_interval", "2m"))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    prometheus = _published_prometheus()
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=prometheus, timeout=10.0, trust_env=False) as http:
        empty = [expr for _, expr in queries]
        while empty and time.monotonic() < deadline:
            empty = [expr for expr in empty if not _has_data(http, expr)]
            if empty:
                time.sleep(2)
        up = http.get("/api/v1/query", params={"query": "up"}).json()["data"]["result"]
    report.check(
        "Prometheus scrapes the service", [r["value"][1] for r in up] == ["1"], str(up)[:200]
    )
    answered = len(queries) - len(empty)
    report.check(
        "every dashboard query answers with data",
        not empty,
        f"{answered} of {len(queries)}; empty: {empty[:3]}",
    )


def _published_prometheus() -> str:
    names = run(["docker", "ps", "--format", "{{.Names}} {{.Ports}}"]).stdout.splitlines()
    for line in names:
        if "observability" in line and "prometheus" in line:
            found = re.search(r":(\d+)->9090", line)
            if found:
                return f"http://127.0.0.1:{found.group(1)}"
    raise CheckFailed("Prometheus' published port not found")


def _has_data(http: httpx.Client, expr: str) -> bool:
    answer = http.get("/api/v1/query", params={"query": expr})
    if answer.status_code != 200:
        raise CheckFailed(f"Prometheus refused {expr}: {answer.text[:200]}")
    return bool(answer.json()["data"]["result"])


def _timestamp(stamp: str) -> float:
    """Seconds since the epoch from Docker's RFC 3339 times, whose nanoseconds fromisoformat
    does not read."""
    match = re.fullmatch(r"([\d-]+T[\d:]+)(\.\d+)?(Z|[+-][\d:]+)", stamp)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    whole, fraction, offset = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if offset == "Z" else offset))
    return moment.timestamp() + float(fraction or 0)


def wait_for_text(read: Callable[[], str], text: str, seconds: float = 10.0) -> bool:
    """Log lines are written after the response, from a queue: give them a moment."""
    deadline = time.monotonic() + seconds
    while text not in read():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def guarded(report: Report, step: Callable[[], None]) -> None:
    try:
        step()
    except (CheckFailed, httpx.HTTPError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        report.check("step finished", False, f"{type(exc).__name__}: {exc}")


def main() -> int:
    report = Report()
    report.section("engine")
    engine = run(["docker", "version", "--format", "{{.Server.Version}}"])
    if not report.check("Docker engine", engine.returncode == 0, engine.stdout.strip()):
        print(engine.stderr.strip())
        return 1
    composes = compose_commands()
    report.check("Compose found", bool(composes), ", ".join(" ".join(c) for _, c in composes))
    busy = [p for p in (EMULATOR_PORT, EMULATED_PORT) if not port_is_free(p)]
    report.check("ports 8001 and 8002 free for the compose file", not busy, f"taken: {busy}")

    started = time.monotonic()
    guarded(report, partial(check_build, report))
    if not report.failures:
        # `scale` or `observability` runs only that profile's check, after the build.
        only = set(sys.argv[1:]) & {"scale", "observability"}
        if not only:
            guarded(report, partial(check_run, report))
        for label, command in composes:
            if not only:
                guarded(report, partial(check_compose, report, label, command))
            # Compose v1.29 reads profiles and --scale too (it ignores deploy.replicas).
            if not only or "scale" in only:
                guarded(report, partial(check_compose_scale, report, label, command))
            if not only or "observability" in only:
                guarded(report, partial(check_observability, report, label, command))
    failed = len(report.failures)
    print(f"\n{report.count} checks, {failed} failed, {time.monotonic() - started:.0f} s")
    for name in report.failures:
        print(f"  failed: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
