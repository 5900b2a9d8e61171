"""A real service process whose LOG_DIR cannot be created starts, serves and says why once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers.e2e import generate_body
from tests.helpers.launcher import StartApp
from tests.helpers.processes import ServiceProcess, wait_until


def test_service_with_an_unwritable_log_dir_serves_and_logs_to_stdout(
    tmp_path: Path, start_app: StartApp, connect: Callable[[ServiceProcess], httpx.Client]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory's parent should be\n")
    log_dir = blocker / "logs"

    app = start_app("app-unwritable-logs", LOG_DIR=str(log_dir))
    http = connect(app)
    health = http.get("/health")
    generated = http.post("/generate", json=generate_body("Where do my logs go?", max_tokens=8))

    assert health.status_code == 200
    assert generated.status_code == 200, generated.text
    assert wait_until(lambda: " | POST /generate | " in app.stdout_path.read_text(), 10.0)
    stdout = app.stdout_path.read_text()
    warnings = [line for line in stdout.splitlines() if "File log is off" in line]
    assert len(warnings) == 1, stdout
    assert f"cannot write {log_dir / 'server_logs.txt'} (NotADirectoryError" in warnings[0]
    assert app.running
