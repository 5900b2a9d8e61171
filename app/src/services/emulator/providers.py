"""Provider routing as OpenRouter documents it, per-provider speed, and per-provider capacity.

Routing turns a model and the request's `provider` object into the providers to try, in
order; the first one that is not failing serves the request. Without preferences the
emulator load-balances by strict round-robin over the model's providers (one counter per
model), so a benchmark of one model mixes them evenly and repeatably. `order` or `sort`
disables the balancing, as on OpenRouter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final

import orjson

from src.services.emulator.catalog import (
    MODELS,
    SUPPORTED_PARAMETERS,
    EmulatedModel,
    EmulatedProvider,
)
from src.services.emulator.config import EmulatorConfig
from src.services.emulator.request import NO_PREFERENCES, ProviderPreferences

# OpenRouter's answer when `only`/`ignore`/`order` leave nothing to route to.
NO_PROVIDER_STATUS: Final = 404
NO_PROVIDER_MESSAGE: Final = "No allowed providers are available for the selected model."
# OpenRouter's answer when the provider(s) it tried failed and it may not try others.
PROVIDER_FAILED_STATUS: Final = 502
PROVIDER_FAILED_MESSAGE: Final = "Provider returned error"
PROVIDER_FAILED_RAW: Final = "Upstream provider is unavailable (emulated)"

_SORT_KEYS: Final[dict[str, Callable[[EmulatedProvider], float]]] = {
    "price": lambda provider: provider.price_key,
    "throughput": lambda provider: -provider.throughput_factor,
    "latency": lambda provider: provider.ttft_factor,
}


class NoProviderError(Exception):
    """Nothing is left to route to; answered with OpenRouter's 404."""


class ProviderFailedError(Exception):
    """Every provider the request could use is failing; answered with OpenRouter's 502."""

    def __init__(self, provider: EmulatedProvider) -> None:
        super().__init__(provider.name)
        self.provider = provider


@dataclass(frozen=True, slots=True)
class Speed:
    ttft_seconds: float
    tokens_per_second: float


def provider_speed(
    config: EmulatorConfig, model: EmulatedModel, provider: EmulatedProvider
) -> Speed:
    """The configured base latency scaled by the model's and the provider's factors, exactly."""
    return Speed(
        ttft_seconds=config.ttft_seconds * model.latency_factor * provider.ttft_factor,
        tokens_per_second=(
            config.tokens_per_second / model.latency_factor * provider.throughput_factor
        ),
    )


class Router:
    """Chooses providers; holds the round-robin counters of one app instance."""

    def __init__(self, models: Iterable[EmulatedModel] = MODELS) -> None:
        self._rotations: dict[str, tuple[tuple[EmulatedProvider, ...], ...]] = {
            model.id: _rotations(model.providers) for model in models
        }
        self._turns: dict[str, int] = dict.fromkeys(self._rotations, 0)

    def route(
        self, model: EmulatedModel, preferences: ProviderPreferences
    ) -> tuple[EmulatedProvider, ...]:
        """The providers to try, in order; raises `NoProviderError` when there is none."""
        if preferences is NO_PREFERENCES:  # the hot path: two dict lookups
            return self._next_rotation(model.id, self._rotations[model.id])
        candidates = tuple(
            provider
            for provider in model.providers
            if (preferences.only is None or provider.tag in preferences.only)
            and provider.tag not in preferences.ignore
        )
        ordered = tuple(
            provider
            for name in preferences.order
            for provider in candidates
            if provider.tag == name
        )
        rest = tuple(provider for provider in candidates if provider not in ordered)
        if preferences.sort is not None:
            rest = tuple(sorted(rest, key=_SORT_KEYS[preferences.sort]))
        elif not preferences.order:
            rest = self._next_rotation(model.id, _rotations(rest))
        if preferences.allow_fallbacks:
            chosen = ordered + rest
        else:
            # Without fallbacks only the ordered providers may serve, or else the first choice.
            chosen = ordered if preferences.order else rest[:1]
        if not chosen:
            raise NoProviderError
        return chosen

    def _next_rotation(
        self, model_id: str, rotations: tuple[tuple[EmulatedProvider, ...], ...]
    ) -> tuple[EmulatedProvider, ...]:
        if not rotations:
            return ()
        turn = self._turns[model_id]
        self._turns[model_id] = turn + 1
        return rotations[turn % len(rotations)]


