"""Chat completions relayed in OpenAI's wire format: the caller's request goes upstream as it
was sent, and the upstream's answer comes back as it was sent.

What is ours: the emulator-only rule for model ids, and telling an unknown model (404, as
OpenAI answers it) from any other refused request (OpenRouter answers both with a 400).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from src.config import Settings
from src.schemas.openai import ChatCompletionRequest
from src.services.base.exceptions import (
    LimitExceededError,
    ServiceError,
    UnknownModelError,
    UpstreamStatusError,
)
from src.services.base.timing import Timing
from src.services.generation.service import check_max_tokens, ensure_model_reachable
from src.services.openrouter.catalog import ModelCatalog
from src.services.openrouter.client import OpenRouterClient
from src.streams import started


@dataclass(frozen=True, slots=True)
class Relay:
    """One caller's chat request `raw` (parsed as `request`), to relay upstream as it was sent."""

    settings: Settings
    client: OpenRouterClient
    catalog: ModelCatalog
    request: ChatCompletionRequest
    raw: bytes
    # Filled in by the client: the route reads it for its log line and metrics.
    timing: Timing = field(default_factory=Timing)

    async def completion(self) -> bytes:
        """The upstream's JSON answer."""
        _check(self.settings, self.request)
        async with self._naming_unknown_model():
            return await self.client.relay(self.raw, self.timing)

    async def open_stream(self) -> AsyncGenerator[bytes]:
        """The upstream's events, once the first has come (see `started`)."""
        _check(self.settings, self.request)
        async with self._naming_unknown_model():
            return await started(self.client.relay_stream(self.raw, self.timing))

    @asynccontextmanager
    async def _naming_unknown_model(self) -> AsyncIterator[None]:
        try:
            yield
        except UpstreamStatusError as exc:
            await _refuse_unknown_model(exc, self.catalog, self.request.model)
            raise


def _check(settings: Settings, request: ChatCompletionRequest) -> None:
    ensure_model_reachable(settings, request.model)
    for name, limit in request.token_limits.items():
        check_max_tokens(settings, limit, name)
    if request.n is not None and request.n > settings.max_choices:
        raise LimitExceededError(
            f"n={request.n} exceeds MAX_CHOICES={settings.max_choices}.", param="n"
        )


async def _refuse_unknown_model(
    error: UpstreamStatusError, catalog: ModelCatalog, model: str
) -> None:
    """A refused request for a model the upstream does not list is an UnknownModelError.

    Looked up only once the upstream has refused, so a request that succeeds never waits for
    the model list. Without the list the upstream's own error stands.
    """
    if error.status_code != 400:
        return
    try:
        await catalog.require([model])
    except UnknownModelError as unknown:
        raise unknown from error
    except ServiceError:
        return
