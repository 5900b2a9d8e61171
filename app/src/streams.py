"""Async streams put back together: the first item, taken to see whether a stream starts at
all, then the rest of it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TypeVar

T = TypeVar("T")


async def prepend(first: T, rest: AsyncGenerator[T]) -> AsyncGenerator[T]:
    """`first`, then the rest of the stream it was taken from."""
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        # Closing the source at once: an upstream response goes back to the pool and, if the
        # client left early, the upstream stops generating; a run's follower stops reading.
        await rest.aclose()


async def started(items: AsyncGenerator[T]) -> AsyncGenerator[T]:
    """The stream once its first item has come: a failure before it is raised here, while the
    caller can still answer with a plain error and its status instead of a 200 stream that
    fails. A stream that ends at once stays empty."""
    try:
        first = await anext(items)
    except StopAsyncIteration:
        return _empty()
    except BaseException:
        await items.aclose()
        raise
    return prepend(first, items)


async def _empty() -> AsyncGenerator[T]:
    return
    yield  # an async generator that yields nothing
