"""The proxy rules on their own: how a proxy is shown, which rule wins, what a refused setting
says, and which proxy passwords the log scrubs. (tests/test_proxies.py holds the rules against
httpx's own choices, and the service through real proxies.)"""

from __future__ import annotations

import httpx
import pytest

from src.services.base.proxies import (
    ProxyEndpoint,
    ProxyRules,
    environment_mounts,
    environment_proxy_secrets,
)


def rules(monkeypatch: pytest.MonkeyPatch, **variables: str) -> ProxyRules:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return ProxyRules.from_environment()


def label(proxy: ProxyEndpoint | None) -> str | None:
    return proxy.label if proxy else None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:secret@proxy.corp:3128", "http://proxy.corp:3128"),
        ("http://proxy.corp", "http://proxy.corp:80"),
        ("https://proxy.corp", "https://proxy.corp:443"),
        ("socks5://u:p@[::1]:1080", "socks5://[::1]:1080"),
        ("socks5h://10.0.0.1", "socks5h://10.0.0.1:1080"),
        ("socks5://proxy.corp", "socks5://proxy.corp:1080"),
    ],
)
def test_a_proxy_is_shown_with_its_port_and_never_its_credentials(url: str, shown: str) -> None:
    proxy = ProxyEndpoint.parse(url)

    assert proxy.label == shown
    assert "secret" not in repr(proxy)


def test_a_proxy_without_credentials_sends_no_authorization() -> None:
    proxy = ProxyEndpoint.parse("http://proxy.corp:3128")

    assert (proxy.credentials, proxy.authorization) == (None, None)


