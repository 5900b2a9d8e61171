"""Which proxy an upstream origin goes through, read from the environment as httpx reads it.

HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY (lowercase forms first, as urllib reads them)
give the same answer here as in an `httpx.AsyncClient(trust_env=True)`, so switching the
upstream transport never changes the route: NO_PROXY=* turns every proxy off; a name matches
itself and its subdomains, `.example.com` only the subdomains; IP addresses, `localhost` and
`host:port` entries match exactly; the more specific rule wins (a port, then the longer host,
then the longer scheme). The environment is read once, when the transport is built, and each
origin is looked up once, when it is first used: requests never pay for it.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import re
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, urlsplit

import httpx

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}


def authority_of(host: str, port: int) -> str:
    """`host:port` as a URL or a CONNECT line writes it: an IPv6 address in brackets."""
    return (f"[{host}]" if ":" in host else host) + f":{port}"


@dataclass(frozen=True, slots=True)
class ProxyEndpoint:
    """A proxy server, and the credentials of its URL (percent-decoded, as httpx decodes them)."""

    scheme: str
    host: str
    port: int
    credentials: tuple[bytes, bytes] | None = field(default=None, repr=False)
    # The Proxy-Authorization value for an HTTP proxy, b"Basic ...", made once.
    authorization: bytes | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> ProxyEndpoint:
        proxy = httpx.Proxy(url)  # refuses the schemes httpx refuses
        scheme = proxy.url.scheme
        credentials = proxy.raw_auth
        return cls(
            scheme=scheme,
            host=proxy.url.host,
            port=proxy.url.port or DEFAULT_PORTS[scheme],
            credentials=credentials,
            authorization=credentials and b"Basic " + base64.b64encode(b":".join(credentials)),
        )

    @property
    def label(self) -> str:
        """The proxy as it may be shown: never with its credentials."""
        return f"{self.scheme}://{authority_of(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class _Rule:
    scheme: str  # "" for any
    host: re.Pattern[str] | None  # None for any
    host_length: int
    port: int | None
    proxy: ProxyEndpoint | None  # None: connect directly

    @classmethod
    def parse(cls, pattern: str, proxy: ProxyEndpoint | None) -> _Rule:
        # httpx.URL parses the pattern so that its normalisation (case, default ports) is
        # exactly httpx's own.
        url = httpx.URL(pattern)
        host = "" if url.host == "*" else url.host
        regex = None
        if host.startswith("*."):
            regex = re.compile(rf"^.+\.{re.escape(host[2:])}$")
        elif host.startswith("*"):
            regex = re.compile(rf"^(.+\.)?{re.escape(host[1:])}$")
        elif host:
            regex = re.compile(rf"^{re.escape(host)}$")
        return cls(
            scheme="" if url.scheme == "all" else url.scheme,
            host=regex,
            host_length=len(host),
            port=url.port,
            proxy=proxy,
        )

    @property
    def rank(self) -> tuple[int, int, int]:
        return (0 if self.port is not None else 1, -self.host_length, -len(self.scheme))

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        return (
            (not self.scheme or self.scheme == scheme)
            and (self.host is None or self.host.match(host) is not None)
            and (self.port is None or self.port == port)
        )


class ProxyRules:
    """The proxy decision for every origin, from one reading of the environment."""

    def __init__(self, mounts: Mapping[str, str | None]) -> None:
        rules = [_parse_rule(pattern, url) for pattern, url in mounts.items()]
        # sorted() is stable: equal ranks keep the environment's order, as in httpx.
        self._rules = sorted(rules, key=lambda rule: rule.rank)

    @classmethod
    def from_environment(cls) -> ProxyRules:
        return cls(environment_mounts(urllib.request.getproxies()))

    @classmethod
    def none(cls) -> ProxyRules:
        return cls({})

    def proxy_for(self, scheme: str, host: str, port: int) -> ProxyEndpoint | None:
        """The proxy for requests to scheme://host:port, or None to connect directly."""
        # httpx compares against the URL's port, which it leaves out when it is the default.
        url_port = None if port == DEFAULT_PORTS.get(scheme) else port
        for rule in self._rules:
            if rule.matches(scheme, host, url_port):
                return rule.proxy
        return None

    def proxy_for_url(self, url: httpx.URL) -> ProxyEndpoint | None:
        return self.proxy_for(url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme, 80))


def environment_mounts(variables: Mapping[str, str]) -> dict[str, str | None]:
    """urllib's proxy variables (`getproxies()`) as httpx's URL patterns: a proxy URL for each
    scheme ("http://", "https://", "all://") and None for each NO_PROXY entry."""
    mounts: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        url = variables.get(scheme)
        if url:
            mounts[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for entry in (item.strip() for item in variables.get("no", "").split(",")):
        if entry == "*":
            return {}
        if entry:
            mounts[_bypass_pattern(entry)] = None
    return mounts


def _bypass_pattern(entry: str) -> str:
    if "://" in entry:
        return entry
    address = entry.split("/")[0]  # a CIDR range is kept whole, as httpx does
    if _is_ip(address, ipaddress.IPv4Address):
        return f"all://{entry}"
    if _is_ip(address, ipaddress.IPv6Address):
        return f"all://[{entry}]"
    if entry.lower() == "localhost":
        return f"all://{entry}"
    return f"all://*{entry}"


def _is_ip(text: str, kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _parse_rule(pattern: str, url: str | None) -> _Rule:
    """One rule; a URL httpx would refuse is refused too, named without its credentials."""
    variable = _VARIABLES.get(pattern, "NO_PROXY")
    try:
        return _Rule.parse(pattern, None if url is None else ProxyEndpoint.parse(url))
    except (ValueError, httpx.InvalidURL):
        shown = pattern if url is None else _without_credentials(url)
        raise ValueError(
            f"{variable}: {shown!r} is not a usable proxy setting (a proxy URL is "
            f"http://, https://, socks5:// or socks5h://host:port)"
        ) from None


_VARIABLES: Final = {"http://": "HTTP_PROXY", "https://": "HTTPS_PROXY", "all://": "ALL_PROXY"}


_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _without_credentials(url: str) -> str:
    """`url` with all before its last "@" dropped but its scheme; a password may hold "://"."""
    scheme = _SCHEME.match(url)
    kept = scheme.group() if scheme else ""
    return kept + url[len(kept) :].rpartition("@")[2]


def environment_proxy_secrets() -> list[str]:
    """The passwords of the environment's proxy URLs, for the redactor, even of a URL the
    transport is about to refuse."""
    passwords = set()
    for name, url in urllib.request.getproxies().items():
        if name != "no":
            with contextlib.suppress(ValueError):
                password = urlsplit(url if "://" in url else f"http://{url}").password
                if password:
                    passwords |= {password, unquote(password)}
    return sorted(passwords)
