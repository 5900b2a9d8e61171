"""Dependencies read what the lifespan built; they create nothing.

They are async on purpose: FastAPI runs plain `def` dependencies in a thread pool, a thread hop
per dependency per request on the hot path.
"""

from typing import Annotated, cast

from fastapi import Depends, Request

from src.config import Settings
from src.services.openrouter.catalog import ModelCatalog
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget
from src.services.shutdown import ShutdownGuard


async def get_settings_state(request: Request) -> Settings:
    return cast(Settings, request.state.settings)


async def get_openrouter(request: Request) -> OpenRouterClient:
    return cast(OpenRouterClient, request.state.openrouter)


async def get_catalog(request: Request) -> ModelCatalog:
    return cast(ModelCatalog, request.state.catalog)


SettingsDep = Annotated[Settings, Depends(get_settings_state)]
OpenRouterDep = Annotated[OpenRouterClient, Depends(get_openrouter)]


async def get_shutdown_guard(request: Request) -> ShutdownGuard:
    return cast(ShutdownGuard, request.state.shutdown_guard)


CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
ShutdownGuardDep = Annotated[ShutdownGuard, Depends(get_shutdown_guard)]


async def get_upstream_target(request: Request) -> UpstreamTarget:
    return cast(UpstreamTarget, request.state.upstream_target)


UpstreamTargetDep = Annotated[UpstreamTarget, Depends(get_upstream_target)]
