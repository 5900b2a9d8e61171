"""Logging setup: queue-backed and redacted, written by the sink thread (log_sink.py).

The request logging middleware is api/gate/request_log.py: this module is imported by the
benchmark runner process too, which has no requests."""

from __future__ import annotations

import logging
import logging.handlers
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from src.log_sink import LOG_FILE_NAME, LogSink, RotatingFile
from src.redaction import Redactor

if TYPE_CHECKING:
    from src.config import Settings

logger = logging.getLogger(__name__)


class _UnformattedQueueHandler(logging.handlers.QueueHandler):
    """Queues the record as it is: QueueHandler.prepare would format it on the event loop.

    Safe here because the queue never leaves the process and our log arguments are immutable
    values (strings, numbers, exceptions).
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle takes the handler's lock around emit; a SimpleQueue needs none.
        if self.filter(record):
            self.enqueue(record)
            return True
        return False


def setup_logging_from(settings: Settings, *, rotate: bool = True) -> LoggingHandle:
    """Route every log record through a queue to the sink thread (log_sink.py), so that
    formatting, redaction and file writes never run on the event loop: LOG_DIR, LOG_LEVEL,
    LOG_MAX_BYTES and LOG_BACKUP_COUNT as the settings say, the file rotated if `rotate`.

    The caller (the lifespan, a runner) must stop the returned handle at shutdown.
    """
    # What the logging HOWTO suggests for speed: no caller lookup (a stack walk per record),
    # no thread or process names, none of which our format shows.
    logging._srcfile = None
    for flag in ("logThreads", "logProcesses", "logMultiprocessing"):
        setattr(logging, flag, False)
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    path = settings.log_dir / LOG_FILE_NAME
    file = _open_log_file(path, settings.log_max_bytes, settings.log_backup_count, rotate)
    sink = LogSink(
        records, Redactor(settings.secrets()), None if isinstance(file, OSError) else file
    )
    queue_handler = _UnformattedQueueHandler(records)
    _route_records_to(queue_handler, settings.log_level)
    sink.start()
    if isinstance(file, OSError):
        logger.warning(
            "File log is off: cannot write %s (%s: %s). Logging to stdout only; "
            "make LOG_DIR writable by this process to keep a log file.",
            path,
            type(file).__name__,
            file.strerror or file,
        )
    return LoggingHandle(sink, queue_handler)


def _route_records_to(queue_handler: logging.handlers.QueueHandler, level: str) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, logging.handlers.QueueHandler)]:
        root.removeHandler(old)  # a previous app instance in the same process (tests)
    root.addHandler(queue_handler)
    root.setLevel(level.upper())
    # Our middleware writes one line per request; uvicorn's access log would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def _open_log_file(
    path: Path, max_bytes: int, backup_count: int, rotate: bool
) -> RotatingFile | OSError:
    """The log file, or why it cannot be had: an unwritable LOG_DIR (a volume owned by another
    user, a read-only mount) must cost the file log, never the service."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return RotatingFile(path, max_bytes, backup_count, rotate)
    except OSError as exc:
        return exc


@dataclass(frozen=True)
class LoggingHandle:
    """What setup_logging_from installed, so the lifespan can flush and remove it at shutdown."""

    sink: LogSink
    queue_handler: logging.handlers.QueueHandler

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.queue_handler)
        self.sink.stop()  # drains the queue: every record is written before we return
