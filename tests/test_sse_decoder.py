"""The SSE decoder against the WHATWG event-stream rules, fed in every possible chunking."""

from __future__ import annotations

import pytest

from src.services.base.exceptions import UpstreamInvalidResponseError
from src.services.base.sse import ServerSentEvent, SSEDecoder, encode_event

STREAM = (
    b": OPENROUTER PROCESSING\r\n"
    b"\r\n"
    b'data: {"a": 1}\r\n'
    b"\r\n"
    b"event: usage\n"
    b"data: first line\n"
    b"data:second line\n"
    b"id: 7\n"
    b"retry: 1500\n"
    b"\n"
    b"data\r"
    b"\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ServerSentEvent(data=b'{"a": 1}'),
    ServerSentEvent(data=b"first line\nsecond line", event="usage", id="7", retry=1500),
    ServerSentEvent(data=b"", id="7", retry=1500),
    ServerSentEvent(data=b"[DONE]", id="7", retry=1500),
]


def decode(chunks: list[bytes], max_line: int | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder(max_line)
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_a_whole_stream_decodes_to_its_events() -> None:
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]

    assert decode(chunks) == EXPECTED


def test_a_crlf_split_between_chunks_is_one_line_end() -> None:
    # Were the LF taken as a second line end, the blank line would end the event early.
    events = decode([b"data: a\r", b"\ndata: b\r", b"\n\r\n"])

    assert events == [ServerSentEvent(data=b"a\nb")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    events = decode([b'data: {"choices":\ndata: []}\n\n'])

    assert events == [ServerSentEvent(data=b'{"choices":\n[]}')]


def test_comments_and_lines_without_data_dispatch_nothing() -> None:
    assert decode([b": keep-alive\n\n: again\n\nevent: ping\n\n"]) == []


def test_only_one_leading_space_is_removed_from_a_value() -> None:
    assert decode([b"data:  two spaces\n\n"]) == [ServerSentEvent(data=b" two spaces")]


def test_an_unfinished_event_at_the_end_is_not_dispatched() -> None:
    assert decode([b"data: partial\n"]) == []


def test_a_line_over_the_cap_is_refused_before_it_is_complete() -> None:
    decoder = SSEDecoder(max_line_bytes=64)
    decoder.feed(b"data: " + b"x" * 40)

    with pytest.raises(UpstreamInvalidResponseError, match="MAX_UPSTREAM_LINE_BYTES=64 bytes"):
        decoder.feed(b"x" * 40)


def test_a_complete_line_over_the_cap_is_refused() -> None:
    with pytest.raises(UpstreamInvalidResponseError):
        decode([b"data: " + b"x" * 100 + b"\n\n"], max_line=64)


@pytest.mark.parametrize(
    ("data", "event"), [(b'{"a": 1}', None), (b"two\nlines", "token"), (b"", "done")]
)
def test_an_encoded_event_decodes_to_itself(data: bytes, event: str | None) -> None:
    framed = encode_event(data, event)

    assert framed.endswith(b"\n\n")
    assert SSEDecoder().feed(framed) == [ServerSentEvent(data=data, event=event or "message")]


def test_a_line_exactly_at_the_cap_is_accepted() -> None:
    line = b"data: " + b"x" * 58  # 64 bytes

    assert decode([line + b"\n\n"], max_line=64) == [ServerSentEvent(data=b"x" * 58)]


def test_the_refusal_names_the_setting_in_plain_words() -> None:
    expected = r"^Upstream stream line is longer than MAX_UPSTREAM_LINE_BYTES=64 bytes$"

    with pytest.raises(UpstreamInvalidResponseError, match=expected):
        decode([b"data: " + b"x" * 100 + b"\n\n"], max_line=64)


def test_extra_blank_lines_after_an_event_dispatch_nothing_more() -> None:
    assert decode([b"data: a\n\n\n\r\n"]) == [ServerSentEvent(data=b"a")]


def test_invalid_utf8_in_an_event_name_or_id_is_replaced_not_fatal() -> None:
    events = decode([b"event: \xffusage\nid: 7\xfe\ndata: x\n\n"])

    assert events == [ServerSentEvent(data=b"x", event="\ufffdusage", id="7\ufffd")]


def test_an_id_with_a_nul_is_ignored() -> None:
    events = decode([b"id: 1\n\nid: 2\x003\ndata: x\n\n"])

    assert events == [ServerSentEvent(data=b"x", id="1")]


def test_retry_takes_only_digits_and_other_fields_do_not_set_it() -> None:
    events = decode([b"retry: soon\nbackoff: 300\ndata: x\n\n"])

    assert events == [ServerSentEvent(data=b"x", retry=None)]


def test_only_the_line_end_is_stripped_from_a_value() -> None:
    events = decode([b"data: trailing space \r\n\r\ndata: LaTeX\n\n"])

    assert events == [ServerSentEvent(data=b"trailing space "), ServerSentEvent(data=b"LaTeX")]
