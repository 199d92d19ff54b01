"""The ``memory`` entry point of the ``ojs.backends`` plugin group."""

from __future__ import annotations

from ojs_core.plugins import BackendOptions

from .backend import MemoryBackend

__all__ = ["create_backend"]


def create_backend(url: str, options: BackendOptions) -> MemoryBackend:
    """A fresh :class:`MemoryBackend` for ``memory`` or ``memory://`` (nothing in the URL is used).

    ``options.extra["max_events"]`` bounds the event log.
    """
    max_events = options.extra.get("max_events")
    if max_events is not None:
        return MemoryBackend(max_events=int(max_events))
    return MemoryBackend()
