"""Where a benchmark's requests come from: the lines of a prompt file, synthetic prompts of a
chosen length, or a dataset of chat requests and conversations. Each becomes a list of
conversations: the history a request starts from, then the user turns sent one after another.

Synthetic text needs no tokenizer: words are drawn from a fixed list with `random.Random`,
seeded per prompt, so the same seed gives the same text in every process. Its length in words
is the target in tokens divided by a tokens-per-word ratio, which warm-up requests measure on
the served model itself (`calibrate`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

import orjson
from pydantic import BaseModel, ConfigDict

from src.schemas.benchmarks import BenchmarkParameters, RequestRecord
from src.schemas.prompts import MAX_TOKENS_BOUND
from src.services.base.exceptions import InvalidInputError

# English prose runs at about this many tokens per word with common tokenizers: the sizing used
# until warm-up requests have measured the served model's own ratio.
DEFAULT_TOKENS_PER_WORD: Final = 1.3
DEFAULT_SYNTHETIC_PROMPTS: Final = 10

# The words synthetic prompts are drawn from: common English nouns. Their order is part of
# what a seed means, so a change to the file changes every synthetic prompt.
_WORDS: Final = tuple(Path(__file__).with_name("prompt_words.txt").read_text("utf-8").split())


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: str
    content: str


class Conversation(BaseModel):
    """The messages a first request starts from, then the user turns in order; each later turn
    carries the earlier turns and the model's real answers to them."""

    model_config = ConfigDict(frozen=True)

    history: tuple[ChatMessage, ...] = ()
    turns: tuple[str, ...]
    max_tokens: int | None = None

    @property
    def label(self) -> str:
        return self.turns[0]


def from_lines(prompts: Iterable[str]) -> list[Conversation]:
    return [Conversation(turns=(prompt,)) for prompt in prompts]


def is_synthetic(parameters: BenchmarkParameters) -> bool:
    return parameters.prompt_tokens is not None


def synthetic_conversations(
    parameters: BenchmarkParameters, tokens_per_word: float = DEFAULT_TOKENS_PER_WORD
) -> list[Conversation]:
    """`prompts` texts of about `prompt_tokens` tokens each (normally spread by the stdev), with
    `output_tokens` as each one's max_tokens; the lengths drawn depend on the seed alone, so a
    calibrated ratio changes how many words make a prompt, never which lengths are asked for."""
    target = parameters.prompt_tokens
    assert target is not None
    count = parameters.prompts or DEFAULT_SYNTHETIC_PROMPTS
    conversations = []
    for index in range(1, count + 1):
        rng = random.Random(f"{parameters.seed}:{index}")
        tokens = _draw(rng, target, parameters.prompt_tokens_stdev)
        output = (
            None
            if parameters.output_tokens is None
            else min(
                _draw(rng, parameters.output_tokens, parameters.output_tokens_stdev),
                MAX_TOKENS_BOUND,
            )
        )
        words = max(1, round(tokens / tokens_per_word))
        text = " ".join(rng.choice(_WORDS) for _ in range(words))
        conversations.append(Conversation(turns=(text,), max_tokens=output))
    return conversations


def output_lengths(parameters: BenchmarkParameters, count: int) -> list[int | None]:
    """Per prompt of a file or dataset: `output_tokens` (spread by its stdev) as max_tokens."""
    if parameters.output_tokens is None:
        return [None] * count
    lengths: list[int | None] = []
    for index in range(1, count + 1):
        rng = random.Random(f"{parameters.seed}:output:{index}")
        drawn = _draw(rng, parameters.output_tokens, parameters.output_tokens_stdev)
        lengths.append(min(drawn, MAX_TOKENS_BOUND))
    return lengths


def _draw(rng: random.Random, mean: int, stdev: float) -> int:
    if stdev <= 0:
        return mean
    return max(1, round(rng.gauss(mean, stdev)))


def calibrate(records: Sequence[RequestRecord]) -> dict[str, float]:
    """Per model, the served model's prompt tokens per word of the prompts it was sent."""
    tokens: dict[str, int] = defaultdict(int)
    words: dict[str, int] = defaultdict(int)
    for record in records:
        if record.ok and record.prompt_tokens > 0:
            tokens[record.model] += record.prompt_tokens
            words[record.model] += len(record.prompt.split())
    return {model: tokens[model] / words[model] for model in tokens if words[model]}


def parse_dataset(data: bytes) -> list[Conversation]:
    """JSONL: `{"messages": [...], "max_tokens"?: n}` or ShareGPT's `{"conversations": [...]}`
    per line; blank lines skipped. A bad line is refused with its line number."""
    if not data.strip():
        raise InvalidInputError("dataset_file is empty: put one JSON object per line.")
    conversations = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            conversations.append(_conversation(orjson.loads(line)))
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            reason = "not valid JSON" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            raise InvalidInputError(f"dataset_file line {number}: {reason}.") from None
    return conversations


def _conversation(item: object) -> Conversation:
    if not isinstance(item, dict):
        raise ValueError("expected a JSON object")
    if "messages" in item:
        return _from_messages(item["messages"], item.get("max_tokens"))
    if "conversations" in item:
        return _from_sharegpt(item["conversations"])
    raise ValueError('expected "messages" or "conversations"')


def _from_messages(messages: object, max_tokens: object) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty array')
    parsed = [_message(message) for message in messages]
    if parsed[-1].role != "user":
        raise ValueError('the last of "messages" must be a user message')
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ValueError('"max_tokens" must be a positive integer')
    return Conversation(
        history=tuple(parsed[:-1]), turns=(parsed[-1].content,), max_tokens=max_tokens
    )


def _message(message: object) -> ChatMessage:
    if not isinstance(message, Mapping):
        raise ValueError("every message must be an object")
    role, content = message.get("role"), message.get("content")
    if role not in ("system", "user", "assistant") or not isinstance(content, str):
        raise ValueError('every message needs a "role" (system, user, assistant) and a "content"')
    return ChatMessage(role=role, content=content)


def _from_sharegpt(turns: object) -> Conversation:
    """Human turns only: each answer sent on is the model's own, never the recorded one."""
    if not isinstance(turns, list):
        raise ValueError('"conversations" must be an array')
    human: list[str] = []
    system: list[ChatMessage] = []
    for turn in turns:
        if not isinstance(turn, Mapping) or not isinstance(turn.get("value"), str):
            raise ValueError('every turn needs a "from" and a string "value"')
        speaker = turn.get("from")
        if speaker == "human":
            human.append(turn["value"])
        elif speaker == "system" and not human:
            system.append(ChatMessage(role="system", content=turn["value"]))
        elif speaker not in ("gpt", "system"):
            raise ValueError('"from" must be "human", "gpt" or "system"')
    if not human:
        raise ValueError("the conversation has no human turn")
    return Conversation(history=tuple(system), turns=tuple(human))
