"""Text generation: the rules around the upstream call that are ours, not OpenRouter's."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from src.config import Settings
from src.schemas.prompts import GenerateRequest, GenerationResult
from src.services.base.exceptions import LimitExceededError, UnknownModelError
from src.services.base.timing import Timing, now
from src.services.openrouter.client import OpenRouterClient, StreamItem
from src.services.openrouter.generations import fetch_stats, with_stats
from src.services.openrouter.schemas import ChatCall
from src.streams import started

EMULATOR_MODEL_PREFIX = "emulator/"


def ensure_model_reachable(settings: Settings, model: str) -> None:
    """Without a key only the emulator answers, so a real model id would fail obscurely later."""
    if settings.uses_emulator and not model.startswith(EMULATOR_MODEL_PREFIX):
        raise UnknownModelError(
            f"Model '{model}' needs OpenRouter: set OPENROUTER_API_KEY. Without a key the service "
            f"runs against its built-in emulator, which serves only '{EMULATOR_MODEL_PREFIX}...' "
            "models (GET /models lists them)."
        )


def check_max_tokens(settings: Settings, max_tokens: int, name: str = "max_tokens") -> None:
    if max_tokens > settings.max_tokens_limit:
        raise LimitExceededError(
            f"{name}={max_tokens} exceeds MAX_TOKENS_LIMIT={settings.max_tokens_limit}.",
            param=name,
        )


def _allowed_call(settings: Settings, request: GenerateRequest) -> ChatCall:
    """The upstream call `request` asks for, once our own rules let it go."""
    ensure_model_reachable(settings, request.model)
    check_max_tokens(settings, request.max_tokens)
    return ChatCall(request.model, request.prompt, request)


async def generate(
    settings: Settings,
    client: OpenRouterClient,
    request: GenerateRequest,
    timing: Timing,
) -> GenerationResult:
    result = await client.complete(_allowed_call(settings, request), timing)
    if request.generation_stats and result.generation_id is not None:
        deadline = now() + settings.generation_stats_wait_seconds
        result = with_stats(result, await fetch_stats(client, result.generation_id, deadline))
    return result


async def open_generation_stream(
    settings: Settings,
    client: OpenRouterClient,
    request: GenerateRequest,
    timing: Timing,
) -> AsyncGenerator[StreamItem]:
    """Start the upstream stream and wait for its first item (see `started`)."""
    return await started(client.stream(_allowed_call(settings, request), timing))
