"""Swagger's "Try it out" works as shipped: example model ids exist where the service runs
without a key (the built-in emulator)."""

from __future__ import annotations

from typing import Any

from src.config import Settings
from src.main import create_app
from src.services.emulator.catalog import MODELS_BY_ID


def example_models(node: Any) -> list[str]:
    """Every `model` value inside an `examples` list of the OpenAPI schema."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "examples" and isinstance(value, list):
                found += [
                    item["model"] for item in value if isinstance(item, dict) and "model" in item
                ]
            found += example_models(value)
    elif isinstance(node, list):
        for item in node:
            found += example_models(item)
    return found


def test_every_example_model_id_is_served_by_the_emulator() -> None:
    schema = create_app(Settings(_env_file=None)).openapi()

    models = example_models(schema)

    assert models, "the /generate body has an example"
    assert set(models) <= set(MODELS_BY_ID)
