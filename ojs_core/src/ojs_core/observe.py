"""Hooks for observers of the job lifecycle.

Every event :class:`~ojs_core.service.JobService` publishes (``job.enqueued``, ``job.started``,
``job.completed``, ``job.failed``, ``job.retrying``, ``job.discarded``, ``job.cancelled``,
``job.expired``, ...) passes through one place, and each observer added to
``service.observers`` sees it there, as it is published. Metrics (:mod:`ojs_core.prometheus`)
and the recent-activity figures of queue stats (:mod:`ojs_core.activity`) are built on this,
so an embedder without the HTTP binding gets the same figures.

Observers run synchronously on the event loop, in the operation that caused the events: they
must be cheap and must not block. One that raises is logged and the others still run; an
operation never fails because of an observer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .model import Event

__all__ = ["EventObserver", "Observers"]

log = logging.getLogger("ojs.observe")

#: Called with each batch of events the service publishes (in the order they happened).
EventObserver = Callable[[Sequence[Event]], None]


class Observers:
    """The observers of one service; each sees every batch of events it publishes."""

    def __init__(self) -> None:
        self._items: tuple[EventObserver, ...] = ()

    def add(self, observer: EventObserver) -> None:
        """Start calling ``observer`` with every published batch."""
        self._items = (*self._items, observer)

    def remove(self, observer: EventObserver) -> None:
        """Stop calling ``observer`` (no error when it was not added)."""
        self._items = tuple(o for o in self._items if o is not observer)

    def __len__(self) -> int:
        return len(self._items)

    def notify(self, events: Sequence[Event]) -> None:
        """Hand ``events`` to every observer; a failing observer is logged, never raised."""
        for observer in self._items:
            try:
                observer(events)
            except Exception:
                log.exception("an event observer failed (%r)", observer)
