"""Request bodies, keys and log watching for the end-to-end tests."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tests.helpers.processes import ServiceProcess, wait_until

MODEL = "emulator/small"
UPSTREAM_KEY = "sk-e2e-secret-5f1c9a7e2b8d4c3a90"
INBOUND_KEY = "inbound-e2e-key"
INBOUND_AUTH = {"Authorization": f"Bearer {INBOUND_KEY}"}
# Every app of the e2e session makes this many attempts (the first included), waiting little.
RETRY_ATTEMPTS = 5
# Figures the e2e tests measured (load, disconnects, screenshots), printed when the run ends.
E2E_REPORT = pytest.StashKey[list[str]]()


def unique(prompt: str) -> str:
    """The prompt plus a marker nobody else sends: the emulator's per-prompt counters start at 0."""
    return f"{prompt} (e2e {uuid.uuid4().hex[:12]})"


def generate_body(prompt: str, *, max_tokens: int = 64, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, **extra}


class LogWatch:
    """What an app writes to its log file after the moment the watch is made.

    Log lines are written by a queue listener, after the response: a line of an earlier
    request may still be on its way. So the watch starts with a fence, a request for a unique
    path: once its line is in the file, every earlier line is too, and the watch reads from
    there.
    """

    def __init__(self, process: ServiceProcess, http: httpx.Client) -> None:
        self._process = process
        fence = f"/e2e-log-fence/{uuid.uuid4().hex}"
        http.get(fence)  # a 404, logged like any request
        marker = f" | GET {fence} | "
        assert wait_until(lambda: marker in process.log_text(), 5.0), "fence never logged"
        text = process.log_text()
        self._offset = text.index("\n", text.index(marker)) + 1

    def text(self) -> str:
        return self._process.log_text()[self._offset :]

    def wait_for(self, pattern: str, count: int = 1, seconds: float = 5.0) -> str:
        """The new text once `pattern` occurs `count` times in it."""
        found = wait_until(lambda: len(re.findall(pattern, self.text())) >= count, seconds)
        text = self.text()
        assert found, f"{pattern!r} not logged {count} times:\n{text}"
        return text

    def wait_for_request(self, method: str, path: str, count: int = 1) -> str:
        """The request line comes after every line the request caused (retries, errors)."""
        return self.wait_for(rf" \| {method} {re.escape(path)} \| handler=", count)


def wait_for_log(process: ServiceProcess, pattern: str, seconds: float = 5.0) -> str:
    """The whole log, startup included, once `pattern` is in it."""
    found = wait_until(lambda: re.search(pattern, process.log_text()), seconds)
    text = process.log_text()
    assert found, f"{pattern!r} not logged:\n{text}"
    return text
