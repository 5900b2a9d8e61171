"""The reference for `make perf`: a minimal aiohttp benchmark client, about 40 lines.

It times each request the usual way, `perf_counter()` around the awaits in its own task, and
prints the p50 latency (and, streamed, the p50 time to first content) as JSON. The service's
/benchmark must report figures at least as close to the upstream's true latency as this does.

    python scripts/reference_client.py URL MODEL PROMPT REQUESTS CONCURRENCY [--stream]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import aiohttp


async def main(
    url: str, model: str, prompt: str, total: int, concurrency: int, stream: bool
) -> None:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
    latencies: list[float] = []
    ttfts: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": "Bearer reference-key"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            async with gate:
                started = time.perf_counter()
                first: float | None = None
                async with session.post(url, json=body, headers=headers) as response:
                    if not stream:
                        await response.read()
                    else:
                        async for chunk in response.content.iter_any():
                            if first is None and b'"content":"' in chunk:
                                first = time.perf_counter()
                latencies.append(time.perf_counter() - started)
                if first is not None:
                    ttfts.append(first - started)

        await asyncio.gather(*(one() for _ in range(total)))
    result: dict[str, float] = {"p50": statistics.median(latencies), "count": len(latencies)}
    if stream:
        result["ttft_p50"] = statistics.median(ttfts)
    print(json.dumps(result))


if __name__ == "__main__":
    url, model, prompt, total, concurrency = sys.argv[1:6]
    asyncio.run(main(url, model, prompt, int(total), int(concurrency), "--stream" in sys.argv))
