"""The emulated models and the providers serving each, shaped like OpenRouter's objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import orjson

SUPPORTED_PARAMETERS: Final = ("max_tokens", "max_completion_tokens", "temperature", "top_p")


@dataclass(frozen=True, slots=True)
class _Priced:
    # Decimal strings in USD per token, exactly as OpenRouter sends them.
    prompt_price: str
    completion_price: str
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


@dataclass(frozen=True, slots=True)
class EmulatedProvider(_Priced):
    """One endpoint of a model: who serves it, how fast and at what price.

    The speed factors scale the model's configured latency exactly: TTFT is multiplied by
    `ttft_factor`, tokens per second by `throughput_factor`.
    """

    name: str
    quantization: str
    context_length: int
    ttft_factor: float = 1.0
    throughput_factor: float = 1.0

    @property
    def tag(self) -> str:
        """The provider slug OpenRouter accepts in `only`, `order` and `ignore`."""
        return self.name.lower()

    @property
    def price_key(self) -> float:
        # What `sort: "price"` compares; a typical chat has far more prompt than answer tokens,
        # but OpenRouter does not say how it weighs them, so both count alike.
        return self.prompt_price_value + self.completion_price_value


@dataclass(frozen=True, slots=True)
class EmulatedModel(_Priced):
    id: str
    name: str
    description: str
    created: int
    context_length: int
    max_completion_tokens: int
    # Scales the configured latency (TTFT up, tokens per second down) so that models compare
    # differently in a benchmark, as real ones do. Explicit per-request scenarios are exact.
    latency_factor: float = 1.0
    # Two or three, the first at the model's own price and speed; the rest differ.
    providers: tuple[EmulatedProvider, ...] = ()

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


# When the emulated models came out (Unix seconds), for `created`.
_CREATED: Final = 1735689600


# Relative to the model's configured speed: (TTFT factor, throughput factor). Alpha serves
# every model at its own speed, Beta slower and Gamma faster.
_SPEED_FACTORS: Final[dict[str, tuple[float, float]]] = {
    "Alpha": (1.0, 1.0),
    "Beta": (1.5, 0.8),
    "Gamma": (0.8, 1.25),
}


def _provider(
    name: str, quantization: str, context_length: int, prices: tuple[str, str]
) -> EmulatedProvider:
    ttft_factor, throughput_factor = _SPEED_FACTORS[name]
    return EmulatedProvider(
        prompt_price=prices[0],
        completion_price=prices[1],
        name=name,
        quantization=quantization,
        context_length=context_length,
        ttft_factor=ttft_factor,
        throughput_factor=throughput_factor,
    )


_DESCRIPTIONS: Final[dict[str, str]] = {
    "emulator/small": "Offline stand-in for a small, cheap chat model. Deterministic text.",
    "emulator/medium": "Offline stand-in for a mid-sized chat model. Deterministic text.",
    "emulator/large": "Offline stand-in for a large, expensive chat model. Deterministic text.",
    "emulator/tiny:free": "Offline stand-in for a free model: `:free` id and zero prices.",
}
# The providers after the first, which differ from the model in price, speed or context.
_OTHER_PROVIDERS: Final[dict[str, tuple[EmulatedProvider, ...]]] = {
    "emulator/small": (
        _provider("Beta", "fp8", 32768, ("0.00000008", "0.0000003")),
        _provider("Gamma", "fp16", 16384, ("0.00000015", "0.0000006")),
    ),
    "emulator/medium": (_provider("Beta", "fp8", 65536, ("0.0000004", "0.0000012")),),
    "emulator/large": (
        _provider("Beta", "fp8", 131072, ("0.0000025", "0.000012")),
        _provider("Gamma", "fp16", 65536, ("0.000004", "0.00002")),
    ),
    "emulator/tiny:free": (_provider("Gamma", "int4", 4096, ("0", "0")),),
}


def _model(
    model_id: str,
    name: str,
    context_length: int,
    max_completion_tokens: int,
    prompt_price: str,
    completion_price: str,
    latency_factor: float,
) -> EmulatedModel:
    # The first provider serves at the model's listed price and speed, so a single-provider
    # view of a model (its `GET /models` entry) stays true.
    first = _provider("Alpha", "bf16", context_length, (prompt_price, completion_price))
    return EmulatedModel(
        id=model_id,
        name=name,
        description=_DESCRIPTIONS[model_id],
        created=_CREATED,
        context_length=context_length,
        max_completion_tokens=max_completion_tokens,
        prompt_price=prompt_price,
        completion_price=completion_price,
        latency_factor=latency_factor,
        providers=(first, *_OTHER_PROVIDERS[model_id]),
    )


# id, name, context length, max completion tokens, prompt and completion price, latency factor
MODELS: Final[tuple[EmulatedModel, ...]] = tuple(
    _model(*row)
    for row in (
        ("emulator/small", "Emulator: Small", 32768, 4096, "0.0000001", "0.0000004", 1.0),
        ("emulator/medium", "Emulator: Medium", 65536, 8192, "0.0000005", "0.0000015", 1.6),
        ("emulator/large", "Emulator: Large", 131072, 16384, "0.000003", "0.000015", 2.5),
        ("emulator/tiny:free", "Emulator: Tiny (free)", 8192, 2048, "0", "0", 0.7),
    )
)

MODELS_BY_ID: Final[dict[str, EmulatedModel]] = {model.id: model for model in MODELS}


def models_body() -> bytes:
    """The `GET /models` body, built once per app instance: the list never changes."""
    return orjson.dumps({"data": [model.to_json() for model in MODELS]})
