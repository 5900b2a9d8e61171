"""Calling POST /benchmark the way a user's form upload does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from tests.helpers.openrouter import GPT

PROMPTS = b"Why is the sky blue?\n\nSay hi.\n"


async def post_benchmark(
    client: httpx.AsyncClient,
    prompts: bytes = PROMPTS,
    models: Sequence[str] = (GPT,),
    query: str = "",
    form: Mapping[str, object] | None = None,
    **fields: object,
) -> httpx.Response:
    values = {**(form or {}), **fields}
    data: dict[str, Any] = {"model": list(models), **{k: str(v) for k, v in values.items()}}
    return await client.post(
        "/benchmark" + query,
        files={"prompt_file": ("prompts.txt", prompts, "text/plain")},
        data=data,
    )
