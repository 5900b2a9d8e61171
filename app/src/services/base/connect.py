"""Opening one upstream connection: resolve the name, race its addresses, tunnel through a
proxy when one applies, then TLS.

The race is RFC 8305's happy eyeballs: the addresses alternate between families, each attempt
starts HAPPY_EYEBALLS_DELAY after the previous one (at once when that one failed), the first
to connect wins and the others are closed. An address that silently drops connections then
costs a quarter of a second, not the whole connect timeout. asyncio's `happy_eyeballs_delay`
does this, but uvloop, the loop under uvicorn, has no such parameter.

A proxy is spoken to on the raw socket before the socket is handed to the loop's transport:
`CONNECT host:port` for an https upstream (TLS then runs inside the tunnel, checked against
the upstream's name); an http upstream's requests go to the proxy itself, in absolute form.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from src.services.base.exceptions import UpstreamCertificateError, UpstreamConnectionError
from src.services.base.proxies import ProxyEndpoint, authority_of

HAPPY_EYEBALLS_DELAY: Final = 0.25
SOCKS_SCHEMES: Final = frozenset({"socks5", "socks5h"})
# A proxy's answer to CONNECT is a status line and a few headers.
_MAX_PROXY_HEAD_BYTES: Final = 64 * 1024

Address = tuple[int, tuple[Any, ...]]  # (address family, socket address)
Resolver = Callable[[str, int], Awaitable[Sequence[Address]]]
P = TypeVar("P", bound=asyncio.BaseProtocol)


@dataclass(frozen=True, slots=True)
class Route:
    """How one origin is reached: directly, or through a proxy."""

    proxy: ProxyEndpoint | None = None
    # An http origin through a proxy: requests go to the proxy with an absolute-form target.
    forward: bool = False


DIRECT: Final = Route()


def route_through(proxy: ProxyEndpoint | None, scheme: str) -> Route:
    if proxy is None:
        return DIRECT
    # A SOCKS proxy only carries bytes: every request goes through a tunnel in origin form.
    return Route(proxy=proxy, forward=scheme == "http" and proxy.scheme not in SOCKS_SCHEMES)


async def system_resolver(host: str, port: int) -> list[Address]:
    """The name's addresses, from getaddrinfo (which the loop runs off its thread)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, address) for family, _, _, _, address in infos]


async def open_connection(
    factory: Callable[[], P],
    *,
    host: str,
    port: int,
    route: Route,
    tls: ssl.SSLContext | None,
    resolver: Resolver = system_resolver,
) -> P:
    """A connected protocol for host:port (TLS when `tls` is given), by `route`."""
    loop = asyncio.get_running_loop()
    proxy = route.proxy
    if proxy is None:
        try:
            sock = await open_socket(host, port, resolver)
        except socket.gaierror as exc:
            raise UpstreamConnectionError(
                f"Upstream connection failed: cannot resolve {host} ({exc.strerror or exc})",
                before_answer=True,
                written=False,
            ) from exc
    else:
        sock = await _open_proxy_socket(proxy, resolver)
        if not route.forward:
            tunnel = _socks5_tunnel if proxy.scheme in SOCKS_SCHEMES else _connect_tunnel
            try:
                await tunnel(loop, sock, host, port, proxy)
            except BaseException:
                sock.close()
                raise
    try:
        # The transport owns the socket from here on, and closes it on failure.
        _, protocol = await loop.create_connection(
            factory, sock=sock, ssl=tls, server_hostname=host if tls else None
        )
    except ssl.SSLCertVerificationError as exc:
        raise certificate_error(exc, host, port) from exc
    return protocol


def certificate_error(
    exc: ssl.SSLCertVerificationError, host: str, port: int
) -> UpstreamCertificateError:
    problem = (exc.verify_message or exc.reason or str(exc)).rstrip(".")
    return UpstreamCertificateError(
        f"Upstream certificate check failed for {host}:{port}: certificate verify failed: "
        f"{problem}. If the upstream (or a proxy that inspects TLS) uses a private CA, set "
        f"SSL_CERT_FILE (a PEM bundle) or SSL_CERT_DIR to certificates that include it",
        written=False,
    )


