"""Where log records go: a thread that formats, redacts and writes them, in batches.

The event loop only creates a record and puts it on a queue. Formatting (message, time,
traceback), redaction, escaping and the file and stdout writes all happen here, in one thread:
a record is formatted once, and each batch costs one write and one flush per destination,
however many lines it holds. The thread collects a batch every FLUSH_SECONDS instead of
waiting on the queue: a waiting thread would be woken (two system calls) by every record.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
LOG_FILE_NAME = "server_logs.txt"
FLUSH_SECONDS = 0.02
_NEWLINE = re.compile(r"\r\n|\r|\n")


def escape_line(text: str) -> str:
    """One line of printable text: line breaks become ` \\n `-style escapes, and every other
    control, separator or escape character becomes \\xNN or \\uNNNN, so that nothing a caller
    sends can start a forged line or reach a terminal as an escape sequence.
    """
    if text.isprintable():
        return text
    text = _NEWLINE.sub("\\\\n", text)
    return "".join(
        char
        if char.isprintable()
        else (f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")
        for char in text
    )


class RotatingFile:
    """Appends lines to a file; past `max_bytes` it is renamed to .1 (.1 to .2, ...).

    It tracks the size it wrote instead of asking the filesystem before every record, which
    is what logging.handlers.RotatingFileHandler does (and it formats each record twice).
    """

    def __init__(self, path: Path, max_bytes: int, backup_count: int, rotate: bool) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.rotate = rotate
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._size = self._file.tell()

    def write(self, lines: list[str]) -> None:
        """Whole lines; one write per file they land in."""
        chunk: list[str] = []
        for line in lines:
            size = len(line) if line.isascii() else len(line.encode("utf-8"))
            if self.rotate and self._size and self._size + size > self.max_bytes:
                self._flush(chunk)
                chunk = []
                self._roll_over()
            chunk.append(line)
            self._size += size
        self._flush(chunk)

    def _flush(self, chunk: list[str]) -> None:
        if chunk:
            self._file.write("".join(chunk))
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _roll_over(self) -> None:
        self._file.close()
        if self.backup_count > 0:
            for index in range(self.backup_count - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = 0


class LogSink:
    """The consumer side of the log queue (see module docstring)."""

    def __init__(
        self,
        records: queue.SimpleQueue[object],
        redact: Callable[[str], str],
        file: RotatingFile | None,
        stream: TextIO | None = None,
    ) -> None:
        self._records = records
        self._redact = redact
        self._file = file
        self._stream = stream or sys.stdout
        self._formatter = logging.Formatter(LOG_FORMAT)
        self._stopping = threading.Event()
        self._second = -1
        self._stamp = ""
        self._thread = threading.Thread(target=self._run, name="log-sink", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write every record queued so far, then end the thread and close the file."""
        self._stopping.set()
        self._thread.join()
        if self._file is not None:
            self._file.close()

    def line(self, record: logging.LogRecord) -> str:
        """LOG_FORMAT, with the time text made once per second, redacted and escaped."""
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        text = f"{self._stamp},{int(record.msecs):03d} - {record.levelname} - {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        return escape_line(self._redact(text))

    def _run(self) -> None:
        while True:
            stopping = self._stopping.wait(FLUSH_SECONDS)
            lines = []
            while True:
                try:
                    record = self._records.get_nowait()
                except queue.Empty:
                    break
                if isinstance(record, logging.LogRecord):
                    lines.append(self._safe_line(record) + "\n")
            if lines:
                self._write(lines)
            if stopping:
                return

    def _safe_line(self, record: logging.LogRecord) -> str:
        try:
            return self.line(record)
        except Exception as exc:  # a bad format string must not stop the logging thread
            return escape_line(f"Unformattable log record {record.msg!r}: {exc!r}")

    def _write(self, lines: list[str]) -> None:
        try:
            self._stream.write("".join(lines))
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed (a detached process): the file still gets the lines
        if self._file is not None:
            try:
                self._file.write(lines)
            except OSError as exc:
                self._file = None
                self._stream.write(
                    escape_line(f"Log file disabled after a write error: {exc}") + "\n"
                )
