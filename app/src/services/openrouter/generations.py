"""OpenRouter's own record of each generation (`GET /generation?id=`), fetched after the fact.

The record appears a few seconds after a generation ends: until then the upstream answers
404, and the fetch asks again with a growing pause until its deadline. A record that never
comes, or an error fetching it, is "missing": a cross-check never fails what it checks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from src.schemas.prompts import GenerationResult, GenerationStats
from src.services.base.exceptions import ServiceError
from src.services.base.timing import now
from src.services.openrouter.client import OpenRouterClient
from src.services.openrouter.schemas import UpstreamGeneration

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=GenerationResult)

FIRST_PAUSE_SECONDS = 0.25
MAX_PAUSE_SECONDS = 2.0
# Records fetched at once after a run: enough to finish soon, few enough to stay polite.
FETCHES_AT_ONCE = 8
MS = 1000.0


def stats_of(record: UpstreamGeneration) -> GenerationStats:
    return GenerationStats(
        latency_seconds=_seconds(record.latency),
        generation_seconds=_seconds(record.generation_time),
        native_prompt_tokens=record.native_tokens_prompt,
        native_completion_tokens=record.native_tokens_completion,
        cost=record.total_cost,
        provider=record.provider_name,
    )


def _seconds(milliseconds: float | None) -> float | None:
    return None if milliseconds is None else milliseconds / MS


async def fetch_stats(
    client: OpenRouterClient, generation_id: str, deadline: float
) -> GenerationStats | None:
    """The record, asking again while it does not exist yet; None past `deadline` (a `now()`
    reading)."""
    pause = FIRST_PAUSE_SECONDS
    while True:
        try:
            record = await client.generation(generation_id)
        except ServiceError as error:
            logger.warning(
                "GENERATION RECORD UNAVAILABLE | id=%s | %s", generation_id, error.detail
            )
            return None
        if record is not None:
            return stats_of(record)
        left = deadline - now()
        if left <= 0:
            return None
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, MAX_PAUSE_SECONDS)


def with_stats(result: R, stats: GenerationStats | None) -> R:
    """The result with the record (or marked missing); the record's cost comes first."""
    update: dict[str, Any] = {"generation": stats, "generation_record": "missing"}
    if stats is not None:
        update["generation_record"] = "found"
        if stats.cost is not None:
            update["cost"] = stats.cost
            if "cost_source" in type(result).model_fields:
                update["cost_source"] = "generation"
    return result.model_copy(update=update)


async def cross_check(
    client: OpenRouterClient, results: Sequence[R], wait_seconds: float
) -> list[R]:
    """Every result that has a generation id, with its record; the others as they were.
    One deadline for all: however many records are missing, it ends `wait_seconds` from now."""
    slots = asyncio.Semaphore(FETCHES_AT_ONCE)
    deadline = now() + wait_seconds

    async def one(result: R) -> R:
        if result.generation_id is None:
            return result
        async with slots:
            return with_stats(result, await fetch_stats(client, result.generation_id, deadline))

    return list(await asyncio.gather(*(one(result) for result in results)))
