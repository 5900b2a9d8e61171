"""Chat completions relayed in OpenAI's wire format: the caller's request goes upstream as it
was sent, and the upstream's answer comes back as it was sent.

What is ours: the emulator-only rule for model ids, and telling an unknown model (404, as
OpenAI answers it) from any other refused request (OpenRouter answers both with a 400).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

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
from src.streams import prepend


def _check(settings: Settings, request: ChatCompletionRequest) -> None:
    ensure_model_reachable(settings, request.model)
    for name, limit in request.token_limits.items():
        check_max_tokens(settings, limit, name)
    if request.n is not None and request.n > settings.max_choices:
        raise LimitExceededError(
            f"n={request.n} exceeds MAX_CHOICES={settings.max_choices}.", param="n"
        )


async def relay_completion(
    settings: Settings,
    client: OpenRouterClient,
    catalog: ModelCatalog,
    request: ChatCompletionRequest,
    raw: bytes,
    timing: Timing | None = None,
) -> bytes:
    """The upstream's JSON answer to the caller's chat request `raw` (parsed as `request`)."""
    _check(settings, request)
    model = request.model
    try:
        return await client.relay(raw, timing or Timing())
    except UpstreamStatusError as exc:
        await _refuse_unknown_model(exc, catalog, model)
        raise


async def open_relay_stream(
    settings: Settings,
    client: OpenRouterClient,
    catalog: ModelCatalog,
    request: ChatCompletionRequest,
    raw: bytes,
    timing: Timing | None = None,
) -> AsyncGenerator[bytes]:
    """Start relaying the caller's streamed chat request and wait for its first events.

    Errors before them surface here, so the caller can still answer with a JSON error and
    the right status instead of a 200 stream that fails.
    """
    _check(settings, request)
    model = request.model
    chunks = client.relay_stream(raw, timing or Timing())
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        return _empty()  # only [DONE]: a stream with nothing in it
    except UpstreamStatusError as exc:
        await chunks.aclose()
        await _refuse_unknown_model(exc, catalog, model)
        raise
    except BaseException:
        await chunks.aclose()
        raise
    return prepend(first, chunks)


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


async def _empty() -> AsyncGenerator[bytes]:
    return
    yield  # an async generator that yields nothing
