"""A backend wrapper that makes concurrent service operations interleave.

Against a networked store every backend call awaits, so operations started together with
``asyncio.gather`` interleave between calls. An in-process backend may never yield; wrapping it
in :class:`InterleavingBackend` gives other tasks a turn before every call (each call itself
stays as atomic as the backend makes it), so the races a networked deployment would see also
happen in tests.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Generator
from typing import Any, cast

from ..backend import Backend

__all__ = ["InterleavingBackend", "interleaving"]


@types.coroutine
def _yield_to_loop() -> Generator[None, None, None]:
    """Give other tasks a turn (what ``asyncio.sleep(0)`` does, without any timer)."""
    yield


class InterleavingBackend:
    """Delegates to ``inner``, yielding to the event loop before each coroutine method."""

    def __init__(self, inner: Backend, *, yields: int = 1) -> None:
        self._inner = inner
        self._yields = yields
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        method: Callable[..., Any] = attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            for _ in range(self._yields):
                await _yield_to_loop()
            return await method(*args, **kwargs)

        return call


def interleaving(backend: Backend, *, yields: int = 1) -> Backend:
    """``backend`` wrapped in an :class:`InterleavingBackend`, typed as a Backend."""
    return cast(Backend, InterleavingBackend(backend, yields=yields))
