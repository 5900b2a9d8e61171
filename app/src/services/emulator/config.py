"""Emulator tunables: latency and fault probabilities, fixed for the life of one app instance."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from src.config import Settings

# Longer than a client pool keeps an idle connection (the service's keeps one 30 s): an
# upstream that closes idle connections first races every client that reuses one at that
# moment, and a benchmark against the emulator would time that race, not the emulated model.
KEEP_ALIVE_SECONDS: Final = 75


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
    # Provider names (any case) that answer every request with an error, as a provider
    # that is down does; OpenRouter then falls back to the next provider when allowed.
    failing_providers: frozenset[str] = frozenset()
    # How long after a generation ends `GET /generation` still answers 404 for it.
    generation_delay_seconds: float = 1.0
    # Requests in flight per provider of a model before the next ones queue; None: unlimited.
    capacity: int | None = None

    def __post_init__(self) -> None:
        # Matched against lower-cased provider slugs, whatever case the setting used.
        object.__setattr__(
            self, "failing_providers", frozenset(name.lower() for name in self.failing_providers)
        )
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity!r}")
        # Settings validate the same bounds; a direct construction in a test or script must too.
        for name in (
            "ttft_seconds",
            "tokens_per_second",
            "retry_after_seconds",
            "generation_delay_seconds",
        ):
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
        """Every field from its setting of the same name with the `emulator_` prefix."""
        return cls(
            **{field.name: getattr(settings, f"emulator_{field.name}") for field in fields(cls)}
        )
