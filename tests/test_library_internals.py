"""What the service takes from its libraries beyond their public API, checked against the
installed versions (pinned in pyproject.toml): an upgrade that moves any of it fails here,
by name, instead of as a refusal that no longer comes or a server that no longer starts."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Histogram
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from src.api.gate.guards import _HOST_REFUSAL
from src.api.gate.http_limits import LimitedHttpToolsProtocol
from src.metrics import BatchedHistogram

pytestmark = pytest.mark.anyio

SOURCE = Path(__file__).resolve().parents[1] / "app" / "src"

# The protocol's methods http_limits.py overrides or calls, with the parameters it passes.
_PROTOCOL_METHODS = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
    "_start_asgi_task": ["self", "cycle", "app"],
}


@pytest.mark.parametrize(("name", "parameters"), sorted(_PROTOCOL_METHODS.items()))
def test_uvicorns_httptools_protocol_has_the_methods_http_limits_overrides(
    name: str, parameters: list[str]
) -> None:
    method = getattr(HttpToolsProtocol, name)

    assert list(inspect.signature(method).parameters) == parameters
    assert getattr(LimitedHttpToolsProtocol, name) is not method  # still overridden


def test_uvicorns_protocol_keeps_the_state_http_limits_reads() -> None:
    init = inspect.getsource(HttpToolsProtocol.__init__)
    read = ("connections", "tasks", "pipeline", "cycle", "headers", "client", "loop", "parser")
    for attribute in read:
        assert f"self.{attribute} = " in init or f"self.{attribute}: " in init, attribute
    # The next pipelined request is taken off the queue when the previous answer completes.
    assert "self.pipeline.pop()" in inspect.getsource(HttpToolsProtocol.on_response_complete)
    assert "self.limit_concurrency = config.limit_concurrency" in init
    assert {"url", "config", "server_state", "transport"} <= _assigned(HttpToolsProtocol)
    assert all(status in STATUS_LINE for status in (408, 431, 503))
    assert "default_headers" in inspect.getsource(ServerState)
    assert "reset_contextvars" in inspect.signature(Config).parameters
    for flag in ("disconnected", "message_event", "response_complete", "response_started"):
        assert f"self.{flag} = " in inspect.getsource(RequestResponseCycle.__init__), flag
    assert callable(RequestResponseCycle.run_asgi)


def test_the_copied_start_asgi_task_still_matches_uvicorns() -> None:
    # LimitedHttpToolsProtocol._start_asgi_task is uvicorn's plus a handle on the task.
    source = inspect.getsource(HttpToolsProtocol._start_asgi_task)

    assert "create_task(cycle.run_asgi(app)" in source
    assert "task.add_done_callback(self.tasks.discard)" in source
    assert "self.tasks.add(task)" in source
    assert "reset_contextvars" in source


def test_uvicorns_server_steps_the_embedded_emulator_drives() -> None:
    # services/emulator/server.py runs startup, main_loop and shutdown without serve().
    server = uvicorn.Server(uvicorn.Config(app=_nothing))

    assert list(inspect.signature(server.startup).parameters) == ["sockets"]
    assert list(inspect.signature(server.shutdown).parameters) == ["sockets"]
    assert inspect.iscoroutinefunction(server.main_loop)
    assert hasattr(server, "should_exit")
    assert "self.lifespan = " in inspect.getsource(uvicorn.Server._serve)
    assert "lifespan_class" in inspect.getsource(Config.load)


async def test_starlettes_host_refusal_is_the_text_trusted_hosts_reshapes() -> None:
    middleware = TrustedHostMiddleware(_nothing, allowed_hosts=["example.org"])
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "headers": [(b"host", b"evil.test")], "path": "/"}
    await middleware(scope, _no_body, send)

    assert sent[0]["status"] == 400
    assert sent[-1]["body"] == _HOST_REFUSAL


def _assigned(cls: type) -> set[str]:
    """The names the class's source assigns as `self.<name> =` or `self.<name>: ...`."""
    source = inspect.getsource(cls)
    return {
        part.split(" ")[0].split("=")[0].split(":")[0]
        for part in source.split("self.")[1:]
        if part.split(" ", 1)[0].endswith(":") or part.split(" ", 2)[1:2] == ["="]
    }


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not reached")


async def _no_body() -> Message:
    return {"type": "http.request", "body": b""}


def test_the_service_imports_no_package_the_image_leaves_out() -> None:
    # The image installs the runtime group only (--no-dev): aiohttp serves scripts/ and tests.
    dev_only = {"aiohttp"}
    imported: set[tuple[str, str]] = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            imported |= {(str(path), name) for name in names if name.split(".")[0] in dev_only}

    assert imported == set()


def test_a_batched_histogram_scrapes_as_prometheus_clients_own_observe() -> None:
    """metrics.py writes a batch into a histogram's per-bucket values and its sum."""
    buckets = (0.1, 0.5, 1.0)
    registry = CollectorRegistry()
    observed = Histogram("observed", "h", ["route"], buckets=buckets, registry=registry)
    batched_metric = Histogram("batched", "h", ["route"], buckets=buckets, registry=registry)
    batched = BatchedHistogram(batched_metric, buckets)
    values = (0.0, 0.1, 0.10001, 0.5, 0.7, 1.0, 3.0, 3.0)

    for value in values:
        observed.labels("/a").observe(value)
        batched.observe(value, "/a")
    batched.flush()

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        return [
            (sample.name.removeprefix(name), sample.labels, sample.value)
            for family in registry.collect()
            if family.name == name
            for sample in family.samples
            if not sample.name.endswith("_created")
        ]

    assert samples("batched") == samples("observed")
    assert ("_count", {"route": "/a"}, len(values)) in samples("batched")
