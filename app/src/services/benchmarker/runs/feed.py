"""One reader of a run's state per process, whatever the number of its followers.

Each follower of a run's events used to read the run's files on its own, several times a
second: their cost grew with their number. Here the first follower of a run starts a reader
that looks at it every poll (or at each tick of `ticks`: a store that announces changes) and
hands each look to every follower; the reader stops at the run's last look (its end) or when
the last follower leaves.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class Feed(Generic[T]):
    """The latest look at one run, numbered, and a way to wait for the next one."""

    read: Callable[[], Awaitable[T]]
    is_last: Callable[[T], bool]
    poll: float
    ticks: Callable[[], AsyncGenerator[None]] | None = None
    version: int = field(default=0, init=False)
    followers: int = field(default=0, init=False)
    ended: bool = field(default=False, init=False)
    _loop: asyncio.AbstractEventLoop = field(init=False)
    _latest: T | BaseException | None = field(default=None, init=False)
    _next: asyncio.Future[None] = field(init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._next = self._loop.create_future()

    def join(self) -> None:
        self.followers += 1
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    def leave(self) -> int:
        self.followers -= 1
        if not self.followers and self._task is not None:
            self._task.cancel()
            self.ended = True
        return self.followers

    async def next(self, seen: int) -> tuple[int, T]:
        """The first look numbered after `seen`: at once if there is one, else the next."""
        while self.version == seen:
            # Shielded: a follower that leaves must not cancel what the others wait for.
            await asyncio.shield(self._next)
        latest = self._latest
        if isinstance(latest, BaseException):
            raise latest
        assert latest is not None
        return self.version, latest

    async def _every_poll(self) -> AsyncGenerator[None]:
        while True:
            await asyncio.sleep(self.poll)
            yield

    async def _run(self) -> None:
        ticks = self._every_poll() if self.ticks is None else self.ticks()
        try:
            async with aclosing(ticks):
                async for _ in ticks:
                    try:
                        view = await self.read()
                    except Exception as exc:  # every follower fails as a lone reader would have
                        self._publish(exc)
                        return
                    self._publish(view)
                    if self.is_last(view):
                        return
        finally:
            self.ended = True

    def _publish(self, value: T | BaseException) -> None:
        self._latest = value
        self.version += 1
        waiting, self._next = self._next, self._loop.create_future()
        waiting.set_result(None)


# Per event loop: the app's tests run one loop after another in one process.
_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Feed[Any]]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def follow(
    key: Hashable,
    read: Callable[[], Awaitable[T]],
    is_last: Callable[[T], bool],
    poll: float,
    ticks: Callable[[], AsyncGenerator[None]] | None = None,
) -> AsyncIterator[Feed[T]]:
    """The feed of `key` (started by its first follower), for as long as the block runs."""
    feeds = _feeds.setdefault(asyncio.get_running_loop(), {})
    feed = feeds.get(key)
    if feed is None or feed.ended:
        feed = Feed(read, is_last, poll, ticks)
        feeds[key] = feed
    feed.join()
    try:
        yield feed
    finally:
        if not feed.leave() and feeds.get(key) is feed:
            del feeds[key]
