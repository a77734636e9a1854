"""One log format for everything the process writes to stderr: the app's lines, uvicorn's, and
Python warnings (Pillow's DecompressionBombWarning among them), as JSON lines, or as text for a
person at a terminal (``BNN_LOG_FORMAT=text``).

A record may carry structured fields (``logger.info("...", extra={"fields": {...}})``): JSON puts
them at the top level of the line, text appends them as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_HANDLER_NAME = "bnn-stderr"


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "pid", "message", **fields}`` on one line; an exception as
    ``exception``. ``pid`` tells the workers of one server apart."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``ts LEVEL [pid] logger: message key=value ...``, for humans."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = "".join(f" {k}={v}" for k, v in fields.items() if v is not None)
        text = (
            f"{_timestamp(record)} {record.levelname:<7} [{record.process}] {record.name}: {record.getMessage()}{extra}"
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(level: str, fmt: str = "json") -> None:
    """Route every logger (``bnn.*``, ``uvicorn.*``, ``py.warnings``) to one stderr handler in
    ``fmt``; idempotent (a second call replaces the handler, e.g. another app in the same process)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and worse
    for name in ("bnn", "uvicorn", "uvicorn.error", "service"):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        logger.handlers.clear()  # uvicorn's own text handlers, if it installed any
        logger.propagate = True
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger, formatted like the rest
