"""What the lifespan built, as the routes reach it; nothing here creates anything.

Most routes take these as `Annotated` dependencies. The proxy's hot routes read the same typed
state with `lifespan_state(request)` instead: FastAPI resolves every dependency on every
request, which costs more per request than the whole upstream call's client-side work
(measured with `make perf`, goal 7).

The dependencies are async on purpose: FastAPI runs plain `def` dependencies in a thread
pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated, TypedDict, cast

from fastapi import Depends, Request

from src.config import Settings
from src.redaction import Redactor
from src.services.openrouter.catalog import ModelCatalog
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget
from src.services.shutdown import ShutdownGuard


class AppState(TypedDict):
    """The lifespan's state, copied into every request's scope by Starlette."""

    settings: Settings
    openrouter: OpenRouterClient
    upstream_target: UpstreamTarget
    catalog: ModelCatalog
    redactor: Redactor
    shutdown_guard: ShutdownGuard


def lifespan_state(request: Request) -> AppState:
    return cast(AppState, request.scope["state"])


async def get_settings_state(request: Request) -> Settings:
    return lifespan_state(request)["settings"]


async def get_openrouter(request: Request) -> OpenRouterClient:
    return lifespan_state(request)["openrouter"]


async def get_catalog(request: Request) -> ModelCatalog:
    return lifespan_state(request)["catalog"]


async def get_shutdown_guard(request: Request) -> ShutdownGuard:
    return lifespan_state(request)["shutdown_guard"]


async def get_upstream_target(request: Request) -> UpstreamTarget:
    return lifespan_state(request)["upstream_target"]


SettingsDep = Annotated[Settings, Depends(get_settings_state)]
OpenRouterDep = Annotated[OpenRouterClient, Depends(get_openrouter)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
ShutdownGuardDep = Annotated[ShutdownGuard, Depends(get_shutdown_guard)]
UpstreamTargetDep = Annotated[UpstreamTarget, Depends(get_upstream_target)]
