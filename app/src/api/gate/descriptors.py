"""How many connections the process's file-descriptor limit can hold: a process out of
descriptors cannot even accept the connection it would answer 503 on, so MAX_CONNECTIONS is
fitted into the limit (raised first, as far as the hard limit allows)."""

from __future__ import annotations

import resource
from dataclasses import dataclass

from src.config import Settings

# Descriptors the process needs besides connections: log files, the listening socket, result
# files, runner pipes, the event loop's own.
RESERVED_DESCRIPTORS = 100
DEFAULT_BACKLOG = 2048


@dataclass(frozen=True)
class DescriptorBudget:
    asked: int  # MAX_CONNECTIONS
    connections: int  # as many, or fewer if the descriptor limit cannot hold them
    descriptor_limit: int

    @property
    def backlog(self) -> int:
        return min(DEFAULT_BACKLOG, self.connections)


def descriptors_needed(connections: int, upstream_connections: int) -> int:
    """Open connections, as many again accepted from the backlog in one burst (before any can
    be turned away), an upstream connection for each, and the rest of the process."""
    backlog = min(DEFAULT_BACKLOG, connections)
    return connections + backlog + min(upstream_connections, connections) + RESERVED_DESCRIPTORS


def raise_descriptor_limit(settings: Settings) -> None:
    """Raise the soft descriptor limit towards the hard one, as far as MAX_CONNECTIONS needs
    (Go's runtime raises it all the way; most distributions start processes at 1024)."""
    wanted = descriptors_needed(settings.max_connections, settings.upstream_max_connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))


def descriptor_budget(settings: Settings) -> DescriptorBudget:
    """MAX_CONNECTIONS, or the most connections the descriptor limit can hold: a process out
    of descriptors cannot even accept the connection it would answer 503 on."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    asked, upstream = settings.max_connections, settings.upstream_max_connections
    if soft == resource.RLIM_INFINITY or descriptors_needed(asked, upstream) <= soft:
        return DescriptorBudget(asked, asked, soft)
    low, high = 1, asked  # the largest count that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if descriptors_needed(middle, upstream) <= soft:
            low = middle
        else:
            high = middle - 1
    return DescriptorBudget(asked, low, soft)
