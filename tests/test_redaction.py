"""Secrets inside base64 text, at every alignment, and secrets that contain one another."""

from __future__ import annotations

import base64

import pytest

from src.redaction import REDACTED, Redactor

SECRET = b"s3cr3t-key-1234"


@pytest.mark.parametrize("before", [b"", b"A", b"AB"])
@pytest.mark.parametrize("after", [b"", b"!", b"!?"])
def test_a_secret_inside_base64_leaves_only_the_characters_its_neighbours_share(
    before: bytes, after: bytes
) -> None:
    encoded = base64.b64encode(before + SECRET + after).decode()
    # A base64 character carries 6 bits: those that mix a neighbour's bits with the secret's
    # stay (they differ with every neighbour), every character decided by the secret alone goes.
    head = -(-len(before) * 8 // 6)
    tail = (len(before) + len(SECRET)) * 8 // 6

    assert Redactor([SECRET.decode()])(f"Basic {encoded}") == (
        f"Basic {encoded[:head]}{REDACTED}{encoded[tail:]}"
    )


def test_a_secret_whose_encoding_is_just_long_enough_is_redacted_encoded() -> None:
    encoded = base64.b64encode(b"abcdef").decode()  # 8 characters, the shortest we look for

    assert Redactor(["abcdef"])(encoded) == REDACTED


def test_a_secret_ending_another_is_redacted_whole_whatever_their_alphabetical_order() -> None:
    # "secret" sorts after "abc-secret": removed first, it would leave "abc-" showing.
    assert Redactor(["secret", "abc-secret"])("key abc-secret") == f"key {REDACTED}"
