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

from src.api.gate.auth import caller_of
from src.config import Settings
from src.redaction import Redactor
from src.services.benchmarker.runs.launcher import BenchmarkLauncher
from src.services.benchmarker.runs.owners import EVERYONE, NOBODY, Caller
from src.services.openrouter.catalog import ModelCatalog
from src.services.openrouter.client import OpenRouterClient


class AppState(TypedDict):
    """The lifespan's state, copied into every request's scope by Starlette."""

    settings: Settings
    openrouter: OpenRouterClient
    catalog: ModelCatalog
    redactor: Redactor
    launcher: BenchmarkLauncher
    upstream_proxy: str | None  # shown without credentials


def lifespan_state(request: Request) -> AppState:
    return cast(AppState, request.scope["state"])


async def get_settings_state(request: Request) -> Settings:
    return lifespan_state(request)["settings"]


async def get_catalog(request: Request) -> ModelCatalog:
    return lifespan_state(request)["catalog"]


async def get_launcher(request: Request) -> BenchmarkLauncher:
    return lifespan_state(request)["launcher"]


async def get_caller(request: Request) -> Caller:
    """Whose runs the request may see. With inbound keys on, a request the key check did not
    vouch for sees none: a gap in the wiring hides runs rather than showing them."""
    caller = caller_of(request.scope)
    if caller is not None:
        return caller
    return NOBODY if lifespan_state(request)["settings"].inbound_keys_on else EVERYONE


SettingsDep = Annotated[Settings, Depends(get_settings_state)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
LauncherDep = Annotated[BenchmarkLauncher, Depends(get_launcher)]
CallerDep = Annotated[Caller, Depends(get_caller)]
