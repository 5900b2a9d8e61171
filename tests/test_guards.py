"""A page on another site cannot make the service spend money; a foreign Host is refused.

The headers are those a browser sends: Chromium's `fetch(url, {method: "POST", mode: "no-cors",
body: form})` from another origin carries `Sec-Fetch-Site: cross-site` and that origin, and a
plain HTML form post carries the origin too. Scripts and curl send neither.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx
from starlette.types import Receive, Scope, Send

from src.api.gate.guards import CrossSiteGuard, TrustedHosts
from src.config import Settings
from tests.helpers.app import Serve, make_settings, read_log
from tests.helpers.asgi import Recorder, http_scope
from tests.helpers.benchmarks import PROMPTS
from tests.helpers.errors import assert_error
from tests.helpers.openrouter import GENERATE, MODELS_BODY, completion_body

pytestmark = pytest.mark.anyio

EVIL = "http://evil.example"
OWN = "http://service.test"


@pytest.fixture
def routes(upstream: respx.MockRouter) -> list[respx.Route]:
    return [
        upstream.get("/models").respond(json=MODELS_BODY),
        upstream.post("/chat/completions").respond(json=completion_body()),
    ]


def spent(routes: list[respx.Route]) -> int:
    return sum(route.call_count for route in routes)


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Origin": EVIL},  # fetch() from another site
        {"Sec-Fetch-Site": "same-site", "Origin": "http://service.test:8080"},  # another port
        {"Origin": EVIL},  # a browser too old for Sec-Fetch-*
        {"Origin": "null"},  # a sandboxed iframe or a file:// page
    ],
)
async def test_a_cross_site_benchmark_post_is_refused_before_anything_runs(
    client: httpx.AsyncClient,
    settings: Settings,
    routes: list[respx.Route],
    headers: dict[str, str],
) -> None:
    response = await client.post(
        "/benchmark",
        headers=headers,
        data={"model": "openai/gpt-4o", "runs": "3"},
        files={"prompt_file": ("p.txt", PROMPTS, "text/plain")},
    )

    body = assert_error(response, 403, "CrossSiteRequestError", "Cross-site request refused")
    assert "CORS_ORIGINS" in body["detail"]
    assert spent(routes) == 0
    assert not settings.benchmarks_dir.exists() or not list(settings.benchmarks_dir.iterdir())


@pytest.mark.parametrize(("method", "path"), [("POST", "/generate"), ("DELETE", "/benchmarks/x")])
async def test_every_state_changing_method_is_guarded(
    client: httpx.AsyncClient, routes: list[respx.Route], method: str, path: str
) -> None:
    response = await client.request(
        method, path, json=GENERATE, headers={"Sec-Fetch-Site": "cross-site", "Origin": EVIL}
    )

    assert_error(response, 403, "CrossSiteRequestError")
    assert spent(routes) == 0


async def test_a_cross_site_read_is_not_refused(
    client: httpx.AsyncClient, routes: list[respx.Route]
) -> None:
    # Reading spends nothing, and the browser keeps the answer from the other site anyway.
    response = await client.get("/models", headers={"Sec-Fetch-Site": "cross-site", "Origin": EVIL})

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, scripts, SDKs
        {"Sec-Fetch-Site": "same-origin", "Origin": OWN},  # Swagger UI at /docs
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": OWN},
    ],
)
async def test_own_pages_and_non_browser_clients_go_through(
    client: httpx.AsyncClient, routes: list[respx.Route], headers: dict[str, str]
) -> None:
    response = await client.post("/generate", json=GENERATE, headers=headers)

    assert response.status_code == 200, response.text


async def test_cors_origins_lets_a_listed_site_in_and_answers_its_preflight(
    tmp_path: Path, serve: Serve, routes: list[respx.Route]
) -> None:
    site = "https://dashboard.example"
    settings = make_settings(tmp_path, cors_origins=[site])

    async with serve(settings) as client:
        preflight = await client.options(
            "/generate",
            headers={
                "Origin": site,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization",
            },
        )
        allowed = await client.post(
            "/generate", json=GENERATE, headers={"Sec-Fetch-Site": "cross-site", "Origin": site}
        )
        other = await client.post(
            "/generate", json=GENERATE, headers={"Sec-Fetch-Site": "cross-site", "Origin": EVIL}
        )

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == site
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == site
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers


async def test_a_foreign_host_is_refused_which_stops_dns_rebinding(
    tmp_path: Path, serve: Serve, routes: list[respx.Route], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    default_hosts = Settings(_env_file=None).allowed_hosts
    settings = make_settings(tmp_path, allowed_hosts=default_hosts)

    async with serve(settings) as client:
        rebound = await client.post(
            "/generate", json=GENERATE, headers={"Host": "evil.example:8000"}
        )
        local = await client.post("/generate", json=GENERATE, headers={"Host": "127.0.0.1:8000"})
        named = await client.get("/health", headers={"Host": "localhost:8000"})
        ipv6 = await client.get("/health", headers={"Host": "[::1]:8000"})

    assert_error(rebound, 400, "InvalidHostError", "ALLOWED_HOSTS")
    assert local.status_code == 200
    assert named.status_code == 200
    assert ipv6.status_code == 200, ipv6.text
    assert spent(routes) == 1
    assert "status_code=400" in read_log(settings)


async def test_allowed_hosts_star_answers_any_host(
    tmp_path: Path, serve: Serve, routes: list[respx.Route]
) -> None:
    async with serve(make_settings(tmp_path, allowed_hosts=["*"])) as client:
        response = await client.get("/health", headers={"Host": "anything.example"})

    assert response.status_code == 200


def test_the_service_binds_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    defaults = Settings(_env_file=None)

    assert defaults.host == "127.0.0.1"
    assert defaults.allowed_hosts == ["localhost", "127.0.0.1", "[::1]"]
    assert defaults.cors_origins == []


SITE_REFUSAL = (
    "Cross-site request refused (Sec-Fetch-Site: cross-site): a page on another site cannot "
    "make this service run or spend anything. List the site in CORS_ORIGINS to allow it."
)


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        # A browser that sends no Origin (a navigation, a privacy setting) still says where from.
        ({"Sec-Fetch-Site": "cross-site"}, SITE_REFUSAL),
        (
            {"Origin": EVIL},
            f"Cross-site request refused (Origin: {EVIL}). "
            "List the site in CORS_ORIGINS to allow it.",
        ),
        (
            {"Origin": "null"},
            "Cross-site request refused (Origin: null, a sandboxed or local page). "
            "Only sites listed in CORS_ORIGINS may call the service from a browser.",
        ),
    ],
)
async def test_each_refusal_says_why_in_full(
    client: httpx.AsyncClient, routes: list[respx.Route], headers: dict[str, str], detail: str
) -> None:
    response = await client.post("/generate", json=GENERATE, headers=headers)

    assert assert_error(response, 403, "CrossSiteRequestError")["detail"] == detail
    assert spent(routes) == 0


async def test_cors_origins_match_whatever_their_case_and_trailing_slash(
    tmp_path: Path, serve: Serve, routes: list[respx.Route]
) -> None:
    settings = make_settings(tmp_path, cors_origins=["https://LaTeX/"])

    async with serve(settings) as client:
        response = await client.post(
            "/generate",
            json=GENERATE,
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://LATEX/"},
        )

    assert response.status_code == 200, response.text


async def test_a_refusal_before_any_request_id_is_complete_json() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("a refused request must not reach the app")

    sent = Recorder()
    scope = http_scope("POST", "/generate", {"Sec-Fetch-Site": "cross-site"})

    await CrossSiteGuard(app)(scope, Recorder(), sent)  # type: ignore[arg-type]

    body = b'{"detail":"%s","error":"CrossSiteRequestError","request_id":"-"}' % (
        SITE_REFUSAL.encode()
    )
    assert sent.messages == [
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


async def test_a_foreign_host_is_told_which_setting_lists_the_hosts(
    tmp_path: Path, serve: Serve, routes: list[respx.Route]
) -> None:
    async with serve(make_settings(tmp_path)) as client:
        response = await client.get("/health", headers={"Host": "evil.example"})

    assert assert_error(response, 400, "InvalidHostError")["detail"] == (
        "The Host header names a host this service does not serve (ALLOWED_HOSTS)."
    )


async def test_an_allowed_host_gets_each_part_of_a_stream_as_it_is_sent() -> None:
    sent = Recorder()
    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in (
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.body", "body": b"a", "more_body": True},
            {"type": "http.response.body", "body": b"b"},
        ):
            await send(message)
            seen.append(len(sent.messages))

    guard = TrustedHosts(app, allowed_hosts=["service.test"])
    await guard(http_scope("GET", "/", {"Host": "service.test"}), Recorder(), sent)  # type: ignore[arg-type]

    assert seen == [1, 2, 3]


async def _reached(app_guard: type, headers: list[tuple[bytes, bytes]], **options: object) -> bool:
    """Whether a POST with exactly these headers, in this order, reaches the app."""
    reached: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(True)

    scope = http_scope("POST", "/generate")
    scope["headers"] = headers
    await app_guard(app, **options)(scope, Recorder(), Recorder())
    return bool(reached)


@pytest.mark.parametrize("allowed_hosts", [["service.test"], ["*"]])
async def test_two_host_headers_are_refused_whatever_allowed_hosts_says(
    allowed_hosts: list[str],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("a request with two Host headers must not reach the app")

    sent = Recorder()
    scope = http_scope("GET", "/health")
    scope["headers"] = [(b"host", b"service.test"), (b"host", b"evil.example")]
    scope["state"] = {"request_id": "r-1"}

    await TrustedHosts(app, allowed_hosts=allowed_hosts)(scope, Recorder(), sent)  # type: ignore[arg-type]

    body = (
        b'{"detail":"The request has more than one Host header; send one.",'
        b'"error":"InvalidHostError","request_id":"r-1"}'
    )
    assert [message.get("status") for message in sent.messages] == [400, None]
    assert sent.messages[1] == {"type": "http.response.body", "body": body}
    assert await _reached(TrustedHosts, [(b"host", b"service.test")], allowed_hosts=allowed_hosts)


async def test_a_page_is_compared_with_the_host_header_only() -> None:
    own_page = [(b"origin", OWN.encode()), (b"host", b"service.test")]
    # Without a Host header another header naming the host (one a proxy adds) is not taken.
    forwarded = [(b"x-forwarded-host", b"service.test"), (b"origin", OWN.encode())]

    assert await _reached(CrossSiteGuard, own_page)
    assert not await _reached(CrossSiteGuard, [own_page[0], (b"host", b"other.test")])
    assert not await _reached(CrossSiteGuard, forwarded)


async def test_a_page_of_the_same_scheme_is_same_site_and_a_scope_without_one_is_http() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope.get("scheme"))

    reached: list[object] = []
    headers = {"Origin": "https://service.test", "Host": "service.test"}
    https = {**http_scope("POST", "/generate", headers), "scheme": "https"}
    http_page = http_scope("POST", "/generate", {**headers, "Origin": OWN})
    without_scheme = {k: v for k, v in http_page.items() if k != "scheme"}
    https_page_on_http = http_scope("POST", "/generate", headers)

    for scope in (https, without_scheme, https_page_on_http):
        await CrossSiteGuard(app)(scope, Recorder(), Recorder())  # type: ignore[arg-type]

    assert reached == ["https", None]  # the https page on an http service is another site


async def test_allowed_hosts_star_passes_the_request_body_on() -> None:
    bodies: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        bodies.append((await receive())["body"])

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"the body", "more_body": False}

    scope = http_scope("POST", "/generate", {"Host": "anything.example"})
    await TrustedHosts(app, allowed_hosts=["*"])(scope, receive, Recorder())

    assert bodies == [b"the body"]
