"""The model list: a TTL cache (asyncache + cachetools) with concurrent misses coalesced."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from asyncache import cached
from cachetools import TTLCache
from pydantic import BaseModel, ConfigDict

from src.schemas.models import Pricing
from src.services.base.exceptions import UnknownModelError, UnknownProviderError
from src.services.openrouter.client import OpenRouterClient
from src.services.openrouter.schemas import UpstreamEndpoint, UpstreamModel

_CACHE_KEY = "models"
# Endpoint lists kept at once: one per model a form names, far more than any form names.
_ENDPOINT_LISTS = 1024
ALL_PROVIDERS = "all"
# A form may name a thousand models: a refusal names the first few, enough to fix the list.
_SHOWN_UNKNOWN_IDS = 10


class TokenPrices(BaseModel):
    """USD per prompt token and per completion token."""

    model_config = ConfigDict(frozen=True)

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.prompt + completion_tokens * self.completion


FREE = TokenPrices(prompt=0.0, completion=0.0)


def token_prices(model: UpstreamModel) -> TokenPrices | None:
    """What the model costs per token: free for ":free" ids, None when the upstream gives no
    usable price (unknown is not free)."""
    if model.id.endswith(":free"):
        return FREE
    pricing = model.pricing
    if pricing is None or pricing.prompt is None or pricing.completion is None:
        return None
    try:
        prices = TokenPrices(prompt=float(pricing.prompt), completion=float(pricing.completion))
    except ValueError:
        return None
    if not all(math.isfinite(p) and p >= 0 for p in (prices.prompt, prices.completion)):
        return None
    return prices


def is_free(model: UpstreamModel) -> bool:
    return token_prices(model) == FREE


def listed_pricing(listed: UpstreamModel | UpstreamEndpoint) -> Pricing | None:
    """The prices of a model or of one provider's endpoint, as the upstream lists them
    (decimal strings); None when it lists none."""
    if listed.pricing is None:
        return None
    return Pricing(prompt=listed.pricing.prompt, completion=listed.pricing.completion)


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
        self._endpoints_cache: TTLCache[str, list[UpstreamEndpoint]] = TTLCache(
            maxsize=_ENDPOINT_LISTS, ttl=ttl_seconds, timer=timer
        )
        self._endpoints_inflight: dict[str, asyncio.Future[list[UpstreamEndpoint]]] = {}
        self._cached_endpoints = cached(self._endpoints_cache, key=lambda model: model)(
            self._fetch_endpoints_once
        )

    async def endpoints(self, model_id: str) -> list[UpstreamEndpoint]:
        """The providers serving a known model (cached like the model list)."""
        await self.require([model_id])
        result: list[UpstreamEndpoint] = await self._cached_endpoints(model_id)
        return result

    async def require_providers(
        self, model_ids: list[str], providers: list[str]
    ) -> dict[str, tuple[str, ...]]:
        """Per model, the providers to pin (`all`: every one serving it). A provider that does
        not serve a model is refused, naming the ones that do, before any request is spent."""
        if not providers:
            return {}
        pinned: dict[str, tuple[str, ...]] = {}
        refusals: list[str] = []
        for model_id in model_ids:
            known = [endpoint.slug for endpoint in await self.endpoints(model_id)]
            if ALL_PROVIDERS in providers:
                pinned[model_id] = tuple(dict.fromkeys(known))
                continue
            unknown = [provider for provider in providers if provider not in known]
            if unknown:
                refusals.append(
                    f"{model_id} is not served by {', '.join(unknown)} "
                    f"(its providers: {', '.join(known) or 'none'})"
                )
            pinned[model_id] = tuple(providers)
        if refusals:
            raise UnknownProviderError(
                f"Unknown provider(s): {'; '.join(refusals[:_SHOWN_UNKNOWN_IDS])}. "
                "GET /models/{id}/providers lists a model's providers."
            )
        return pinned

    async def models(self) -> list[UpstreamModel]:
        result: list[UpstreamModel] = await self._cached_fetch()
        return result

    async def require(self, model_ids: list[str]) -> dict[str, TokenPrices | None]:
        """Refuse unknown model ids before any paid request is spent on them; the prices of the
        known ones (None where the upstream gives none)."""
        known = {model.id: model for model in await self.models()}
        unknown = [model_id for model_id in model_ids if model_id not in known]
        if unknown:
            shown = ", ".join(unknown[:_SHOWN_UNKNOWN_IDS])
            if len(unknown) > _SHOWN_UNKNOWN_IDS:
                shown += f" and {len(unknown) - _SHOWN_UNKNOWN_IDS} more"
            raise UnknownModelError(
                f"Unknown model id(s): {shown}. GET /models lists the available ids."
            )
        return {model_id: token_prices(known[model_id]) for model_id in model_ids}

    async def _fetch_once(self) -> list[UpstreamModel]:
        # asyncache does not share an in-flight call: without this, N cold requests make N calls.
        if self._inflight is None:
            task = asyncio.ensure_future(self._client.list_models())
            task.add_done_callback(self._forget_inflight)
            self._inflight = task
        # Shielded: one caller that goes away must not cancel the fetch the others wait for.
        return await asyncio.shield(self._inflight)

    async def _fetch_endpoints_once(self, model_id: str) -> list[UpstreamEndpoint]:
        # Concurrent misses for one model share one upstream call, as for the model list.
        inflight = self._endpoints_inflight.get(model_id)
        if inflight is None:
            inflight = asyncio.ensure_future(self._list_endpoints(model_id))
            inflight.add_done_callback(lambda task: self._forget_endpoints(model_id, task))
            self._endpoints_inflight[model_id] = inflight
        return await asyncio.shield(inflight)

    async def _list_endpoints(self, model_id: str) -> list[UpstreamEndpoint]:
        return (await self._client.list_endpoints(model_id)).endpoints

    def _forget_endpoints(
        self, model_id: str, task: asyncio.Future[list[UpstreamEndpoint]]
    ) -> None:
        self._endpoints_inflight.pop(model_id, None)
        if not task.cancelled():
            task.exception()

    def _forget_inflight(self, task: asyncio.Future[list[UpstreamModel]]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # mark retrieved; every waiter already got it
