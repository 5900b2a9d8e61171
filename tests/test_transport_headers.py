"""No header the transport writes can carry CR, LF or NUL, and the API key cannot bring them."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from src.config import Settings
from src.services.base.exceptions import UnsafeHeaderError
from src.services.base.transport import WireTransport
from tests.helpers.raw_upstream import OK, RawUpstream, raw_upstream

pytestmark = pytest.mark.anyio

TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
SECRET = "sk-or-v1-secret"


async def answers(
    up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        await up.read_request(reader)
        writer.write(OK)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        (b"authorization", b"Bearer " + SECRET.encode() + b"\r\nx-injected: 1", "'authorization'"),
        (b"x-title", b"a\nb", "'x-title'"),
        (b"x-title", b"a\rb", "'x-title'"),
        (b"x-title", b"a\x00b", "'x-title'"),
        (b"x-bad\r\nx-injected", b"1", "'x-bad\\r\\nx-injected'"),
        (b"x-bad\x00", b"1", "'x-bad\\x00'"),
        (b"x-b\xe9\n", b"1", "'x-b\\\\xe9\\n'"),
    ],
)
async def test_a_header_with_cr_lf_or_nul_is_refused_and_never_written(
    name: bytes, value: bytes, shown: str
) -> None:
    async with raw_upstream(answers) as up:
        wire = WireTransport()
        try:
            sent = httpx.Request("GET", f"{up.url}/", extensions={"timeout": TIMEOUTS})
            sent.headers = httpx.Headers([*sent.headers.raw, (name, value)])
            with pytest.raises(UnsafeHeaderError) as caught:
                await asyncio.wait_for(wire.handle_async_request(sent), 10)
        finally:
            await wire.aclose()

    assert up.requests == []
    assert SECRET not in caught.value.detail
    assert caught.value.detail == (
        f"Refused to send a request whose header {shown} contains CR, LF or NUL"
    )


@pytest.mark.parametrize("method", ["GET\r\nX-Injected: 1", "GET\x00"])
async def test_a_request_line_with_cr_lf_or_nul_is_refused_and_never_written(method: str) -> None:
    async with raw_upstream(answers) as up:
        wire = WireTransport()
        try:
            sent = httpx.Request(method, f"{up.url}/", extensions={"timeout": TIMEOUTS})
            with pytest.raises(UnsafeHeaderError) as caught:
                await asyncio.wait_for(wire.handle_async_request(sent), 10)
        finally:
            await wire.aclose()

    assert up.requests == []
    assert caught.value.detail == (
        "Refused to send a request whose request line contains CR, LF or NUL"
    )


@pytest.mark.parametrize(
    "key",
    [
        SECRET + "\r\nx-injected: 1",
        SECRET + "\n",
        "sk-or v1",
        SECRET + "\x00",
        "\tsk-or-v1",
        SECRET + "\x7f",
    ],
)
def test_an_api_key_with_whitespace_or_control_characters_is_refused_at_startup(key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, openrouter_api_key=key)

    message = str(caught.value)
    assert "OPENROUTER_API_KEY" in message
    assert SECRET not in message
    assert "sk-or" not in message


def test_a_plain_api_key_is_accepted() -> None:
    settings = Settings(_env_file=None, openrouter_api_key=SECRET)

    assert settings.openrouter_api_key.get_secret_value() == SECRET
