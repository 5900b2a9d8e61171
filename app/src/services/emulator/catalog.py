"""The emulated model list, shaped like OpenRouter's `GET /models` objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import orjson

_SUPPORTED_PARAMETERS: Final = ("max_tokens", "temperature", "top_p")


@dataclass(frozen=True, slots=True)
class EmulatedModel:
    id: str
    name: str
    description: str
    created: int
    context_length: int
    max_completion_tokens: int
    # Decimal strings in USD per token, exactly as OpenRouter sends them.
    prompt_price: str
    completion_price: str
    # Scales the configured latency (TTFT up, tokens per second down) so that models compare
    # differently in a benchmark, as real ones do. Explicit per-request scenarios are exact.
    latency_factor: float = 1.0
    prompt_price_value: float = field(init=False)
    completion_price_value: float = field(init=False)

    def __post_init__(self) -> None:
        # Parsed once so that usage cost costs one multiplication per request.
        object.__setattr__(self, "prompt_price_value", float(self.prompt_price))
        object.__setattr__(self, "completion_price_value", float(self.completion_price))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        # Rounded as OpenRouter reports credits, so that float noise (2.8999999999999998e-06)
        # does not reach answers and files.
        return round(
            prompt_tokens * self.prompt_price_value
            + completion_tokens * self.completion_price_value,
            12,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "canonical_slug": self.id.removesuffix(":free"),
            "hugging_face_id": "",
            "name": self.name,
            "created": self.created,
            "description": self.description,
            "context_length": self.context_length,
            "architecture": {
                "modality": "text->text",
                "input_modalities": ["text"],
                "output_modalities": ["text"],
                "tokenizer": "Other",
                "instruct_type": None,
            },
            "pricing": {
                "prompt": self.prompt_price,
                "completion": self.completion_price,
                "request": "0",
                "image": "0",
                "web_search": "0",
                "internal_reasoning": "0",
            },
            "top_provider": {
                "context_length": self.context_length,
                "max_completion_tokens": self.max_completion_tokens,
                "is_moderated": False,
            },
            "per_request_limits": None,
            "supported_parameters": list(_SUPPORTED_PARAMETERS),
        }


MODELS: Final[tuple[EmulatedModel, ...]] = (
    EmulatedModel(
        id="emulator/small",
        name="Emulator: Small",
        description="Offline stand-in for a small, cheap chat model. Deterministic text.",
        created=1735689600,
        context_length=32768,
        max_completion_tokens=4096,
        prompt_price="0.0000001",
        completion_price="0.0000004",
    ),
    EmulatedModel(
        id="emulator/medium",
        name="Emulator: Medium",
        description="Offline stand-in for a mid-sized chat model. Deterministic text.",
        created=1735689600,
        context_length=65536,
        max_completion_tokens=8192,
        prompt_price="0.0000005",
        completion_price="0.0000015",
        latency_factor=1.6,
    ),
    EmulatedModel(
        id="emulator/large",
        name="Emulator: Large",
        description="Offline stand-in for a large, expensive chat model. Deterministic text.",
        created=1735689600,
        context_length=131072,
        max_completion_tokens=16384,
        prompt_price="0.000003",
        completion_price="0.000015",
        latency_factor=2.5,
    ),
    EmulatedModel(
        id="emulator/tiny:free",
        name="Emulator: Tiny (free)",
        description="Offline stand-in for a free model: `:free` id and zero prices.",
        created=1735689600,
        context_length=8192,
        max_completion_tokens=2048,
        prompt_price="0",
        completion_price="0",
        latency_factor=0.7,
    ),
)

MODELS_BY_ID: Final[dict[str, EmulatedModel]] = {model.id: model for model in MODELS}


def models_body() -> bytes:
    """The `GET /models` body, built once per app instance: the list never changes."""
    return orjson.dumps({"data": [model.to_json() for model in MODELS]})
