"""No OPENROUTER_API_KEY: `make run` serves against the embedded emulator and says so."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.helpers.e2e import MODEL, generate_body, wait_for_log
from tests.helpers.launcher import StartApp
from tests.helpers.processes import ServiceProcess


def test_without_a_key_the_app_serves_the_embedded_emulator_and_warns(
    start_app: StartApp, connect: Callable[[ServiceProcess], httpx.Client]
) -> None:
    # No base URL either: the default (openrouter.ai) must not be contacted at all.
    app = start_app("app-no-key", upstream=None, OPENROUTER_API_KEY="")
    http = connect(app)

    health = http.get("/health")
    models = http.get("/models")
    generated = http.post("/generate", json=generate_body("Hello, emulator", max_tokens=16))
    real_model = http.post(
        "/generate", json={"model": "openai/gpt-4o", "prompt": "Hello, OpenRouter"}
    )

    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "upstream": "emulator",
        "transport": "wire",
        "proxy": None,
        "jobs": {"backend": "files"},
    }
    assert models.status_code == 200
    ids = [model["id"] for model in models.json()["models"]]
    assert ids and all(model_id.startswith("emulator/") for model_id in ids)
    assert generated.status_code == 200, generated.text
    assert generated.json()["model"] == MODEL
    assert generated.json()["text"]
    assert 400 <= real_model.status_code < 500
    assert "OPENROUTER_API_KEY" in real_model.json()["detail"]
    # Written to the log file, at WARNING, before the app served anything.
    log = wait_for_log(app, r" - WARNING - OPENROUTER_API_KEY is not set")
    assert log.index("OPENROUTER_API_KEY is not set") < log.index(" | GET /health | ")


# uvicorn's own lines about the service's server, each said once: the embedded emulator's
# server says the same words, which read as the service's said twice.
SERVER_LINES = (
    " - INFO - Application startup complete.",
    " - INFO - Shutting down",
    " - INFO - Waiting for application shutdown.",
)


@pytest.mark.parametrize("key", ["", "sk-or-v1-e2e"], ids=["embedded-emulator", "with-a-key"])
def test_startup_and_shutdown_lines_are_logged_once_each(
    start_app: StartApp, emulator: ServiceProcess, key: str
) -> None:
    upstream = None if not key else emulator
    app = start_app(f"app-lines-{len(key)}", upstream=upstream, OPENROUTER_API_KEY=key)
    wait_for_log(app, r"Uvicorn running on")

    app.stop()  # SIGTERM, as a terminal or Docker stops it
    log = app.log_text()
    for line in (*SERVER_LINES, " - INFO - Service started;", " - INFO - Service stopped"):
        assert log.count(line) == 1, f"{line!r} logged {log.count(line)} times:\n{log}"
    assert log.index(SERVER_LINES[0]) < log.index("Uvicorn running on")
    assert log.rstrip().endswith("Service stopped")
