"""Logging set-up: plain text for people, or one JSON object per line for log pipelines, each
line carrying the id of the request it belongs to (a context variable set per request).

Every line leaves through one of these formatters, rnnserve's and uvicorn's alike (uvicorn's
loggers only propagate here: serve.py gives uvicorn no logging config of its own), and each
formatter passes the finished text through `redact`: no API key reaches a log line, whether it
came in the message, its arguments, an extra field or a traceback."""

from __future__ import annotations

import contextvars
import itertools
import logging
import secrets
import time
from typing import Any

import orjson

from rnnserve.redact import redact

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# A new request id: this process's random prefix and a counter (uuid4 read the OS's random
# source on every request).
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count()


def new_request_id() -> str:
    """An id for a request (HTTP or gRPC) whose caller sent none."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message", "request_id"?, ...extra fields, "exc"?}."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key in ("method", "path", "status", "duration_ms", "model", "client"):
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time level logger [request id]: message` (then any traceback), keys redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RequestIdFilter(logging.Filter):
    """Adds the request id to text log lines too."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        record.rid = f" [{rid}]" if rid else ""
        return True


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
        handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
