"""The command line as users run it: `make bench` (through make and uv run) in a terminal,
against a served app and the emulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers.e2e import INBOUND_KEY, MODEL, unique
from tests.helpers.processes import APP_DIR, REPO_ROOT, ServiceProcess, free_port, wait_until

RUN_SECONDS = 120.0
# `make bench` first syncs the environment (a no-op when it is in place), then starts the CLI.
START_SECONDS = 120.0


# A shell starts a foreground job with Ctrl-C at its default action, even when the shell itself
# (a background job, a CI runner) ignores it; an ignored SIGINT would be inherited through exec.
AS_FOREGROUND_JOB = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])",
]


class Terminal:
    """A command in its own process group, as a terminal's foreground job is: a Ctrl-C there
    is a SIGINT to every process of the group (make, uv, python). Its output is read as it
    comes, so a test can wait for a line without blocking on the pipe."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [*AS_FOREGROUND_JOB, *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=_drain, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, text: str, seconds: float) -> None:
        found = wait_until(lambda: text in self.stderr or self.process.poll() is not None, seconds)
        assert found and text in self.stderr, f"{text!r} never shown:\n{self.stderr}{self.stdout}"

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, seconds: float) -> int:
        try:
            code = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError(f"still running:\n{self.stderr}{self.stdout}") from None
        self._close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _drain(stream: object, lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for job in started:
        job.kill()


def make_env(app: ServiceProcess) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAKE")}
    env.update({"HOST": "127.0.0.1", "PORT": str(app.port), "COLUMNS": "100"})
    env.pop("PYTHONPATH", None)
    return env


def test_ctrl_c_twice_through_make_prints_the_cancelled_table_and_exits_130(
    app: ServiceProcess, client: httpx.Client, tmp_path: Path, terminal: list[Terminal]
) -> None:
    prompts = tmp_path / "slow.txt"
    prompts.write_text(unique("Slow [[emulator:ttft=20]]") + "\n" + unique("Slow too") + "\n")
    job = Terminal(
        ["make", "bench", f"FILE={prompts}", f"MODELS={MODEL}", "RUNS=1", f"KEY={INBOUND_KEY}"],
        make_env(app),
    )
    terminal.append(job)
    job.wait_for("Ctrl-C cancels it", START_SECONDS)
    benchmark_id = job.stderr.split("Benchmark ", 1)[1].split()[0]

    job.ctrl_c()
    job.wait_for("Cancelling", RUN_SECONDS)
    job.ctrl_c()  # impatient: a second Ctrl-C while the run is being cancelled
    code = job.wait(RUN_SECONDS)

    assert "Traceback" not in job.stderr, job.stderr
    assert "KeyboardInterrupt" not in job.stderr
    assert f"{benchmark_id}: cancelled" in job.stdout, job.stdout + job.stderr
    assert "Total cost:" in job.stdout
    # make reports the CLI's own 130, then ends by the same Ctrl-C: a shell's $? is 130.
    assert re.search(r"make: \*\*\* \[Makefile:\d+: bench\] Error 130", job.stderr), job.stderr
    assert code == -signal.SIGINT
    assert client.get(f"/benchmarks/{benchmark_id}").json()["status"] == "cancelled"


# --- one clear line, never a traceback ---------------------------------------------------------


def cli(*args: str, url: str | None = None, key: str | None = INBOUND_KEY) -> CliResult:
    """`python -m src.cli ...` run to its end: exit code, stdout, stderr."""
    argv = [sys.executable, "-m", "src.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(APP_DIR), "COLUMNS": "100"}
    env.pop("GATEWAY_KEY", None)
    if url is not None:
        env.update({"GATEWAY_URL": url})
    if key is not None:
        env["GATEWAY_KEY"] = key
    done = subprocess.run(
        argv, cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=RUN_SECONDS
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def one_line(self) -> str:
        """The whole of stderr, which must be one line and no traceback."""
        assert "Traceback" not in self.err, self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        return lines[0]


def test_no_service_running_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("benchmark", "--prompt-tokens", "8", "--models", MODEL, url=url)

    assert result.code == 1
    assert result.one_line() == (
        f"Cannot reach the service at {url}: is it running (make run)? Connection refused"
    )


def test_no_prompt_source_is_one_clear_line(app: ServiceProcess) -> None:
    result = cli("benchmark", "--models", MODEL, url=app.url)

    assert result.code == 2
    line = result.one_line()
    assert "--file (FILE=)" in line and "--dataset (DATASET=)" in line
    assert "--prompt-tokens (PROMPT_TOKENS=)" in line


def test_a_wrong_key_is_one_clear_line(app: ServiceProcess) -> None:
    result = cli("benchmark", "--prompt-tokens", "8", "--models", MODEL, url=app.url, key="nope")

    assert result.code == 1
    assert result.one_line().startswith("The service refused the benchmark (401): Missing or")


def test_a_refused_form_is_one_clear_line_naming_the_field(app: ServiceProcess) -> None:
    result = cli("benchmark", "--prompt-tokens", "8", "--models", MODEL, "--runs", "0", url=app.url)

    assert result.code == 1
    line = result.one_line()
    assert line.startswith("The service refused the benchmark (422): runs: ")
    assert "greater than or equal to 1" in line


def test_help_shows_the_services_defaults() -> None:
    result = cli("benchmark", "--help")

    assert result.code == 0
    text = " ".join(result.out.split())
    for option, default in (("--runs", "5"), ("--concurrency", "1"), ("--max-tokens", "512")):
        assert re.search(rf"{option} \S+ .*?\(default: {default}\)", text), (option, text)
    assert "(default: http://127.0.0.1:8000)" in text


def test_the_readme_help_line_works_as_written() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"`(PYTHONPATH=app \S*python\S* -m src\.cli[^`]*--help)`", readme)
    assert command, "the README shows how to get the command line's help"
    done = subprocess.run(
        ["bash", "-c", command.group(1)], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=RUN_SECONDS, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage: python -m src.cli" in done.stdout


def test_json_prints_the_summary_and_the_end_names_the_report(app: ServiceProcess) -> None:
    plain = cli("benchmark", "--prompt-tokens", "8", "--prompts", "2", "--runs", "1",
                "--models", MODEL, url=app.url)  # fmt: skip
    as_json = cli("benchmark", "--prompt-tokens", "8", "--prompts", "2", "--runs", "1",
                  "--models", MODEL, "--json", url=app.url)  # fmt: skip

    assert plain.code == as_json.code == 0, plain.err + as_json.err
    benchmark_id = plain.err.split("Benchmark ", 1)[1].split()[0]
    assert f"Report: {app.url}/benchmarks/{benchmark_id}/report" in plain.out
    summary = json.loads(as_json.out)
    assert (summary["status"], summary["finished_requests"]) == ("completed", 2)
    assert summary["models"][0]["model"] == MODEL


def test_follow_attaches_to_a_run_started_elsewhere(
    app: ServiceProcess, client: httpx.Client
) -> None:
    started = client.post(
        "/benchmark", params={"background": "true"},
        data={"model": MODEL, "prompt_tokens": "8", "prompts": "2", "runs": "2"},
    )  # fmt: skip
    assert started.status_code == 202, started.text
    benchmark_id = started.json()["id"]

    result = cli("follow", benchmark_id, url=app.url)
    unknown = cli("follow", "20260101T000000Z_nothing_00000000", url=app.url)

    assert result.code == 0, result.err
    assert f"{benchmark_id}: completed" in result.out
    assert f"Report: {app.url}/benchmarks/{benchmark_id}/report" in result.out
    assert unknown.code == 1
    assert "(404)" in unknown.one_line()


def test_make_bench_passes_every_variable_to_the_command_line() -> None:
    variables = {
        "MODELS": "emulator/small", "PROMPT_TOKENS": "64", "PROMPT_TOKENS_STDEV": "4",
        "PROMPTS": "3", "OUTPUT_TOKENS": "16", "OUTPUT_TOKENS_STDEV": "2", "MAX_TOKENS": "32",
        "WARMUP": "1", "ARRIVAL": "poisson", "RATE": "2", "SEED": "7", "KEY": "k-1",
        "LABEL": "night run", "PROVIDERS": "alpha,beta", "PROVIDER_SORT": "price", "RUNS": "2",
        "CONCURRENCY": "3", "DURATION": "9", "URL": "http://127.0.0.1:9999", "JSON": "1",
    }  # fmt: skip
    assignments = [f"{name}={value}" for name, value in variables.items()]
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", "bench", *assignments],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    command = " ".join(done.stdout.split())  # the recipe's lines, as make would run them
    # The key reaches the command line through its environment: never shown, never in `ps`.
    assert "k-1" not in done.stdout
    for expected in (
        '--models "emulator/small"', "--prompt-tokens 64", "--prompt-tokens-stdev 4",
        "--prompts 3", "--output-tokens 16", "--output-tokens-stdev 2", "--max-tokens 32",
        "--warmup 1", "--arrival poisson", "--rate 2", "--seed 7",
        '--label "night run"', '--providers "alpha,beta"', "--provider-sort price", "--runs 2",
        "--concurrency 3", "--duration 9", '--url "http://127.0.0.1:9999"', "--json",
    ):  # fmt: skip
        assert expected in command, (expected, command)
