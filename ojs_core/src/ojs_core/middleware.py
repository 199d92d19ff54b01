"""Middleware chains (OJS core §9, ojs-middleware.md): named, ordered, immutable while they run.

One class serves both chains OJS defines:

* the **enqueue chain** (:attr:`ojs_core.client.Client.middleware`): each middleware is called as
  ``await mw(envelope, next)`` with the job's enqueue request (a ``dict`` with its ``id``
  already assigned) and returns ``await next(envelope)`` (possibly after changing the envelope),
  ``None`` to drop the job silently, or raises to abort the enqueue;
* the **execution chain** (:attr:`ojs_core.worker.Worker.middleware`): nested wrappers around
  the handler, called as ``await mw(ctx, next)`` with the :class:`~ojs_core.worker.JobContext`;
  what ``next`` returns is the handler's result, and an exception propagates outwards until the
  worker turns it into a failed attempt.

The first middleware added is the outermost one. Every mutation (``add``, ``prepend``,
``insert_before``, ``insert_after``, ``remove``) replaces the chain's tuple of entries under a
lock, and :meth:`MiddlewareChain.run` takes that tuple once, so a run in progress never sees a
change made while it runs and the chain may be edited from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

import attrs

__all__ = ["Middleware", "MiddlewareChain", "MiddlewareEntry", "Next"]

T = TypeVar("T")
R = TypeVar("R")

#: The rest of the chain (and finally the terminal step) as seen by one middleware.
Next = Callable[[T], Awaitable[R]]
#: A middleware: ``async def mw(value, next) -> result``.
Middleware = Callable[[T, Callable[[T], Awaitable[R]]], Awaitable[R]]


@attrs.frozen
class MiddlewareEntry(Generic[T, R]):
    """One named middleware of a chain."""

    name: str
    fn: Middleware[T, R]


def _name_of(fn: object, name: str | None) -> str:
    if name is not None:
        if not isinstance(name, str) or not name:
            raise ValueError("a middleware name must be a non-empty string")
        return name
    explicit = getattr(fn, "name", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    derived = getattr(fn, "__name__", None) or type(fn).__name__
    return str(derived)


class MiddlewareChain(Generic[T, R]):
    """An ordered list of named middleware; see the module docstring for the calling convention.

    Names default to the middleware's ``name`` attribute, else its ``__name__``; they must be
    unique within a chain. :meth:`add` and :meth:`prepend` return the middleware, so both work as
    decorators::

        @client.middleware.add
        async def stamp(job, next):
            job.setdefault("meta", {})["source"] = "billing"
            return await next(job)
    """

    def __init__(self) -> None:
        self._entries: tuple[MiddlewareEntry[T, R], ...] = ()
        self._lock = threading.Lock()

    # -- inspection -----------------------------------------------------------------------

    def snapshot(self) -> tuple[MiddlewareEntry[T, R], ...]:
        """The entries as they are now, outermost first (an immutable tuple)."""
        return self._entries

    @property
    def names(self) -> list[str]:
        """The names of the middleware, outermost first."""
        return [e.name for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[MiddlewareEntry[T, R]]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return any(e.name == name for e in self._entries)

    # -- the five chain operations --------------------------------------------------------

    def _insert(
        self, position: Callable[[list[str]], int], fn: Middleware[T, R], name: str | None
    ) -> Middleware[T, R]:
        entry: MiddlewareEntry[T, R] = MiddlewareEntry(_name_of(fn, name), fn)
        with self._lock:
            names = [e.name for e in self._entries]
            if entry.name in names:
                raise ValueError(f"a middleware named {entry.name!r} is already in the chain")
            index = position(names)
            entries = list(self._entries)
            entries.insert(index, entry)
            self._entries = tuple(entries)
        return fn

    @staticmethod
    def _index(names: list[str], name: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            raise KeyError(f"no middleware named {name!r} in the chain") from None

    def add(self, fn: Middleware[T, R], name: str | None = None) -> Middleware[T, R]:
        """Append ``fn`` (it becomes the innermost middleware); returns ``fn``."""
        return self._insert(len, fn, name)

    def prepend(self, fn: Middleware[T, R], name: str | None = None) -> Middleware[T, R]:
        """Insert ``fn`` first (it becomes the outermost middleware); returns ``fn``."""
        return self._insert(lambda _: 0, fn, name)

    def insert_before(
        self, existing: str, fn: Middleware[T, R], name: str | None = None
    ) -> Middleware[T, R]:
        """Insert ``fn`` just before the middleware named ``existing`` (``KeyError`` if absent)."""
        return self._insert(lambda names: self._index(names, existing), fn, name)

    def insert_after(
        self, existing: str, fn: Middleware[T, R], name: str | None = None
    ) -> Middleware[T, R]:
        """Insert ``fn`` just after the middleware named ``existing`` (``KeyError`` if absent)."""
        return self._insert(lambda names: self._index(names, existing) + 1, fn, name)

    def remove(self, name: str) -> Middleware[T, R]:
        """Take the middleware named ``name`` out of the chain and return it (``KeyError`` if
        absent)."""
        with self._lock:
            names = [e.name for e in self._entries]
            index = self._index(names, name)
            entry = self._entries[index]
            self._entries = self._entries[:index] + self._entries[index + 1 :]
        return entry.fn

    def clear(self) -> None:
        """Remove every middleware."""
        with self._lock:
            self._entries = ()

    # -- running --------------------------------------------------------------------------

    async def run(self, value: T, terminal: Callable[[T], Awaitable[R]]) -> R:
        """Call the chain as it is now around ``terminal``; later edits do not affect this run.

        Each middleware receives ``value`` (as passed on by the middleware outside it) and a
        ``next`` that runs the rest of the chain and then ``terminal``.
        """
        entries = self._entries

        def step(index: int) -> Callable[[T], Awaitable[R]]:
            if index == len(entries):
                return terminal
            fn = entries[index].fn
            rest = step(index + 1)

            async def call(v: T) -> R:
                return await fn(v, rest)

            return call

        return await step(0)(value)
