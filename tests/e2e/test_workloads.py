"""Workloads against the emulator, through a live service and its runner processes: synthetic
prompts sized to the served model's own token count, and answers that end before max_tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from src.services.emulator.text import answer_tokens
from tests.e2e.test_benchmark_jobs import RUN_SECONDS, cli
from tests.helpers.e2e import MODEL, unique
from tests.helpers.processes import ServiceProcess

TARGET = 150


def run(
    http: httpx.Client, form: dict[str, str], files: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = http.post("/benchmark", data={"model": MODEL, **form}, files=files or {})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "completed", body
    return body


def test_after_calibration_the_mean_prompt_length_is_within_5_percent_of_the_target(
    client: httpx.Client,
) -> None:
    synthetic = {"prompt_tokens": str(TARGET), "prompts": "4", "output_tokens": "4", "runs": "1"}

    uncalibrated = run(client, synthetic)
    calibrated = run(client, {**synthetic, "warmup": "2"})

    # The emulator counts a token per word, not the 1.3 per word assumed before measuring.
    [before] = uncalibrated["models"]
    assert abs(before["lengths"]["input"]["mean"] - TARGET) / TARGET > 0.05
    [after] = calibrated["models"]
    assert after["lengths"]["input"]["target"] == TARGET
    assert abs(after["lengths"]["input"]["mean"] - TARGET) / TARGET <= 0.05
    assert after["ok"] == 4


def test_answers_that_end_before_output_tokens_are_counted_as_early_finishes(
    client: httpx.Client,
) -> None:
    # The emulator's natural answers are 20 to 80 tokens long, fixed per prompt.
    prompts = [unique(f"Early finish {index}") for index in range(8)]
    limit = 50
    expected = sum(1 for prompt in prompts if len(answer_tokens(MODEL, prompt)) <= limit)
    upload = {"prompt_file": ("p.txt", "\n".join(prompts).encode(), "text/plain")}

    body = run(client, {"output_tokens": str(limit), "runs": "1"}, upload)

    [stats] = body["models"]
    assert stats["lengths"]["early_finishes"] == expected
    assert stats["lengths"]["output"]["target"] == limit
    assert stats["lengths"]["output"]["p90"] <= limit


def test_the_command_line_runs_synthetic_prompts_and_prints_the_lengths_achieved(
    app: ServiceProcess,
) -> None:
    process = cli(app, "--prompt-tokens", "40", "--prompts", "3", "--output-tokens", "8",
                  "--warmup", "1", "--runs", "1", "--models", MODEL)  # fmt: skip
    out, err = process.communicate(timeout=RUN_SECONDS)

    assert process.returncode == 0, err
    assert "3/3" in err or "4/4" in err  # the progress bar reached the end
    assert ": completed" in out
    # The emulator rotates over its providers: a warning line names the model too.
    line = next(line for line in out.splitlines() if line.startswith(f"{MODEL}: input"))
    assert "input tokens mean 40.0, p90 40.0 (target 40)" in line
    assert "(target 8)" in line and "ended before max_tokens" in line


def test_the_command_line_sends_a_dataset_turn_by_turn(
    app: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("cli-dataset") / "chats.jsonl"
    turns = [{"from": "human", "value": unique(f"Turn {index}")} for index in range(3)]
    path.write_text(json.dumps({"conversations": turns}) + "\n")

    process = cli(app, "--dataset", str(path), "--turns", "3", "--runs", "1", "--models", MODEL)
    out, err = process.communicate(timeout=RUN_SECONDS)

    assert process.returncode == 0, err
    assert ": completed" in out
    assert "ttft p50 s by turn: 1: " in out and ", 3: " in out
