"""POST /benchmark over real sockets: result files on disk, failures recorded, never fatal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.e2e import MODEL, unique
from tests.helpers.processes import ServiceProcess
from tests.helpers.results import csv_rows


def run_benchmark(http: httpx.Client, prompts: list[str], **form: str) -> httpx.Response:
    data: dict[str, Any] = {"model": MODEL, "runs": "2", "concurrency": "2", **form}
    upload = "\n".join(prompts).encode()
    return http.post(
        "/benchmark", data=data, files={"prompt_file": ("prompts.txt", upload, "text/plain")}
    )


def result_files(app: ServiceProcess, summary: dict[str, Any]) -> tuple[Path, Path]:
    """The files a summary names: plain names inside BENCHMARKS_DIR (no server path shown)."""
    csv_path = app.benchmarks_dir / summary["files"]["csv"]
    json_path = app.benchmarks_dir / summary["files"]["json"]
    for path in (csv_path, json_path):
        assert path.parent == app.benchmarks_dir
        assert path.stem == summary["id"]
        assert path.is_file()
    return csv_path, json_path


def test_benchmark_runs_every_prompt_and_writes_its_files(
    client: httpx.Client, app: ServiceProcess
) -> None:
    prompts = [unique(f"Benchmark prompt {index}") for index in range(1, 4)]

    response = run_benchmark(client, prompts, max_tokens="16")

    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["status"] == "completed"
    assert summary["requests"] == summary["finished_requests"] == 6
    assert summary["parameters"]["concurrency"] == 2
    [stats] = summary["models"]
    assert (stats["model"], stats["count"], stats["ok"], stats["failed"]) == (MODEL, 6, 6, 0)
    assert [row["count"] for row in stats["per_prompt"]] == [2, 2, 2]
    assert stats["latency"]["p50"] > 0
    csv_path, json_path = result_files(app, summary)
    rows = csv_rows(csv_path)
    assert len(rows) == 6
    assert {(row["prompt_index"], row["run"]) for row in rows} == {
        (str(index), str(run)) for index in (1, 2, 3) for run in (1, 2)
    }
    assert json.loads(json_path.read_text(encoding="utf-8"))["id"] == summary["id"]
    listed = client.get("/benchmarks").json()["benchmarks"]
    assert summary["id"] in [item["id"] for item in listed]


def test_a_failing_prompt_is_recorded_as_failed_while_the_others_succeed(
    client: httpx.Client, app: ServiceProcess
) -> None:
    prompts = [
        unique("Fine prompt"),
        unique("Broken prompt [[emulator:server_error]]"),
        unique("Another fine prompt"),
    ]

    response = run_benchmark(client, prompts, max_tokens="16")

    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["status"] == "completed"
    [stats] = summary["models"]
    assert (stats["ok"], stats["failed"]) == (4, 2)
    assert [(row["ok"], row["failed"]) for row in stats["per_prompt"]] == [(2, 0), (0, 2), (2, 0)]
    assert sum(stats["errors"].values()) == 2
    rows = csv_rows(result_files(app, summary)[0])
    failed = [row for row in rows if row["error"]]
    assert len(rows) == 6 and len(failed) == 2
    assert {row["prompt_index"] for row in failed} == {"2"}
    assert all(row["status"] == "502" for row in failed), failed