@pytest.mark.parametrize(
    ("variables", "url", "expected"),
    [
        # A rule with a port wins over one without, whatever their order.
        (
            {"ALL_PROXY": "http://all:1", "NO_PROXY": "x.ai:8443"},
            "https://x.ai:8443/",
            None,
        ),
        # The longer host wins: a subdomain rule over its parent's.
        (
            {"HTTPS_PROXY": "http://s:2", "NO_PROXY": "corp.ai"},
            "https://api.corp.ai/",
            None,
        ),
        # Between rules for any host, the one for the URL's scheme wins over all://.
        (
            {"ALL_PROXY": "http://all:1", "HTTP_PROXY": "http://web:3"},
            "http://x.ai/",
            "http://web:3",
        ),
        (
            {"ALL_PROXY": "http://all:1", "HTTP_PROXY": "http://web:3"},
            "https://x.ai/",
            "http://all:1",
        ),
        # A pattern's scheme limits it to that scheme.
        (
            {"ALL_PROXY": "http://all:1", "NO_PROXY": "http://x.ai"},
            "https://x.ai/",
            "http://all:1",
        ),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "http://x.ai"}, "http://x.ai/", None),
        # A bare IPv6 address, a localhost and a CIDR range bypass exactly what they name.
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "::1"}, "http://[::1]:8080/", None),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "::1"}, "http://[::2]:8080/", "http://all:1"),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "localhost"}, "http://localhost:1/", None),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "10.0.0.1"}, "http://10.0.0.1/", None),
        (
            {"ALL_PROXY": "http://all:1", "NO_PROXY": "10.0.0.1"},
            "http://10.0.0.10/",
            "http://all:1",
        ),
        # "*.name" in a pattern is the subdomains only; a bare name is itself and its subdomains.
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "all://*.x.ai"}, "http://x.ai/", "http://all:1"),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "all://*.x.ai"}, "http://a.x.ai/", None),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "x.ai"}, "http://a.b.x.ai/", None),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "x.ai"}, "http://ax.ai/", "http://all:1"),
        # An IP address (or a range written with its prefix) is that address, not a suffix.
        (
            {"ALL_PROXY": "http://all:1", "NO_PROXY": "10.0.0.1"},
            "http://a.10.0.0.1/",
            "http://all:1",
        ),
        (
            {"ALL_PROXY": "http://all:1", "NO_PROXY": "10.0.0.1/32"},
            "http://a.10.0.0.1/",
            "http://all:1",
        ),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "10.0.0.1/32"}, "http://10.0.0.1/", None),
        # A pattern for any host of a scheme turns that scheme's proxy off for all of them.
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "http://*"}, "http://x.ai/", None),
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "http://*"}, "https://x.ai/", "http://all:1"),
        # Entries are separated by commas, with or without spaces.
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": "x.ai,y.ai"}, "http://y.ai/", None),
        # Blank NO_PROXY entries are skipped, not read as a rule for every host.
        ({"ALL_PROXY": "http://all:1", "NO_PROXY": " , ,"}, "http://x.ai/", "http://all:1"),
    ],
)
def test_the_most_specific_rule_decides(
    variables: dict[str, str], url: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = rules(monkeypatch, **variables).proxy_for_url(httpx.URL(url))

    assert label(proxy) == expected


@pytest.mark.parametrize(
    ("url", "proxied"),
    [
        ("https://openrouter.ai/api/v1", True),
        ("https://openrouter.ai:443/api/v1", True),
        ("https://openrouter.ai:8443/api/v1", False),
        ("http://openrouter.ai/api/v1", True),
    ],
)
def test_the_proxy_for_a_url_reads_its_default_port_as_no_port(
    url: str, proxied: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = rules(
        monkeypatch, ALL_PROXY="http://all:1", NO_PROXY="openrouter.ai:8443, openrouter.ai:80"
    ).proxy_for_url(httpx.URL(url))

    assert label(found) == ("http://all:1" if proxied else None)


def test_proxy_variables_without_no_proxy_exempt_no_origin_from_the_proxy() -> None:
    assert environment_mounts({"https": "http://p:1", "all": "socks5://q:2"}) == {
        "https://": "http://p:1",
        "all://": "socks5://q:2",
    }


def test_no_proxy_variables_means_every_origin_is_reached_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = rules(monkeypatch).proxy_for("https", "openrouter.ai", 443)

    assert found is None
    assert ProxyRules.none().proxy_for("http", "x.ai", 80) is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "HTTP_PROXY",
            "ftp://u:S3cret@proxy.corp:21",
            "HTTP_PROXY: 'ftp://proxy.corp:21' is not a usable proxy setting (a proxy URL is "
            "http://, https://, socks5:// or socks5h://host:port)",
        ),
        (
            "HTTPS_PROXY",
            "http://u:S3c@ret@proxy.corp:notaport",
            "HTTPS_PROXY: 'http://proxy.corp:notaport' is not a usable proxy setting (a proxy URL "
            "is http://, https://, socks5:// or socks5h://host:port)",
        ),
        (
            "HTTPS_PROXY",
            "http://u:S3c://ret@proxy.corp:notaport",
            "HTTPS_PROXY: 'http://proxy.corp:notaport' is not a usable proxy setting (a proxy URL "
            "is http://, https://, socks5:// or socks5h://host:port)",
        ),
        (
            "HTTPS_PROXY",
            "u:S3c://ret@proxy.corp:notaport",
            "HTTPS_PROXY: 'proxy.corp:notaport' is not a usable proxy setting (a proxy URL "
            "is http://, https://, socks5:// or socks5h://host:port)",
        ),
        (
            "ALL_PROXY",
            "http://u:S3cret@proxy.corp:notaport",
            "ALL_PROXY: 'http://proxy.corp:notaport' is not a usable proxy setting (a proxy URL "
            "is http://, https://, socks5:// or socks5h://host:port)",
        ),
        (
            "NO_PROXY",
            "proxy.corp:abc",
            "NO_PROXY: 'all://*proxy.corp:abc' is not a usable proxy setting (a proxy URL is "
            "http://, https://, socks5:// or socks5h://host:port)",
        ),
    ],
)
def test_an_unusable_setting_is_refused_naming_its_variable_never_a_password(
    variable: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://fine:1")
    with pytest.raises(ValueError) as refused:
        rules(monkeypatch, **{variable: value})

    assert str(refused.value) == message
    assert refused.value.__cause__ is None  # the URL, password and all, is not chained along


@pytest.mark.parametrize(
    ("variables", "secrets"),
    [
        ({"HTTPS_PROXY": "http://u:S3cret%2Fpw@p:1"}, ["S3cret%2Fpw", "S3cret/pw"]),
        ({"HTTP_PROXY": "u:plain@p:1"}, ["plain"]),
        ({"ALL_PROXY": "socks5://u:pw@p:1", "HTTP_PROXY": "http://u:pw@q:1"}, ["pw"]),
        ({"ALL_PROXY": "socks5://u:pw1@p:1", "HTTP_PROXY": "http://u:pw2@q:1"}, ["pw1", "pw2"]),
        ({"HTTPS_PROXY": "http://user@p:1", "NO_PROXY": "u:x@y"}, []),
        ({"HTTPS_PROXY": "http://u:pw@[::1:1"}, []),
    ],
)
def test_the_proxy_passwords_are_given_to_the_log_scrubber(
    variables: dict[str, str], secrets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    assert environment_proxy_secrets() == secrets
