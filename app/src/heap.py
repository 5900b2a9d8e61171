"""The collector's view of what a process keeps for its whole life."""

from __future__ import annotations

import gc


def settle_startup_heap() -> None:
    """Takes every object alive now (modules, settings, the app) out of the collector's walks.

    A full collection walks every tracked object, and the imported modules alone are tens of
    thousands: a pause of that length lands inside the requests in flight, and a benchmark would
    report it as the upstream's latency. What exists once startup is done lives as long as the
    process, so walking it again finds nothing. Called by the entry points only, never by code a
    test imports, since frozen objects are never collected.
    """
    gc.collect()
    gc.freeze()