async def open_socket(host: str, port: int, resolver: Resolver) -> socket.socket:
    """A connected non-blocking socket to one of host's addresses (happy eyeballs)."""
    addresses = await _resolve(host, port, resolver)
    if len(addresses) == 1:  # nothing to race (an IP address, or a single record)
        return await _attempt(*addresses[0])
    return await _race(_interleave(addresses))


async def _resolve(host: str, port: int, resolver: Resolver) -> Sequence[Address]:
    literal = _ip_literal(host, port)
    if literal is not None:
        return [literal]
    addresses = await resolver(host, port)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    return addresses


def _ip_literal(host: str, port: int) -> Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return (socket.AF_INET6, (host, port, 0, 0))
    return (socket.AF_INET, (host, port))


def _interleave(addresses: Sequence[Address]) -> list[Address]:
    """Families alternate, starting with the resolver's first choice (RFC 8305, 4)."""
    first = addresses[0][0]
    preferred = [a for a in addresses if a[0] == first]
    others = [a for a in addresses if a[0] != first]
    mixed: list[Address] = []
    for index in range(max(len(preferred), len(others))):
        mixed += preferred[index : index + 1] + others[index : index + 1]
    return mixed


async def _race(addresses: Sequence[Address]) -> socket.socket:
    attempts: list[asyncio.Task[socket.socket]] = []
    errors: list[OSError] = []
    winner: socket.socket | None = None
    try:
        for family, address in addresses:
            attempts.append(asyncio.ensure_future(_attempt(family, address)))
            winner = await _settle(attempts, errors, HAPPY_EYEBALLS_DELAY)
            if winner is not None:
                return winner
        while winner is None and any(not attempt.done() for attempt in attempts):
            winner = await _settle(attempts, errors, None)
        if winner is not None:
            return winner
        raise errors[0] if errors else OSError("no address could be connected to")
    finally:
        for attempt in attempts:
            _discard(attempt, winner)


