"""The chat request, validated by hand: pydantic would dominate the cost of an emulated call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

SORTS: Final = ("price", "throughput", "latency")


class BadRequestError(ValueError):
    """The body is not a chat request; answered with a 400 in OpenRouter's error shape."""


@dataclass(frozen=True, slots=True)
class ProviderPreferences:
    """OpenRouter's `provider` object; names are kept lower-cased for matching."""

    only: tuple[str, ...] | None = None
    order: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    allow_fallbacks: bool = True
    sort: str | None = None


NO_PREFERENCES: Final = ProviderPreferences()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    # Every message's text joined: what the answer is derived from.
    prompt: str
    # Where `[[emulator:...]]` directives are read from.
    last_user_text: str
    # The smaller of `max_tokens` and `max_completion_tokens` when both are sent.
    max_tokens: int | None
    stream: bool
    provider: ProviderPreferences = NO_PREFERENCES


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequestError("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("Request body must be a JSON object")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("'model' is required and must be a non-empty string")

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("'messages' is required and must be a non-empty array")
    texts: list[str] = []
    last_user_text = ""
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequestError("Every message must be an object with a string 'role'")
        text = _message_text(message.get("content"))
        texts.append(text)
        if message["role"] == "user":
            last_user_text = text

    limits = [
        limit
        for limit in (_token_limit(body, "max_tokens"), _token_limit(body, "max_completion_tokens"))
        if limit is not None
    ]
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequestError(f"'{name}' must be a number")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequestError("'stream' must be a boolean")

    return ChatRequest(
        model=model,
        prompt="\n".join(texts),
        last_user_text=last_user_text,
        max_tokens=min(limits) if limits else None,
        stream=stream,
        provider=_provider_preferences(body.get("provider")),
    )


def _token_limit(body: dict[str, object], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequestError(f"'{name}' must be an integer >= 1")
    return value


def _provider_preferences(raw: object) -> ProviderPreferences:
    if raw is None:
        return NO_PREFERENCES
    if not isinstance(raw, dict):
        raise BadRequestError("'provider' must be an object")
    only = _names(raw, "only")
    allow_fallbacks = raw.get("allow_fallbacks", True)
    if not isinstance(allow_fallbacks, bool):
        raise BadRequestError("'provider.allow_fallbacks' must be a boolean")
    sort = raw.get("sort")
    if isinstance(sort, dict):  # the object form: {"by": "price", "partition": ...}
        sort = sort.get("by")
    if sort is not None and sort not in SORTS:
        raise BadRequestError(f"'provider.sort' must be one of {', '.join(SORTS)}")
    return ProviderPreferences(
        only=only,
        order=_names(raw, "order") or (),
        ignore=_names(raw, "ignore") or (),
        allow_fallbacks=allow_fallbacks,
        sort=sort,
    )


def _names(raw: dict[str, object], field: str) -> tuple[str, ...] | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise BadRequestError(f"'provider.{field}' must be an array of provider names")
    return tuple(name.lower() for name in value)


def _message_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        # OpenAI-style content parts: only the text parts carry prompt text.
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    raise BadRequestError("Message 'content' must be a string or an array of content parts")
