"""``ojs-server``'s log output: ``--log-format text|json`` and the ids on every line.

Both formats carry the ids bound by :mod:`ojs_core.logcontext` (request id, job id, queue,
worker id) on every line that has them. JSON lines follow the observability spec's field
names (§9.1: ``timestamp``, ``level``, ``message``, ``ojs.job.id``, ``ojs.job.queue``,
``ojs.worker.id``) plus ``logger`` and ``request_id``; a failed attempt adds
``ojs.job.type``, ``ojs.job.attempt`` and ``error.type``, access-log lines the request's
``http.*`` fields.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from ojs_core.logcontext import FIELDS, ContextFilter

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")

#: Record attribute -> JSON key (the spec's names where it has one).
_JSON_KEYS = {
    "request_id": "request_id",
    "job_id": "ojs.job.id",
    "queue": "ojs.job.queue",
    "worker_id": "ojs.worker.id",
}
#: Attributes some lines carry (``extra=``): the worker's failure line, the access log.
_EXTRA_KEYS = {
    "job_type": "ojs.job.type",
    "attempt": "ojs.job.attempt",
    "error_type": "error.type",
    **{key: key for key in ("http.method", "http.route", "http.path", "http.status")},
    "http.duration_ms": "http.duration_ms",
}
_LEVELS = {"WARNING": "warn", "CRITICAL": "error"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        body: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": _LEVELS.get(record.levelname, record.levelname.lower()),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attr, key in _JSON_KEYS.items():
            value = getattr(record, attr, None)
            if value is not None:
                body[key] = value
        for attr, key in _EXTRA_KEYS.items():
            value = getattr(record, attr, None)
            if value is not None:
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request_id=... job_id=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as one text line (plus a traceback, if any)."""
        text = super().format(record)
        ids = [f"{k}={v}" for k in FIELDS if (v := getattr(record, k, None)) is not None]
        if not ids:
            return text
        head, sep, rest = text.partition("\n")
        return f"{head} [{' '.join(ids)}]{sep}{rest}"


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send every log record to stderr in ``fmt``, with the context ids, from ``level`` up."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
