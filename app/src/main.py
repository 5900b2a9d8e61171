"""The FastAPI application. The lifespan builds, and closes, every long-lived resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import SecretStr

from src.api.benchmarks import benchmark_form_schema, upload_router
from src.api.benchmarks import router as benchmarks_router
from src.api.docs import ASSETS_PATH, DOCS_PATH, REDOC_PATH, add_offline_docs, exact_openapi
from src.api.endpoints import public_router, router
from src.api.errors.exception_handlers import register_exception_handlers
from src.api.errors.openai_errors import by_path, openai_error_response
from src.api.gate.auth import InboundKeyMiddleware
from src.api.gate.body_limit import FORM_OVERHEAD_BYTES, BodyLimit
from src.api.gate.descriptors import descriptor_budget
from src.api.gate.guards import CrossSiteGuard, TrustedHosts
from src.api.gate.request_log import RequestLoggingMiddleware
from src.api.openai import router as openai_router
from src.api.plumbing.deps import AppState
from src.config import Settings, get_settings
from src.logger import setup_logging
from src.redaction import Redactor
from src.schemas.prompts import ErrorResponse, ValidationErrorResponse
from src.services.base.proxies import ProxyRules
from src.services.base.transport import WireTransport
from src.services.benchmarker.runs.launcher import BenchmarkLauncher
from src.services.benchmarker.runs.owners import Caller, owner_tag
from src.services.benchmarker.runs.service import max_run_concurrency
from src.services.openrouter.catalog import ModelCatalog
from src.services.openrouter.client import UpstreamTarget, connect_openrouter

logger = logging.getLogger(__name__)

# Open to every caller, inbound keys or not: load balancers and container health checks.
PUBLIC_PATHS = ("/health",)
# The embedded emulator wants a Bearer token like OpenRouter does; this one unlocks nothing real.
EMULATOR_API_KEY = "emulator-local-key"


def create_app(
    settings: Settings | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """`transport` replaces the network layer under httpx (tests inject respx or a mock)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[AppState]:
        active = settings or get_settings()
        async with AsyncExitStack() as stack:
            logging_handle = setup_logging(
                active.log_dir,
                secrets=active.secrets(),
                level=active.log_level,
                max_bytes=active.log_max_bytes,
                backup_count=active.log_backup_count,
            )
            stack.callback(logging_handle.stop)
            target = UpstreamTarget(active.openrouter_base_url, active.openrouter_api_key)
            if active.uses_emulator:
                # Imported here: with a key set, nothing of the emulator is loaded.
                from src.services.emulator import EmulatorConfig
                from src.services.emulator.server import serve_embedded_emulator

                base_url = await stack.enter_async_context(
                    serve_embedded_emulator(EmulatorConfig.from_settings(active))
                )
                target = UpstreamTarget(base_url, SecretStr(EMULATOR_API_KEY))
                logger.warning(
                    "OPENROUTER_API_KEY is not set: serving against the built-in OpenRouter "
                    "emulator at %s (only emulator/... models). Set the key to use OpenRouter.",
                    base_url,
                )
            client = connect_openrouter(active, target, transport)
            stack.push_async_callback(client.aclose)
            catalog = ModelCatalog(client, active.models_cache_ttl_seconds)
            launcher = BenchmarkLauncher(active, client, target)
            await launcher.open()
            # Runs before the client closes: an interrupted run saves its summary first.
            stack.push_async_callback(launcher.close, active.shutdown_timeout_seconds)
            proxy = upstream_proxy(active, client.transport, target)
            logger.info(
                "Service started; upstream: %s, transport: %s; proxy: %s",
                active.upstream_label,
                active.upstream_transport,
                proxy or "none",
            )
            budget = descriptor_budget(active)
            if budget.connections < budget.asked:
                logger.warning(
                    "MAX_CONNECTIONS=%d lowered to %d: this process may open only %d files "
                    "(RLIMIT_NOFILE); raise that limit to serve more connections",
                    budget.asked,
                    budget.connections,
                    budget.descriptor_limit,
                )
            yield {
                "settings": active,
                "openrouter": client,
                "catalog": catalog,
                "redactor": Redactor(active.secrets()),
                "launcher": launcher,
                "upstream_proxy": proxy,
            }

    app = FastAPI(
        title="LLM gateway",
        description="OpenRouter proxy: list models, generate text, benchmark latency.",
        version="0.1.0",
        lifespan=lifespan,
        # Served by add_offline_docs instead: FastAPI's own pages load their assets from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    register_exception_handlers(app, by_path)
    app.include_router(public_router)
    # Every error is documented with its JSON shape. Our own 422s (limits, bad files) use the
    # error shape; FastAPI's request validation 422s keep theirs.
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse} for status in (400, 401, 402, 403, 404, 413, 429, 502, 504)
    }
    documented[422] = {"model": ErrorResponse | ValidationErrorResponse}
    # Routes are matched in order: the hot ones (/generate, /v1/chat/completions) come first.
    for protected in (router, openai_router, upload_router, benchmarks_router):
        app.include_router(protected, responses=documented)
    add_offline_docs(app)
    active = settings or get_settings()
    document_contract(app, active)
    add_body_limit(app, active)
    add_inbound_keys(app, active)
    add_edge_middleware(app, active)
    return app


