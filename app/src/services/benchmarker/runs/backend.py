"""Which run store (store.py) a process uses: every worker, replica and runner process of one
deployment must name the same one, or they would not see each other's runs."""

from __future__ import annotations

from src.config import Settings
from src.services.benchmarker.runs.file_store import FileRunStore
from src.services.benchmarker.runs.store import RunStore


def run_store(settings: Settings) -> RunStore:
    """The files in BENCHMARKS_DIR, or Redis with JOBS_BACKEND=redis."""
    if settings.jobs_backend == "redis":
        # Imported here: the files backend needs nothing of Redis.
        from src.services.benchmarker.runs.redis_store import RedisRunStore

        return RedisRunStore.of(settings)
    return FileRunStore(settings.benchmarks_dir)