def serving_provider(
    route: tuple[EmulatedProvider, ...], failing: frozenset[str]
) -> EmulatedProvider:
    """The first provider of the route that is not failing; raises when all of them are."""
    if not failing:
        return route[0]
    for provider in route:
        if provider.tag not in failing:
            return provider
    raise ProviderFailedError(route[-1])


def _rotations(
    providers: tuple[EmulatedProvider, ...],
) -> tuple[tuple[EmulatedProvider, ...], ...]:
    # Each rotation starts at the next provider and keeps the others as fallbacks in order.
    return tuple(providers[index:] + providers[:index] for index in range(len(providers)))


class _Gate:
    """A FIFO limit on requests in flight: a freed slot goes to the oldest waiter."""

    __slots__ = ("_busy", "_limit", "_waiters")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._busy < self._limit and not self._waiters:
            self._busy += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # Handed the slot just as it was cancelled: pass it on rather than leak it.
            if waiter.done() and not waiter.cancelled():
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; `_busy` stays
                return
        self._busy -= 1


class Capacity:
    """`EMULATOR_CAPACITY` requests in flight per provider of a model; the rest queue in order.

    A request holds its slot from before its first token until its last one, so a concurrency
    sweep past the capacity sees TTFT grow by the queueing.
    """

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._gates: dict[tuple[str, str], _Gate] = {}

    def slot(self, model_id: str, provider_name: str) -> AbstractAsyncContextManager[None]:
        if self._limit is None:
            return _UNLIMITED  # no generator frame per request when nothing is limited
        key = (model_id, provider_name)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(self._limit)
        return _held(gate)


_UNLIMITED: Final = contextlib.nullcontext()


@contextlib.asynccontextmanager
async def _held(gate: _Gate) -> AsyncIterator[None]:
    await gate.acquire()
    try:
        yield
    finally:
        gate.release()


def endpoints_body(model: EmulatedModel, config: EmulatorConfig) -> bytes:
    """`GET /models/{author}/{slug}/endpoints`: the model and one entry per provider.

    The last-30-minutes figures are the configured ones (every percentile alike), so a
    client comparing its measurements with them has an exact reference.
    """
    base = model.to_json()
    endpoints = [_endpoint_json(model, provider, config) for provider in model.providers]
    return orjson.dumps(
        {
            "data": {
                "id": model.id,
                "name": model.name,
                "created": model.created,
                "description": model.description,
                "architecture": base["architecture"],
                "endpoints": endpoints,
            }
        }
    )


def _endpoint_json(
    model: EmulatedModel, provider: EmulatedProvider, config: EmulatorConfig
) -> dict[str, object]:
    speed = provider_speed(config, model, provider)
    up = provider.tag not in config.failing_providers
    return {
        "name": f"{provider.name} | {model.id}",
        "model_name": model.name,
        "context_length": provider.context_length,
        "pricing": {
            "prompt": provider.prompt_price,
            "completion": provider.completion_price,
            "request": "0",
            "image": "0",
        },
        "provider_name": provider.name,
        "tag": provider.tag,
        "quantization": provider.quantization,
        "max_completion_tokens": min(model.max_completion_tokens, provider.context_length),
        "max_prompt_tokens": None,
        "supported_parameters": list(SUPPORTED_PARAMETERS),
        # 0 is OpenRouter's healthy endpoint; the emulator marks a failing provider -1.
        "status": 0 if up else -1,
        "uptime_last_30m": 100.0 if up else 0.0,
        "supports_implicit_caching": False,
        "latency_last_30m": _percentiles(speed.ttft_seconds),
        "throughput_last_30m": (
            _percentiles(speed.tokens_per_second) if speed.tokens_per_second else None
        ),
    }


def _percentiles(value: float) -> dict[str, float]:
    return dict.fromkeys(("p50", "p75", "p90", "p99"), value)
