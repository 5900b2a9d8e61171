"""Where log records go: a thread that formats, redacts and writes them, in batches.

The event loop only creates a record and puts it on a queue. Formatting (message, time,
traceback), redaction, escaping and the file and stdout writes all happen here, in one thread:
a record is formatted once, and each batch costs one write and one flush per destination,
however many lines it holds. The thread collects a batch every FLUSH_SECONDS instead of
waiting on the queue: a waiting thread would be woken (two system calls) by every record.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
LOG_FILE_NAME = "server_logs.txt"
FLUSH_SECONDS = 0.02
# How often the log file's path is checked (deleted folder, another process's rotation), and how
# often a file that cannot be written is tried again.
REOPEN_SECONDS = 1.0
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


@dataclass(eq=False)
class RotatingFile:
    """Appends lines to a file; past `max_bytes` it is renamed to .1 (.1 to .2, ...).

    It tracks the size it wrote instead of asking the filesystem before every record, which
    is what logging.handlers.RotatingFileHandler does (and it formats each record twice).

    Every REOPEN_SECONDS it checks that its path still names the file it writes: a file deleted
    with its folder, or renamed by another process's rotation, is reopened as soon as the path
    can be created again. A failed write or rotation closes the file; later writes reopen it.
    """

    path: Path
    max_bytes: int
    backup_count: int
    rotate: bool
    _file: TextIO | None = field(default=None, init=False)
    _size: int = field(default=0, init=False)
    _checked_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._open()

    def write(self, lines: list[str]) -> None:
        """Whole lines; one write per file they land in. Raises OSError when the file cannot
        be had or written: those lines are not in the file, the next call tries again."""
        file = self._current()
        try:
            self._write(file, lines)
        except OSError:
            self._drop()
            raise

    def _write(self, file: TextIO, lines: list[str]) -> None:
        chunk: list[str] = []
        for line in lines:
            size = len(line) if line.isascii() else len(line.encode("utf-8"))
            if self.rotate and self._size and self._size + size > self.max_bytes:
                self._flush(file, chunk)
                chunk = []
                file = self._roll_over()
            chunk.append(line)
            self._size += size
        self._flush(file, chunk)

    @staticmethod
    def _flush(file: TextIO, chunk: list[str]) -> None:
        if chunk:
            file.write("".join(chunk))
            file.flush()

    def close(self) -> None:
        self._drop()

    def _open(self) -> TextIO:
        self._checked_at = time.monotonic()
        file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in _drop()
        self._file, self._size = file, file.tell()
        return file

    def _drop(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            # Its buffer may not be writable: that error was already reported.
            with contextlib.suppress(OSError):
                file.close()

    def _current(self) -> TextIO:
        file = self._file
        if time.monotonic() - self._checked_at < REOPEN_SECONDS:
            if file is None:
                raise FileNotFoundError(errno.ENOENT, "log file unavailable", str(self.path))
            return file
        if file is not None and self._still_at_path(file):
            self._checked_at = time.monotonic()
            return file
        self._drop()
        return self._open()

    def _still_at_path(self, file: TextIO) -> bool:
        try:
            named, held = os.stat(self.path), os.fstat(file.fileno())
        except OSError:
            return False
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _roll_over(self) -> TextIO:
        self._drop()
        if self.backup_count > 0:
            for index in range(self.backup_count - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        file = self._open()
        self._size = 0
        return file


@dataclass(eq=False)
class LogSink:
    """The consumer side of the log queue (see module docstring)."""

    records: queue.SimpleQueue[object]
    redact: Callable[[str], str]
    file: RotatingFile | None
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    _formatter: logging.Formatter = field(
        default_factory=lambda: logging.Formatter(LOG_FORMAT), init=False
    )
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _file_failing: bool = field(default=False, init=False)
    _second: int = field(default=-1, init=False)
    _stamp: str = field(default="", init=False)
    _thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-sink", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write every record queued so far, then end the thread and close the file."""
        self._stopping.set()
        self._thread.join()
        if self.file is not None:
            self.file.close()

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
        return escape_line(self.redact(text))

    def _run(self) -> None:
        while True:
            stopping = self._stopping.wait(FLUSH_SECONDS)
            lines = []
            while True:
                try:
                    record = self.records.get_nowait()
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
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed (a detached process): the file still gets the lines
        if self.file is None:
            return
        try:
            self.file.write(lines)
        except OSError as exc:
            if not self._file_failing:
                self._file_failing = True
                self._note(
                    f"Log file unavailable ({exc}): logging to stdout only, trying the file "
                    f"again every {REOPEN_SECONDS:g} s"
                )
            return
        if self._file_failing:
            self._file_failing = False
            self._note("Log file reopened: lines logged while it was unavailable are on stdout")

    def _note(self, text: str) -> None:
        """A line about the log itself, on stdout (and in the file once it is back)."""
        line = escape_line(f"{time.strftime('%Y-%m-%d %H:%M:%S')} - WARNING - {text}") + "\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass
        if self.file is not None and not self._file_failing:
            with contextlib.suppress(OSError):  # reported at the next batch
                self.file.write([line])