def upstream_proxy(
    settings: Settings, transport: httpx.AsyncBaseTransport, target: UpstreamTarget
) -> str | None:
    """The proxy the upstream is reached through, without its credentials."""
    if settings.uses_emulator:
        return None  # on this machine: always reached directly
    url = httpx.URL(target.base_url)
    if isinstance(transport, WireTransport):
        proxy = transport.proxy_for(url)
    else:  # another transport reads the environment as httpx does, as the rules do
        proxy = ProxyRules.from_environment().proxy_for_url(url)
    return proxy.label if proxy else None


def add_body_limit(app: FastAPI, settings: Settings) -> None:
    """Every request body bounded while it arrives; added first, so it runs last, after the
    key check: a refused caller's body is never read at all."""
    upload, json_limit = settings.max_upload_bytes, settings.max_json_body_bytes
    app.add_middleware(
        BodyLimit,
        limits={
            "/benchmark": (
                upload + FORM_OVERHEAD_BYTES,
                f"MAX_UPLOAD_BYTES={upload} bytes for the prompt file",
            )
        },
        default=(json_limit, f"{json_limit} bytes for a JSON body"),
    )


def add_inbound_keys(app: FastAPI, settings: Settings) -> None:
    """PROXY_API_KEYS and PROXY_ADMIN_KEYS on every path but /health and the docs, before any
    body is read; added first, so that the edge middleware (CORS preflights, host and
    cross-site checks) runs before it. Without keys the check would pass every request: it is
    not installed."""
    if not settings.inbound_keys_on:
        return
    docs = (app.openapi_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        InboundKeyMiddleware,
        keys=inbound_callers(settings),
        open_paths={*PUBLIC_PATHS, DOCS_PATH, REDOC_PATH, *(path for path in docs if path)},
        open_prefixes=(ASSETS_PATH + "/",),
        # The OpenAI face answers in OpenAI's error shape, its refusals included.
        answers={openai_router.prefix + "/": openai_error_response},
    )


def document_contract(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI document says what this instance accepts: its limits, its keys."""
    tokens = settings.max_tokens_limit
    exact_openapi(
        app,
        bounds={
            "max_tokens": tokens,
            "max_completion_tokens": tokens,
            "max_output_tokens": tokens,
            # Synthetic prompts' answer length replaces max_tokens.
            "output_tokens": tokens,
            "n": settings.max_choices,
            "runs": settings.max_runs,
            "concurrency": max_run_concurrency(settings),
            "duration": settings.max_run_seconds,
        },
        bodies={("/benchmark", "multipart/form-data"): benchmark_form_schema()},
        keyed=settings.inbound_keys_on,
        open_paths=PUBLIC_PATHS,
    )


def inbound_callers(settings: Settings) -> list[tuple[SecretStr, Caller]]:
    """Each key with who it makes the caller; a key listed as both is an admin key (the last
    match wins). Hashed here, once, not while a request waits."""
    keys = [(key, False) for key in settings.proxy_api_keys]
    keys += [(key, True) for key in settings.proxy_admin_keys]
    return [(key, Caller(owner_tag(key.get_secret_value()), sees_all=admin)) for key, admin in keys]


def add_edge_middleware(app: FastAPI, settings: Settings) -> None:
    """Outermost first: one log line and a request id for every answer, refusals included."""
    # Starlette wraps in reverse order of addition: the last added runs first.
    app.add_middleware(CrossSiteGuard, allowed_origins=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Prefer"],
            expose_headers=["X-Request-ID", "Location", "Retry-After"],
        )
    # Installed with "*" too: two Host headers are refused whatever the hosts allowed.
    app.add_middleware(TrustedHosts, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(RequestLoggingMiddleware)


app = create_app(get_settings())
