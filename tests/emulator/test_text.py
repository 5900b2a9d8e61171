from src.services.emulator import text
from src.services.emulator.text import (
    MAX_ANSWER_TOKENS,
    MIN_ANSWER_TOKENS,
    answer_tokens,
    count_prompt_tokens,
)


def test_vocabulary_is_128_distinct_words_so_picks_are_uniform() -> None:
    assert len(text._VOCABULARY) == 128
    assert len(set(text._VOCABULARY)) == 128


def test_answer_is_deterministic_and_depends_on_model_and_prompt() -> None:
    first = answer_tokens("emulator/small", "hello there")
    answer_tokens.cache_clear()  # recomputed, not served from the cache

    assert answer_tokens("emulator/small", "hello there") == first
    assert answer_tokens("emulator/small", "hello there!") != first
    assert answer_tokens("emulator/large", "hello there") != first


def test_answer_lengths_stay_in_range_and_vary() -> None:
    lengths = {len(answer_tokens("emulator/small", f"prompt {n}")) for n in range(400)}

    assert min(lengths) >= MIN_ANSWER_TOKENS
    assert max(lengths) <= MAX_ANSWER_TOKENS
    assert min(lengths) < MIN_ANSWER_TOKENS + 10
    assert max(lengths) > MAX_ANSWER_TOKENS - 10


def test_each_token_is_one_word_with_its_following_space() -> None:
    tokens = answer_tokens("emulator/small", "shape of tokens")

    assert tokens[0][0].isupper()
    assert tokens[-1].endswith(".") and not tokens[-1].endswith(" ")
    for token in tokens[:-1]:
        assert token.endswith(" ")
        assert len(token.split()) == 1
    assert len("".join(tokens).split()) == len(tokens)


def test_prompt_tokens_are_words_and_at_least_one() -> None:
    assert count_prompt_tokens("one two  three\nfour") == 4
    assert count_prompt_tokens("") == 1
    assert count_prompt_tokens("   ") == 1
