"""Emulator tunables: latency and fault probabilities, fixed for the life of one app instance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from src.config import Settings


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Global behaviour; a request can override latency and force faults (see the package doc).

    `tokens_per_second` is the decode rate after the first token; 0 means no per-token delay.
    The probabilities are drawn from a `random.Random(seed)` owned by the app instance, so one
    seed and one request order give one sequence of faults.
    """

    ttft_seconds: float = 0.0
    tokens_per_second: float = 0.0
    rate_limit_probability: float = 0.0
    server_error_probability: float = 0.0
    stream_error_probability: float = 0.0
    retry_after_seconds: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        # Settings validate the same bounds; a direct construction in a test or script must too.
        for name in ("ttft_seconds", "tokens_per_second", "retry_after_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in (
            "rate_limit_probability",
            "server_error_probability",
            "stream_error_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> EmulatorConfig:
        return cls(
            ttft_seconds=settings.emulator_ttft_seconds,
            tokens_per_second=settings.emulator_tokens_per_second,
            rate_limit_probability=settings.emulator_rate_limit_probability,
            server_error_probability=settings.emulator_server_error_probability,
            stream_error_probability=settings.emulator_stream_error_probability,
            retry_after_seconds=settings.emulator_retry_after_seconds,
            seed=settings.emulator_seed,
        )
