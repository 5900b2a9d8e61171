"""The records behind `GET /generation?id=...`, shaped like OpenRouter's generation stats.

OpenRouter's record of a generation appears a few seconds after the answer ends; until then
the id is a 404. The emulator keeps the newest `MAX_RECORDS` and forgets older ones.
"""

from __future__ import annotations

import datetime
import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final

import orjson

MAX_RECORDS: Final = 100_000
NOT_FOUND_MESSAGE: Final = "Generation not found"


# Not frozen: one is built per answer, and a frozen dataclass's `__init__` costs more.
@dataclass(slots=True)
class GenerationRecord:
    id: str
    model: str
    provider_name: str
    # Unix seconds; rendered as OpenRouter's ISO timestamp only when the record is read.
    created: float
    streamed: bool
    # Seconds, rendered as OpenRouter's milliseconds when read: request arrival to first
    # token (queueing included), and first token to last.
    latency: float
    generation_time: float
    prompt_tokens: int
    completion_tokens: int
    total_cost: float
    finish_reason: str

    def to_json(self) -> bytes:
        created_at = datetime.datetime.fromtimestamp(self.created, datetime.UTC).isoformat()
        return orjson.dumps(
            {
                "data": {
                    "id": self.id,
                    "upstream_id": f"chatcmpl-{self.id.removeprefix('gen-')}",
                    "total_cost": self.total_cost,
                    "cache_discount": None,
                    "upstream_inference_cost": None,
                    "created_at": created_at,
                    "model": self.model,
                    "app_id": None,
                    "streamed": self.streamed,
                    "cancelled": False,
                    "provider_name": self.provider_name,
                    "latency": round(self.latency * 1000),
                    "moderation_latency": None,
                    "generation_time": max(0, round(self.generation_time * 1000)),
                    "finish_reason": self.finish_reason,
                    "native_finish_reason": self.finish_reason,
                    "tokens_prompt": self.prompt_tokens,
                    "tokens_completion": self.completion_tokens,
                    "native_tokens_prompt": self.prompt_tokens,
                    "native_tokens_completion": self.completion_tokens,
                    "native_tokens_reasoning": 0,
                    "native_tokens_cached": 0,
                    "num_media_prompt": None,
                    "num_media_completion": None,
                    "num_search_results": None,
                    "origin": "",
                    "usage": self.total_cost,
                    "is_byok": False,
                }
            }
        )


# A record is kept as a plain tuple of its fields: a tuple of strings and numbers drops out of
# the collector's walk, an object does not, and a full store walked by every full collection
# is a pause that lands on the answers in flight, which the emulator promises to time exactly.
_RecordFields = tuple[str, str, str, float, bool, float, float, int, int, float, str]
_as_fields: Callable[[GenerationRecord], _RecordFields] = operator.attrgetter(
    *(field.name for field in fields(GenerationRecord))
)


class GenerationStore:
    """Finished generations by id, each readable from `delay_seconds` after it ended."""

    def __init__(self, delay_seconds: float, max_records: int = MAX_RECORDS) -> None:
        self._delay = delay_seconds
        self._max = max_records
        # Insertion-ordered: the first key is the oldest record.
        # An OrderedDict forgets its oldest in O(1); a dict's first key is found by skipping
        # every slot deleted before it, so a full store would slow each answer down.
        self._records: OrderedDict[str, tuple[float, _RecordFields]] = OrderedDict()

    def add(self, record: GenerationRecord, ended: float) -> None:
        """`ended` is on the event loop's clock, as `get`'s `now` must be."""
        self._records[record.id] = (ended + self._delay, _as_fields(record))
        if len(self._records) > self._max:
            self._records.popitem(last=False)

    def get(self, generation_id: str, now: float) -> GenerationRecord | None:
        entry = self._records.get(generation_id)
        if entry is None or now < entry[0]:
            return None
        return GenerationRecord(*entry[1])
