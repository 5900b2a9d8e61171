"""A LOG_DIR deleted under a running service: the log file comes back with its folder."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest

from src.log_sink import LOG_FILE_NAME
from src.logger import setup_logging_from
from tests.helpers.app import make_settings

DEADLINE = 20.0


def wait_for_line(path: Path, text: str, log: logging.Logger) -> bool:
    """Log `text` again and again until the file shows it (bounded)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        log.warning(text)
        time.sleep(0.1)
        if path.exists() and text in path.read_text(encoding="utf-8"):
            return True
    return False


@pytest.mark.parametrize("rotate", [True, False], ids=["api-process", "runner-process"])
def test_the_log_file_is_reopened_when_its_folder_comes_back(tmp_path: Path, rotate: bool) -> None:
    settings = make_settings(tmp_path, log_max_bytes=4096, log_backup_count=1)
    log_dir = settings.log_dir
    log_file = log_dir / LOG_FILE_NAME
    handle = setup_logging_from(settings, rotate=rotate)
    log = logging.getLogger("tests.log_reopen")
    try:
        assert wait_for_line(log_file, "before the folder went", log)
        shutil.rmtree(log_dir)
        for index in range(100):  # past max_bytes: a rotation is due while the folder is gone
            log.warning("while the folder is gone %d %s", index, "x" * 80)
        time.sleep(0.5)
        log_dir.mkdir()
        back = wait_for_line(log_file, "after the folder came back", log)
    finally:
        handle.stop()

    assert back, f"{log_file} never got a line after its folder came back"