async def _settle(
    attempts: list[asyncio.Task[socket.socket]], errors: list[OSError], delay: float | None
) -> socket.socket | None:
    """Waits up to `delay` for an attempt to finish; a connected socket, or None (and the
    failures are noted) to start the next one."""
    pending = [attempt for attempt in attempts if not attempt.done()]
    if pending:
        await asyncio.wait(pending, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    for attempt in attempts:
        if attempt.done() and not attempt.cancelled():
            error = attempt.exception()
            if error is None:
                return attempt.result()
            if isinstance(error, OSError) and error not in errors:
                errors.append(error)
            elif not isinstance(error, OSError):
                raise error
    return None


def _discard(attempt: asyncio.Task[socket.socket], winner: socket.socket | None) -> None:
    """Closes a losing attempt's socket, now or when its cancellation lands."""

    def close(task: asyncio.Task[socket.socket]) -> None:
        if not task.cancelled() and task.exception() is None and task.result() is not winner:
            task.result().close()

    if attempt.done():
        close(attempt)
    else:
        attempt.cancel()
        attempt.add_done_callback(close)


async def _attempt(family: int, address: tuple[Any, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Requests are written whole: Nagle's algorithm would only hold them back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _open_proxy_socket(proxy: ProxyEndpoint, resolver: Resolver) -> socket.socket:
    if proxy.scheme != "http" and proxy.scheme not in SOCKS_SCHEMES:
        raise UpstreamConnectionError(
            f"Proxy {proxy.label} is not supported: the upstream transport speaks to http:// "
            f"and socks5:// proxies only (check HTTPS_PROXY, HTTP_PROXY, ALL_PROXY)",
            written=False,
        )
    try:
        return await open_socket(proxy.host, proxy.port, resolver)
    except OSError as exc:  # its name unknown included (gaierror)
        raise UpstreamConnectionError(
            f"Upstream connection failed: cannot reach proxy {proxy.label} "
            f"({type(exc).__name__}: {exc.strerror or exc})",
            before_answer=True,
            written=False,
        ) from exc


async def _connect_tunnel(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, host: str, port: int, proxy: ProxyEndpoint
) -> None:
    """CONNECT host:port through the proxy on `sock`; raises unless the proxy agrees."""
    authority = authority_of(host, port)
    head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii")
    if proxy.authorization is not None:
        head += b"Proxy-Authorization: " + proxy.authorization + b"\r\n"
    await loop.sock_sendall(sock, head + b"\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise UpstreamConnectionError(
                f"Upstream connection failed: proxy {proxy.label} closed the connection "
                f"before answering CONNECT {authority}",
                before_answer=True,
                written=False,
            )
        answer += data
        if len(answer) > _MAX_PROXY_HEAD_BYTES:
            raise UpstreamConnectionError(
                f"Upstream connection failed: proxy {proxy.label} sent an over-long answer "
                f"to CONNECT {authority}",
                written=False,
            )
    status, reason = _status_line(answer)
    if not 200 <= status < 300:
        raise _refused(proxy, authority, status, reason)


def _status_line(answer: bytes) -> tuple[int, str]:
    line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    with contextlib.suppress(IndexError, ValueError):
        if parts[0].startswith("HTTP/"):
            return int(parts[1]), parts[2] if len(parts) > 2 else ""
    return 0, line[:100]


def _refused(
    proxy: ProxyEndpoint, authority: str, status: int, reason: str
) -> UpstreamConnectionError:
    if status == 407:
        why = (
            "proxy authentication failed: check the user and password in the proxy URL"
            if proxy.authorization
            else "the proxy asks for credentials: put them in the proxy URL (http://user:password@host:port)"
        )
    elif status == 0:
        why = f"not an HTTP answer: {reason!r}"
    else:
        why = f"{status} {reason}".strip()
    return UpstreamConnectionError(
        f"Upstream connection failed: proxy {proxy.label} refused CONNECT {authority}: "
        f"{status or 'invalid answer'} ({why})",
        # A proxy's own failure (5xx) may be transient; a refusal is not.
        before_answer=status >= 500,
        written=False,
    )


# SOCKS5 (RFC 1928), with username and password authentication (RFC 1929). The upstream's name
# is sent as it is, so the proxy resolves it, for socks5:// as for socks5h:// (as httpx does).
_SOCKS_REPLIES: Final = {
    1: "general failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


async def _socks5_tunnel(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, host: str, port: int, proxy: ProxyEndpoint
) -> None:
    authority = authority_of(host, port)

    def refused(why: str, *, transient: bool = False) -> UpstreamConnectionError:
        return UpstreamConnectionError(
            f"Upstream connection failed: SOCKS proxy {proxy.label} refused {authority}: {why}",
            before_answer=transient,
            written=False,
        )

    methods = b"\x00\x02" if proxy.credentials else b"\x00"
    await loop.sock_sendall(sock, b"\x05" + bytes([len(methods)]) + methods)
    _, method = await _receive(loop, sock, 2, proxy)
    if method == 0x02 and proxy.credentials:
        user, password = proxy.credentials
        await loop.sock_sendall(
            sock, b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password
        )
        if (await _receive(loop, sock, 2, proxy))[1] != 0:
            raise refused("proxy authentication failed: check the user and password in its URL")
    elif method != 0x00:
        raise refused("it asks for an authentication method we do not offer")
    await loop.sock_sendall(sock, b"\x05\x01\x00" + _socks_address(host) + port.to_bytes(2, "big"))
    _, reply, _, kind = await _receive(loop, sock, 4, proxy)
    if reply != 0:
        raise refused(_SOCKS_REPLIES.get(reply, f"reply {reply}"), transient=reply in (1, 3, 4, 6))
    bound = {1: 4, 4: 16}.get(kind)
    if bound is None:  # a name: its length comes first
        bound = (await _receive(loop, sock, 1, proxy))[0]
    await _receive(loop, sock, bound + 2, proxy)


def _socks_address(host: str) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        return b"\x03" + bytes([len(name)]) + name
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


async def _receive(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int, proxy: ProxyEndpoint
) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise UpstreamConnectionError(
                f"Upstream connection failed: proxy {proxy.label} closed the connection while "
                f"opening the tunnel",
                before_answer=True,
                written=False,
            )
        data += chunk
    return data
