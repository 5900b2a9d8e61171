"""Swagger UI (/docs) and ReDoc (/redoc) served whole by the service, so they work offline,
and the OpenAPI document they read, made exact for the machines that read it too.

FastAPI's own pages load their JavaScript and CSS from a CDN: without internet they are
blank. This is FastAPI's self-hosting recipe ("Custom Docs UI Static Assets"), with the files
from the `fastapi-offline` package, which ships the swagger-ui-dist and ReDoc builds (its
version, and so theirs, is pinned in uv.lock).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"
# The package's data directory: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js.
ASSETS_PACKAGE = ("fastapi_offline", "static")


def add_offline_docs(app: FastAPI) -> None:
    """For an app built with `docs_url=None, redoc_url=None`: the same pages, served here."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    async def swagger_ui_redirect(_: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route(DOCS_PATH, swagger_ui, include_in_schema=False)
    app.add_route(REDOC_PATH, redoc, include_in_schema=False)
    if redirect_url:
        app.add_route(redirect_url, swagger_ui_redirect, include_in_schema=False)


def _root(request: Request) -> str:
    """Where the app is mounted, behind a proxy that strips a prefix."""
    return str(request.scope.get("root_path", "")).rstrip("/")


# The name of the inbound keys' scheme in the document: Swagger UI's Authorize button.
BEARER_SCHEME = "bearerAuth"
_COMPONENTS = "#/components/schemas/"
_LOCAL_DEFS = "#/$defs/"
JsonObject = dict[str, Any]
# Upper bounds of request fields, by field name: the settings' limits, which the service
# enforces past pydantic's own bounds (a 422 naming the setting).
Bounds = Mapping[str, float]


def exact_openapi(
    app: FastAPI,
    *,
    bounds: Bounds,
    bodies: Mapping[tuple[str, str], JsonObject],
    keyed: bool,
    open_paths: Collection[str],
) -> None:
    """`app.openapi()` as FastAPI builds it, then: the bodies a route parses itself declared
    with their references resolvable, `bodies` ((path, media type): schema) in place of
    FastAPI's own, the `bounds` on every request field of that name, and with `keyed` the
    bearer scheme on every path but `open_paths`. Built once, with the app's settings."""
    build: Callable[[], JsonObject] = app.openapi

    def openapi() -> JsonObject:
        if app.openapi_schema is None:
            schema = build()
            _hoist_local_definitions(schema)
            for (path, media_type), body in bodies.items():
                _replace_body(schema, path, media_type, body)
            for field in _request_fields(schema):
                _bound(field, bounds)
            if keyed:
                _declare_bearer(schema, open_paths)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(schema: JsonObject) -> Iterator[tuple[str, JsonObject]]:
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            yield path, operation


def _body_schemas(schema: JsonObject) -> Iterator[JsonObject]:
    for _, operation in _operations(schema):
        for content in operation.get("requestBody", {}).get("content", {}).values():
            if "schema" in content:
                yield content["schema"]


def _hoist_local_definitions(schema: JsonObject) -> None:
    """A body schema written by pydantic keeps its models under its own `$defs`, referenced as
    `#/$defs/...`: a reference the document cannot resolve. They move to the components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for body in _body_schemas(schema):
        for name, definition in body.pop("$defs", {}).items():
            components.setdefault(name, definition)
    _rewrite_references(schema)


def _rewrite_references(node: object) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_LOCAL_DEFS):
            node["$ref"] = _COMPONENTS + ref[len(_LOCAL_DEFS) :]
        for value in node.values():
            _rewrite_references(value)
    elif isinstance(node, list):
        for item in node:
            _rewrite_references(item)


def _replace_body(schema: JsonObject, path: str, media_type: str, body: JsonObject) -> None:
    content = schema["paths"][path]["post"]["requestBody"]["content"][media_type]
    ref = content["schema"].get("$ref")
    if isinstance(ref, str) and ref.startswith(_COMPONENTS):
        schema["components"]["schemas"][ref[len(_COMPONENTS) :]] = body
    else:
        content["schema"] = body


def _request_fields(schema: JsonObject) -> Iterator[tuple[str, JsonObject]]:
    """Every named property of every request body, through the components it references
    (each once); response schemas are left alone: a run saved under other settings may hold
    values past today's bounds."""
    components = schema.get("components", {}).get("schemas", {})
    seen: set[str] = set()
    pending: list[object] = list(_body_schemas(schema))
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_COMPONENTS) and ref not in seen:
            seen.add(ref)
            pending.append(components.get(ref[len(_COMPONENTS) :]))
        for name, field in node.get("properties", {}).items():
            if isinstance(field, dict):
                yield name, field
        pending.extend(node.values())


def _bound(named_field: tuple[str, JsonObject], bounds: Bounds) -> None:
    name, field = named_field
    if name not in bounds:
        return
    for branch in field.get("anyOf", [field]):
        if branch.get("type") in ("integer", "number"):
            branch["maximum"] = min(branch.get("maximum", bounds[name]), bounds[name])


def _declare_bearer(schema: JsonObject, open_paths: Collection[str]) -> None:
    schema.setdefault("components", {})["securitySchemes"] = {
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "One of PROXY_API_KEYS (or PROXY_ADMIN_KEYS)",
        }
    }
    for path, operation in _operations(schema):
        if path not in open_paths:
            operation["security"] = [{BEARER_SCHEME: []}]
