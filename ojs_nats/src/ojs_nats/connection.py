"""The connection to NATS: connect (starting the embedded server first), health, close.

Every other part of the backend reaches NATS through one :class:`Connection`: its ``nc``,
``js`` and ``pipe`` properties raise :class:`BackendUnavailableError` while it is not open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.client import JetStreamContext

import nats
from ojs_core.backend import BackendHealth
from ojs_core.clock import SystemClock
from ojs_core.errors import BackendUnavailableError
from ojs_core.ratelog import RateLimitedLog

from .embedded import EmbeddedNatsServer
from .jetstream import Op, Pipeline
from .lazy import LazyPublisher

__all__ = ["CONNECT_WAIT_S", "MIN_SERVER_VERSION", "Connection", "describe_sync", "redact"]

log = logging.getLogger("ojs.nats")

#: Atomic batches, message schedules and counters arrived in nats-server 2.12.
MIN_SERVER_VERSION = (2, 12)
#: JetStream API requests (stream and consumer management, direct gets) wait this long.
JS_API_TIMEOUT_S = 10.0
#: How long :meth:`Connection.open` keeps trying to reach a server before it gives up.
CONNECT_WAIT_S = 30.0
#: How long :meth:`Connection.close` lets nats-py drain (callbacks finish what is queued,
#: publishes flush) before it closes outright. nats-py's drain also waits until every queued
#: message is *read*, which never happens on a reply inbox whose reader gave up (a request
#: cancelled by a stopping worker): without a bound, a SIGTERM'd process hung for its 30 s
#: ``drain_timeout`` and then had ``CancelledError`` raised out of ``drain()``.
CLOSE_DRAIN_S = 5.0


class Connection:
    """One NATS connection with its JetStream context and write pipeline."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        embedded: EmbeddedNatsServer | None = None,
        connect_options: dict[str, Any] | None = None,
        connect_wait_s: float = CONNECT_WAIT_S,
        monitor_url: str | None = None,
    ) -> None:
        self.servers = list(servers)
        self.monitor_url = monitor_url
        #: The server's store flush policy (``always``, an interval such as ``1s``, or
        #: ``unknown``), reported by :meth:`health`; learnt on :meth:`open`.
        self.sync_policy = "unknown"
        self.embedded = embedded
        self.connect_options = connect_options or {}
        self.connect_wait_s = connect_wait_s
        #: The last connection error (for the start-up failure message), never logged raw.
        self._last_error: Exception | None = None
        self._log = RateLimitedLog(log, SystemClock())
        #: Set while closing: a connection-closed report is then the close itself.
        self.closing = False
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pipe: Pipeline | None = None
        self._lazy: LazyPublisher | None = None
        #: Called after every reconnect: requests the server held for the old connection
        #: (a held pull) are gone with it.
        self.reconnected: list[Callable[[], None]] = []

    @property
    def nc(self) -> Client:
        """The live NATS connection."""
        if self._nc is None:
            raise BackendUnavailableError("NATS backend is not open")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        if self._js is None:
            raise BackendUnavailableError("NATS backend is not open")
        return self._js

    @property
    def pipe(self) -> Pipeline:
        """Pipelined publishes on the live connection."""
        if self._pipe is None:
            raise BackendUnavailableError("NATS backend is not open")
        return self._pipe

    @property
    def lazy(self) -> LazyPublisher:
        """Publishes nobody waits for, sent with the connection's next write."""
        if self._lazy is None:
            raise BackendUnavailableError("NATS backend is not open")
        return self._lazy

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` has not run since."""
        return self._nc is not None

    @property
    def connected(self) -> bool:
        """``False`` while open but disconnected (reconnecting); ``True`` otherwise."""
        return self._nc is None or self._nc.is_connected

    async def commit(self, ops: Sequence[Op]) -> list[int]:
        """One op pipelined, several as one atomic batch (:func:`jetstream.commit`)."""
        return await self.pipe.commit(ops)

    async def publish_all(self, ops: Sequence[Op]) -> list[int]:
        """Store every op (each on its own, all in flight together); raise if any failed, else
        their stream sequences."""
        outcomes = await self.pipe.publish_each(ops)
        seqs: list[int] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            seqs.append(outcome)
        return seqs

    async def open(self) -> None:
        """Connect, starting the embedded server first (if any); check the server's version."""
        if self._nc is not None:
            return
        if self.embedded is not None:
            self.servers = [await self.embedded.start()]
        options: dict[str, Any] = {
            "name": "ojs-python",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "allow_reconnect": True,
            "connect_timeout": 5,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        options.update(self.connect_options)
        if self.embedded is not None:
            options.update(self.embedded.connect_options)
        try:
            # nats-py retries the first connection forever (it reconnects forever): bound it.
            nc = await asyncio.wait_for(
                nats.connect(servers=self.servers, **options), self.connect_wait_s
            )
        except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
            if self.embedded is not None:
                await self.embedded.stop()
            reason = self._last_error or exc
            raise BackendUnavailableError(
                f"could not connect to NATS at {', '.join(redact(s) for s in self.servers)} "
                f"within {self.connect_wait_s:g} s: {reason!r}"
            ) from None
        version = nc.connected_server_version
        if (version.major, version.minor) < MIN_SERVER_VERSION:
            await nc.close()
            raise RuntimeError(
                f"nats-server {version} is too old: ojs-nats needs nats-server >= "
                f"{MIN_SERVER_VERSION[0]}.{MIN_SERVER_VERSION[1]} (atomic batches, message "
                "schedules, counters)"
            )
        self.sync_policy = await self._learn_sync_policy()
        # What a host crash can lose depends on it (docs/reliability.md).
        log.info("nats-server store sync: %s", self.sync_policy)
        self._nc = nc
        self._js = nc.jetstream(timeout=JS_API_TIMEOUT_S)
        self._pipe = Pipeline(nc, self._js)
        self._lazy = LazyPublisher(nc)
        self.closing = False

    async def close(self) -> None:
        """Drain the connection (in-flight publishes get their acknowledgements), then stop
        the embedded server, if any."""
        self.closing = True
        if self._lazy is not None:
            self._lazy.close()  # the drain writes what waits (and what is queued meanwhile)
        if self._nc is not None:
            await _drain_or_close(self._nc)
            self._nc = None
            self._js = None
            self._lazy = None
        if self._pipe is not None:
            await self._pipe.close()
            self._pipe = None
        if self.embedded is not None:
            await self.embedded.stop()

    async def health(self, name: str) -> BackendHealth:
        """A round trip to the server."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return BackendHealth(ok=False, name=name, error="not connected to NATS")
        started = time.perf_counter()
        try:
            await nc.flush(timeout=2)
        except Exception as exc:
            return BackendHealth(ok=False, name=name, error=repr(exc))
        return BackendHealth(
            ok=True,
            name=name,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            details={"server": _where(nc), "sync": self.sync_policy},
        )

    async def _learn_sync_policy(self) -> str:
        """The embedded server's policy, or what an external server's monitoring endpoint
        (``monitor_url``) says; ``unknown`` otherwise (NATS clients cannot ask)."""
        if self.embedded is not None:
            return self.embedded.sync
        if not self.monitor_url:
            return "unknown"
        try:
            varz = await asyncio.to_thread(_get_json, self.monitor_url.rstrip("/") + "/varz")
            config = varz["jetstream"]["config"]
        except Exception as exc:
            log.warning("could not read the sync policy from %s: %r", redact(self.monitor_url), exc)
            return "unknown"
        return describe_sync(config)

    async def _on_error(self, exc: Exception) -> None:
        # nats-py reports, among others, ordered consumers it cannot recreate after a reset
        # deleted their stream; the watcher restarts by itself. Failed (re)connection attempts
        # come every reconnect wait: at a bounded rate, and only at debug before the first
        # connection (open() reports the last one if it gives up).
        self._last_error = exc
        if (
            isinstance(exc, nats.js.errors.NotFoundError)
            or (self.closing and isinstance(exc, nats.errors.ConnectionClosedError))
            or self._nc is None
        ):
            log.debug("nats: %r", exc)
        else:
            self._log.warning(type(exc).__name__, "nats: %r", exc)

    async def _on_disconnected(self) -> None:
        if self.closing:
            log.debug("disconnected from NATS (closing)")
        else:
            log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        for callback in self.reconnected:
            callback()


def describe_sync(config: dict[str, Any]) -> str:
    """``always`` or the flush interval (``2m``, ``1s``, ``500ms``) of a varz JetStream config."""
    if config.get("sync_always"):
        return "always"
    nanos = int(config.get("sync_interval") or 120 * 10**9)  # the server's default: 2 min
    millis = nanos // 10**6
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def redact(url: str) -> str:
    """A server URL without the user, password or token it may carry."""
    scheme, sep, rest = url.rpartition("://")
    host = rest.rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}"


def _where(nc: Client) -> str:
    """``host:port`` of the connected server, never the credentials a URL may carry."""
    url = nc.connected_url
    if url is None or url.hostname is None:
        return ""
    return f"{url.hostname}:{url.port}" if url.port else url.hostname


async def _drain_or_close(nc: Client) -> None:
    """Drain ``nc`` for at most :data:`CLOSE_DRAIN_S`, then close it outright."""
    drain = asyncio.ensure_future(nc.drain())
    try:
        await asyncio.wait_for(asyncio.shield(drain), CLOSE_DRAIN_S)
    except TimeoutError:
        log.warning("NATS connection did not drain within %g s; closing it", CLOSE_DRAIN_S)
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
    except asyncio.CancelledError:
        # Whoever closes us is being cancelled: end the drain rather than leave it running
        # unbounded in the background, close, and let the cancellation go on.
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        if not nc.is_closed:
            await nc.close()
        raise
    except Exception as exc:  # closed or reconnecting: nothing left to drain
        log.debug("NATS drain skipped: %r", exc)
    if not nc.is_closed:
        await nc.close()
