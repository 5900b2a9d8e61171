"""Workloads against the emulator, through a live service and its runner processes: synthetic
prompts sized to the served model's own token count, and answers that end before max_tokens."""

from __future__ import annotations

from typing import Any

import httpx

from src.services.emulator.text import answer_tokens
from tests.helpers.e2e import MODEL, unique

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
