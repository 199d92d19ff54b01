"""Ids that every log line written during a request or a job carries.

The HTTP binding binds the request id, the in-process worker binds the job id, queue and
worker id (:func:`log_context`); :class:`ContextFilter`, installed on a log handler, copies
whichever are bound onto each record as ``request_id``, ``job_id``, ``queue`` and
``worker_id``. They live in a :mod:`contextvars` variable, so concurrent requests and jobs on
one event loop never see each other's ids.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType

__all__ = ["FIELDS", "ContextFilter", "bind", "current", "log_context", "loggable_text"]

#: The fields a record may carry, in the order they are printed.
FIELDS = ("request_id", "job_id", "queue", "worker_id")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str] | None] = ContextVar("ojs_log_context", default=None)


def current() -> Mapping[str, str]:
    """The ids bound in the current context."""
    return _context.get() or _EMPTY


def _loggable(fields: Mapping[str, str | None]) -> dict[str, str]:
    # Ids may come from clients: one that could forge a text log line (a newline, a control
    # character) or flood it is left out rather than logged.
    return {k: v for k, v in fields.items() if v is not None and len(v) <= 256 and v.isprintable()}


def loggable_text(value: str, limit: int = 512) -> str:
    """``value`` safe to print in a text log line: control characters escaped (a client's
    ``%0A`` in a path cannot start a forged line), at most ``limit`` characters."""
    if not value.isprintable():
        value = value.encode("unicode_escape").decode("ascii")
    return value if len(value) <= limit else value[:limit] + "..."


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Bind ``fields`` (``None`` values skipped) for the code run inside the block."""
    token = _context.set({**current(), **_loggable(fields)})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> None:
    """Bind ``fields`` until the enclosing :func:`log_context` ends (or the task does).

    For a request handler that learns an id from the body: the request's log lines written
    after it, its access-log line included, carry the id.
    """
    _context.set({**current(), **_loggable(fields)})


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (an ``extra=`` value given to the call wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record``; never drops it."""
        for key, value in current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
