"""Log lines for people (text) or for Loki and Elasticsearch (one JSON object per line)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from typing import Any

from pydantic_core import to_json

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JSONFormatter(logging.Formatter):
    """`time`, `level`, `logger` and `msg` on every line; a decision's fields beside them."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line["msg"] = "admission decided"
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return to_json(line).decode()


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with the date and time worked out once a second, not once a line: the decision
    log writes a line on every admission."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second, text = self._second
        if int(record.created) != second:
            second, text = int(record.created), time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, text)  # one assignment: other threads log too
        return self.default_msec_format % (text, record.msecs)


def configure(level: str, fmt: str) -> None:
    """Send every log line to stderr in `fmt` (`text` or `json`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if fmt == "json":
        # What escapes every handler, and Python's warnings, are lines too: JSON, not raw tracebacks.
        log = logging.getLogger("audit_webhook")
        sys.excepthook = lambda kind, exc, tb: log.critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))
        threading.excepthook = lambda a: log.critical(
            "uncaught %s in thread %s", a.exc_type.__name__, a.thread.name if a.thread else "?",
            exc_info=(a.exc_type, a.exc_value, a.exc_traceback))
        logging.captureWarnings(True)
    # Neither format shows the thread, the process or the source line of a call: not looking them
    # up for every record (the logging HOWTO's "Optimization") halves the cost of a decision line.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
