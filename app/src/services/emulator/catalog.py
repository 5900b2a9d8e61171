"""The emulated models and the providers serving each, shaped like OpenRouter's objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import orjson

SUPPORTED_PARAMETERS: Final = ("max_tokens", "max_completion_tokens", "temperature", "top_p")


def _cost(prompt_price: float, completion_price: float, prompt: int, completion: int) -> float:
    # Rounded as OpenRouter reports credits, so that float noise (2.8999999999999998e-06)
    # does not reach answers and files.
    return round(prompt * prompt_price + completion * completion_price, 12)


@dataclass(frozen=True, slots=True)
class EmulatedProvider:
    """One endpoint of a model: who serves it, how fast and at what price.

    The speed factors scale the model's configured latency exactly: TTFT is multiplied by
    `ttft_factor`, tokens per second by `throughput_factor`.
    """

    name: str
    prompt_price: str
    completion_price: str
    quantization: str
    context_length: int
    ttft_factor: float = 1.0
    throughput_factor: float = 1.0
    prompt_price_value: float = field(init=False)
    completion_price_value: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_price_value", float(self.prompt_price))
        object.__setattr__(self, "completion_price_value", float(self.completion_price))

    @property
    def tag(self) -> str:
        """The provider slug OpenRouter accepts in `only`, `order` and `ignore`."""
        return self.name.lower()

    @property
    def price_key(self) -> float:
        # What `sort: "price"` compares; a typical chat has far more prompt than answer tokens,
        # but OpenRouter does not say how it weighs them, so both count alike.
        return self.prompt_price_value + self.completion_price_value

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return _cost(
            self.prompt_price_value, self.completion_price_value, prompt_tokens, completion_tokens
        )


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
    # Two or three, the first at the model's own price and speed; the rest differ.
    providers: tuple[EmulatedProvider, ...] = ()
    prompt_price_value: float = field(init=False)
    completion_price_value: float = field(init=False)

    def __post_init__(self) -> None:
        # Parsed once so that usage cost costs one multiplication per request.
        object.__setattr__(self, "prompt_price_value", float(self.prompt_price))
        object.__setattr__(self, "completion_price_value", float(self.completion_price))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return _cost(
            self.prompt_price_value, self.completion_price_value, prompt_tokens, completion_tokens
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
            "supported_parameters": list(SUPPORTED_PARAMETERS),
        }


def _providers(
    context_length: int, prompt_price: str, completion_price: str, *others: EmulatedProvider
) -> tuple[EmulatedProvider, ...]:
    # The first provider serves at the model's listed price and speed, so a single-provider
    # view of a model (its `GET /models` entry) stays true.
    first = EmulatedProvider("Alpha", prompt_price, completion_price, "bf16", context_length)
    return (first, *others)


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
        providers=_providers(
            32768,
            "0.0000001",
            "0.0000004",
            EmulatedProvider(
                "Beta",
                "0.00000008",
                "0.0000003",
                "fp8",
                32768,
                ttft_factor=1.5,
                throughput_factor=0.8,
            ),
            EmulatedProvider(
                "Gamma",
                "0.00000015",
                "0.0000006",
                "fp16",
                16384,
                ttft_factor=0.8,
                throughput_factor=1.25,
            ),
        ),
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
        providers=_providers(
            65536,
            "0.0000005",
            "0.0000015",
            EmulatedProvider(
                "Beta",
                "0.0000004",
                "0.0000012",
                "fp8",
                65536,
                ttft_factor=1.5,
                throughput_factor=0.8,
            ),
        ),
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
        providers=_providers(
            131072,
            "0.000003",
            "0.000015",
            EmulatedProvider(
                "Beta",
                "0.0000025",
                "0.000012",
                "fp8",
                131072,
                ttft_factor=1.5,
                throughput_factor=0.8,
            ),
            EmulatedProvider(
                "Gamma",
                "0.000004",
                "0.00002",
                "fp16",
                65536,
                ttft_factor=0.8,
                throughput_factor=1.25,
            ),
        ),
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
        providers=_providers(
            8192,
            "0",
            "0",
            EmulatedProvider(
                "Gamma", "0", "0", "int4", 4096, ttft_factor=0.8, throughput_factor=1.25
            ),
        ),
    ),
)

MODELS_BY_ID: Final[dict[str, EmulatedModel]] = {model.id: model for model in MODELS}


def models_body() -> bytes:
    """The `GET /models` body, built once per app instance: the list never changes."""
    return orjson.dumps({"data": [model.to_json() for model in MODELS]})
