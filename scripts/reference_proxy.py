"""The reference for `make perf`: the simplest FastAPI proxy one would write for /generate.

One route, one aiohttp.ClientSession made at startup, no logging, no retries, no limits.
The service must be at least as fast as this while doing everything it does. Run it with
uvicorn exactly as the service runs (uvloop, httptools, one worker):

    UPSTREAM=http://127.0.0.1:8001/api/v1 uvicorn scripts.reference_proxy:app --port 8010
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from pydantic import BaseModel

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8001/api/v1")
HEADERS = {"Authorization": f"Bearer {os.environ.get('UPSTREAM_KEY', 'reference-key')}"}


class GenerateBody(BaseModel):
    model: str
    prompt: str
    max_tokens: int = 512


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as session:
        app.state.session = session
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/generate")
async def generate(body: GenerateBody, request: Request) -> dict[str, Any]:
    session: aiohttp.ClientSession = request.app.state.session
    payload = {
        "model": body.model,
        "messages": [{"role": "user", "content": body.prompt}],
        "max_tokens": body.max_tokens,
    }
    started = time.perf_counter()
    async with session.post(f"{UPSTREAM}/chat/completions", json=payload, headers=HEADERS) as r:
        data = await r.json()
    return {
        "text": data["choices"][0]["message"]["content"],
        "tokens_used": data["usage"]["total_tokens"],
        "latency_seconds": time.perf_counter() - started,
        "model": data["model"],
    }
