"""An unwritable LOG_DIR costs the file log, never the service: stdout keeps every line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import respx

from src.log_sink import LOG_FILE_NAME
from tests.helpers.app import Serve, make_settings
from tests.helpers.openrouter import MODELS_BODY

pytestmark = pytest.mark.anyio

WARNING = re.compile(
    r"^.* - WARNING - File log is off: cannot write (\S+) \((\w+): (.+?)\)\.", re.M
)
REQUEST = re.compile(
    r" - INFO - OK \| GET /models \| handler=get_models \| .* status_code=200$", re.M
)


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory nobody can create, root included: its parent is a regular file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory was expected\n")
    return blocker / "logs"


async def test_unwritable_log_dir_still_serves_and_warns_once_on_stdout(
    tmp_path: Path,
    upstream: respx.MockRouter,
    serve: Serve,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_dir = unwritable_dir(tmp_path)
    upstream.get("/models").respond(json=MODELS_BODY)

    async with serve(make_settings(tmp_path, log_dir=log_dir)) as client:
        health = await client.get("/health")
        models = await client.get("/models")

    assert health.status_code == 200
    assert models.status_code == 200 and models.json()["count"] == 3
    stdout = capsys.readouterr().out
    warnings = WARNING.findall(stdout)
    assert warnings == [(str(log_dir / LOG_FILE_NAME), "NotADirectoryError", "Not a directory")]
    assert "LOG_DIR" in stdout
    # The request lines still reach stdout, which is what `docker logs` shows.
    assert len(REQUEST.findall(stdout)) == 1
    assert not log_dir.exists()


async def test_writable_log_dir_gets_the_file_and_no_warning(
    tmp_path: Path,
    upstream: respx.MockRouter,
    serve: Serve,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(tmp_path, log_dir=tmp_path / "fresh" / "logs")
    upstream.get("/models").respond(json=MODELS_BODY)

    async with serve(settings) as client:
        await client.get("/models")

    assert "File log is off" not in capsys.readouterr().out
    assert len(REQUEST.findall((settings.log_dir / LOG_FILE_NAME).read_text())) == 1
