"""The model list: a TTL cache (asyncache + cachetools) with concurrent misses coalesced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from asyncache import cached
from cachetools import TTLCache

from src.services.base.exceptions import UnknownModelError
from src.services.openrouter.client import OpenRouterClient
from src.services.openrouter.schemas import UpstreamModel

_CACHE_KEY = "models"


def is_free(model: UpstreamModel) -> bool:
    if model.id.endswith(":free"):
        return True
    try:
        return float(model.pricing.prompt) == 0 and float(model.pricing.completion) == 0
    except ValueError:
        return False


class ModelCatalog:
    def __init__(
        self,
        client: OpenRouterClient,
        ttl_seconds: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._cache: TTLCache[str, list[UpstreamModel]] = TTLCache(
            maxsize=1, ttl=ttl_seconds, timer=timer
        )
        self._inflight: asyncio.Future[list[UpstreamModel]] | None = None
        self._cached_fetch = cached(self._cache, key=lambda: _CACHE_KEY)(self._fetch_once)

    async def models(self) -> list[UpstreamModel]:
        result: list[UpstreamModel] = await self._cached_fetch()
        return result

    async def require(self, model_ids: list[str]) -> None:
        """Refuse unknown model ids before any paid request is spent on them."""
        known = {model.id for model in await self.models()}
        unknown = [model_id for model_id in model_ids if model_id not in known]
        if unknown:
            raise UnknownModelError(
                f"Unknown model id(s): {', '.join(unknown)}. GET /models lists the available ids."
            )

    async def _fetch_once(self) -> list[UpstreamModel]:
        # asyncache does not share an in-flight call: without this, N cold requests make N calls.
        if self._inflight is None:
            task = asyncio.ensure_future(self._client.list_models())
            task.add_done_callback(self._forget_inflight)
            self._inflight = task
        # Shielded: one caller that goes away must not cancel the fetch the others wait for.
        return await asyncio.shield(self._inflight)

    def _forget_inflight(self, task: asyncio.Future[list[UpstreamModel]]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # mark retrieved; every waiter already got it
