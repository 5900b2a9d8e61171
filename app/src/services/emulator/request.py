"""The chat request, validated by hand: pydantic would dominate the cost of an emulated call."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


class BadRequestError(ValueError):
    """The body is not a chat request; answered with a 400 in OpenRouter's error shape."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    # Every message's text joined: what the answer is derived from.
    prompt: str
    # Where `[[emulator:...]]` directives are read from.
    last_user_text: str
    max_tokens: int | None
    stream: bool


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

    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise BadRequestError("'max_tokens' must be an integer >= 1")
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
        max_tokens=max_tokens,
        stream=stream,
    )


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
