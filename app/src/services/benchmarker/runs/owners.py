"""Whose a benchmark run is: with inbound keys, the key that started it.

A run records an owner tag, never the key: scrypt (a deliberately slow, memory-hard hash) of
the whole key. Reading the state files gives no key back, and guessing even a short key costs
that hash per guess. The salt is fixed so that every worker, every replica sharing
BENCHMARKS_DIR and every later start tag one key alike; a key is hashed once per process.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

_SALT = b"llm-gateway/benchmark-owner/v1"
_SCRYPT_COST = 2**14
_SCRYPT_BLOCK_SIZE = 8
_TAG_BYTES = 16


@lru_cache(maxsize=64)
def owner_tag(key: str) -> str:
    digest = hashlib.scrypt(
        key.encode(), salt=_SALT, n=_SCRYPT_COST, r=_SCRYPT_BLOCK_SIZE, p=1, dklen=_TAG_BYTES
    )
    return digest.hex()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks about runs: the owner tag the runs it starts get, and whether it sees (and may
    cancel) every run or only its own."""

    owner: str | None
    sees_all: bool = False

    def may_see(self, owner: str | None) -> bool:
        if self.sees_all:
            return True
        if self.owner is None or owner is None:
            return False
        # Bytes: a record edited by hand may hold any text, and str comparison wants ASCII.
        return hmac.compare_digest(owner.encode(), self.owner.encode())


# Without inbound keys runs have no owner and every caller sees every run.
EVERYONE = Caller(owner=None, sees_all=True)
# With inbound keys, a request that reached a route without passing the key check.
NOBODY = Caller(owner=None, sees_all=False)
