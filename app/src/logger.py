"""Logging setup (queue-backed, redacted) and the request logging middleware (pure ASGI)."""

from __future__ import annotations

import logging
import logging.handlers
import queue
import random
import re
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.excerpt import MAX_LOGGED_CHARS, cut
from src.log_sink import LOG_FILE_NAME, LogSink, RotatingFile
from src.redaction import Redactor
from src.services.base.exceptions import UpstreamError
from src.services.base.timing import now

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

logger = logging.getLogger(__name__)


class RedactingFilter(logging.Filter):
    """Removes secrets and Authorization values from the final text of every record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.redact = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        record.msg = self.redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


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


def setup_logging(
    log_dir: Path,
    *,
    secrets: Iterable[str],
    level: str = "INFO",
    max_bytes: int = 10 * 1024 * 1024,
    backup_count: int = 5,
    rotate: bool = True,
) -> LoggingHandle:
    """Route every log record through a queue to the sink thread (log_sink.py), so that
    formatting, redaction and file writes never run on the event loop.

    The caller (the lifespan) must stop the returned handle at shutdown.
    """
    # What the logging HOWTO suggests for speed: no caller lookup (a stack walk per record),
    # no thread or process names, none of which our format shows.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    redactor = Redactor(secrets)
    file = _open_log_file(log_dir / LOG_FILE_NAME, max_bytes, backup_count, rotate)
    sink = LogSink(records, redactor, None if isinstance(file, OSError) else file)
    queue_handler = _UnformattedQueueHandler(records)

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
    sink.start()
    if isinstance(file, OSError):
        logger.warning(
            "File log is off: cannot write %s (%s: %s). Logging to stdout only; "
            "make LOG_DIR writable by this process to keep a log file.",
            log_dir / LOG_FILE_NAME,
            type(file).__name__,
            file.strerror or file,
        )
    return LoggingHandle(sink, queue_handler)


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


class LoggingHandle:
    """What setup_logging installed, so the lifespan can flush and remove it at shutdown."""

    def __init__(self, sink: LogSink, queue_handler: logging.handlers.QueueHandler) -> None:
        self.sink = sink
        self.queue_handler = queue_handler

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.queue_handler)
        self.sink.stop()  # drains the queue: every record is written before we return


class RequestLoggingMiddleware:
    """One log line per HTTP request, an X-Request-ID on every response, a JSON 500 for crashes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope) or f"{random.getrandbits(128):032x}"
        scope.setdefault("state", {})["request_id"] = request_id
        request_id_header = (REQUEST_ID_HEADER, request_id.encode())
        started = now()
        status_code = 500
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                status_code = message["status"]
                response_started = True
                # No route of ours sets this header, so it is added, not replaced.
                message["headers"] = [*message.get("headers", ()), request_id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            _log_request(scope, started, 500, exc)
            if response_started:
                raise  # a stream broke mid-way: let the server drop the connection
            await _send_internal_error(send_with_request_id, request_id)
            return
        _log_request(scope, started, status_code, scope["state"].get("error"))


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None


def _log_request(scope: Scope, started: float, status_code: int, error: Any) -> None:
    endpoint = scope.get("endpoint")
    handler = getattr(endpoint, "__name__", "-")
    line = "%s | %s %s | handler=%s | time=%.4fs | status_code=%d"
    path = cut(scope["path"], MAX_LOGGED_CHARS)
    args: tuple[Any, ...] = (scope["method"], path, handler, now() - started)
    if isinstance(error, UpstreamError):
        # Not our fault: the message is enough, a traceback would only be noise.
        message = cut(str(error), MAX_LOGGED_CHARS)
        logger.error(line + " | %s: %s", "ERROR", *args, status_code, type(error).__name__, message)
    elif isinstance(error, BaseException) and status_code >= 500:
        logger.error(line, "ERROR", *args, status_code, exc_info=error)
    elif status_code >= 400:
        detail = (
            f" | {type(error).__name__}: {cut(str(error), MAX_LOGGED_CHARS)}"
            if isinstance(error, BaseException)
            else ""
        )
        logger.warning(line + "%s", "CLIENT_ERROR", *args, status_code, detail)
    else:
        logger.info(line, "OK", *args, status_code)


async def _send_internal_error(send: Send, request_id: str) -> None:
    body = (
        b'{"detail":"Internal server error","error":"InternalServerError","request_id":"'
        + request_id.encode()
        + b'"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
