"""Deterministic answers: the same (model, prompt) always yields the same tokens.

A token is one word and the space after it; the last token ends the answer with a full
stop instead. Words come from a fixed vocabulary, picked by SHAKE-256 bytes of the model id
and the prompt, so answers are stable across processes and Python versions (unlike `hash()`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Final

# 128 words: a power of two, so that `byte % 128` picks every word with the same probability.
_WORDS: Final = """
    the a of and to in is that for on with as by this it from at be are was an or which
    model answer system request token latency stream proxy server client network signal
    value result number window context prompt output input vector layer weight gradient
    measure benchmark runtime thread queue buffer socket packet router gateway upstream
    cache memory storage record table index column schema field message event channel
    quick quiet bright steady simple careful gentle rapid silent calm clear distant
    river mountain forest ocean garden meadow valley harbor island desert canyon glacier
    north south east west early later always often rarely never perhaps indeed still
    build send read write parse count check carry hold move turn open close start finish
    light shadow morning evening winter summer
"""
_VOCABULARY: Final = tuple(_WORDS.split())

MIN_ANSWER_TOKENS: Final = 20
MAX_ANSWER_TOKENS: Final = 80
_LENGTH_SPAN: Final = MAX_ANSWER_TOKENS - MIN_ANSWER_TOKENS + 1
# About one word in eight closes a sentence, which reads like prose rather than a word list.
_SENTENCE_END_ONE_IN: Final = 8


@lru_cache(maxsize=4096)
def answer_tokens(model: str, prompt: str) -> tuple[str, ...]:
    """The full natural answer; cached because benchmarks repeat the same prompts."""
    digest = hashlib.shake_256(f"{model}\x00{prompt}".encode()).digest(1 + 2 * MAX_ANSWER_TOKENS)
    count = MIN_ANSWER_TOKENS + digest[0] % _LENGTH_SPAN
    tokens: list[str] = []
    capitalize = True
    for index in range(count):
        word = _VOCABULARY[digest[1 + index] % len(_VOCABULARY)]
        if capitalize:
            word = word.capitalize()
        if index == count - 1:
            tokens.append(word + ".")
            break
        capitalize = digest[1 + MAX_ANSWER_TOKENS + index] % _SENTENCE_END_ONE_IN == 0
        tokens.append(word + (". " if capitalize else " "))
    return tuple(tokens)


def count_prompt_tokens(text: str) -> int:
    """Whitespace-separated words, at least 1: honest enough for usage accounting."""
    return max(1, len(text.split()))
