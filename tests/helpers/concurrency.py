"""Proving a concurrency limit with events instead of sleeps.

Each call enters the barrier and is held until as many calls are in flight as the limit
allows (or as the jobs left allow, at the end of a run). A runner that keeps its limit therefore
reaches it exactly, whatever the machine's speed; one that ran more at once shows a higher peak;
one that ran fewer never fills the barrier and the wait times out.
"""

from __future__ import annotations

import asyncio

HOLD_SECONDS = 20.0


class InFlightBarrier:
    def __init__(self, limit: int, total: int) -> None:
        self.limit = limit
        self.total = total
        self.in_flight = 0
        self.peak = 0
        self.finished = 0
        self._full = asyncio.Event()

    @property
    def _target(self) -> int:
        return min(self.limit, self.total - self.finished)

    def _check(self) -> None:
        if self.in_flight >= self._target:
            self._full.set()

    async def hold(self) -> None:
        """Enter, wait until the in-flight count reaches its target, then leave."""
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        wave = self._full
        self._check()
        try:
            await asyncio.wait_for(wave.wait(), HOLD_SECONDS)
        finally:
            self.in_flight -= 1
            self.finished += 1
            if wave is self._full and wave.is_set():
                self._full = asyncio.Event()  # the next wave waits for its own
            self._check()
