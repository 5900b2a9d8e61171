"""Log forging, against a live process: whatever a caller puts in a path or a model id, one
request writes exactly one line of printable text, in the log file and on stdout."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.helpers.e2e import MODEL
from tests.helpers.processes import ServiceProcess, wait_until

FORGED_LINE = (
    "2026-11-27%2012:25:00,000%20-%20INFO%20-%20OK%20|%20GET%20/models%20|%20"
    "handler=get_models%20|%20time=0.0010s%20|%20status_code=200"
)
HOSTILE_PATHS = [
    f"/models%0a{FORGED_LINE}%0a",
    f"/models%0d%0a{FORGED_LINE}",
    "/models%0dOVERWRITTEN",
    "/models%1b[31mRED%1b[0m",
    "/models%c2%85NEL",
    "/models%e2%80%a8LINE-SEPARATOR",
    "/models%e2%80%a9PARAGRAPH-SEPARATOR",
    "/models%c2%9b31mCSI",
    "/models%0bVT%0cFF%00NUL%7fDEL",
    # The benchmark id is echoed into the error the log line carries.
    "/benchmarks/x%0a2026-11-27%2012:25:00,000%20-%20INFO%20-%20OK%20|%20GET%20models",
    "/benchmarks/%1b]0;title%07%1b[2J",
    "/benchmarks/%e2%80%a8x",
]
# Every character Python's str.splitlines() breaks at: what log shippers break at too.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Unicode's line and paragraph separators and its control characters (C0, DEL, C1).
FORBIDDEN_IN_MODEL_IDS = ["\n", "\r", "\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\x85", "\x9b"]
FORBIDDEN_IN_MODEL_IDS += ["\u2028", "\u2029"]


def between(text: str, start: str, end: str) -> str:
    """The whole lines after the line that contains `start` and before the one with `end`."""
    first = text.index("\n", text.index(start)) + 1
    return text[first : text.rindex("\n", 0, text.index(end, first)) + 1]


def assert_one_printable_line_per_request(text: str, requests: int) -> None:
    lines = text.split("\n")
    assert lines[-1] == "", "the last line is unterminated"
    lines = lines[:-1]
    assert len(lines) == requests, "\n".join(lines)
    assert len(text.splitlines()) == requests, "a Unicode line break reached the log"
    assert not any(char in text for char in LINE_BREAKS.replace("\n", ""))
    for line in lines:
        assert line.isprintable(), repr(line)
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - \w+ - ", line), line
        assert " | GET /" in line, line
    assert "\n2026-11-27 12:25:00,000" not in text


def test_hostile_paths_write_one_printable_line_each_to_the_file_and_stdout(
    app: ServiceProcess, client: httpx.Client
) -> None:
    marker = uuid.uuid4().hex
    start, end = f"/e2e-forging-start/{marker}", f"/e2e-forging-end/{marker}"

    def stdout() -> str:
        return app.stdout_path.read_text(encoding="utf-8", errors="replace")

    client.get(start)
    for path in HOSTILE_PATHS:
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)
    client.get(end)

    assert wait_until(lambda: end in app.log_text() and end in stdout(), 5.0)
    for written in (app.log_text(), stdout()):
        assert_one_printable_line_per_request(between(written, start, end), len(HOSTILE_PATHS))


@pytest.mark.parametrize("char", FORBIDDEN_IN_MODEL_IDS, ids=lambda c: f"U+{ord(c):04X}")
def test_model_ids_with_line_breaks_or_controls_are_refused_on_every_endpoint(
    client: httpx.Client, char: str
) -> None:
    model = f"{MODEL}{char}forged"
    generate = client.post("/generate", json={"model": model, "prompt": "hi"})
    benchmark = client.post(
        "/benchmark",
        files={"prompt_file": ("prompts.txt", b"hi\n", "text/plain")},
        data={"model": [MODEL, model], "runs": "1"},
    )
    chat = client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )

    assert chat.status_code == 422, chat.text
    assert chat.json()["error"]["param"] == "model", chat.text
    for response in (generate, benchmark):
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"][-1] in ("model", "models", 1), error
