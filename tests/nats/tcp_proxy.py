"""A TCP proxy for fault tests: sits between a client and a server on loopback and can delay,
hold (blackhole) or cut the traffic on command.

* :meth:`TcpProxy.delay` adds latency to every chunk, in both directions, order preserved.
* :meth:`TcpProxy.hold` blackholes every connection, present and future, without closing any:
  nothing is read from either side, nothing is delivered, no FIN passes. What the endpoints
  send piles up in their socket buffers, as it would behind a partition (TCP keeps
  retransmitting; nobody is told). New connections are accepted but not connected upstream.
* :meth:`TcpProxy.release` lets everything held flow again, in order, as a healed partition
  would deliver it.
* :meth:`TcpProxy.cut` closes (resets) every connection on both sides; new ones still work.

Used as an async context manager, or with :meth:`start` and :meth:`close`. Not a test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType

__all__ = ["TcpProxy"]

_CHUNK = 64 * 1024


class _Link:
    """One proxied connection: a client socket and its upstream socket."""

    def __init__(self, proxy: TcpProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                _abort(writer)
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """Listens on ``host:port`` (a free port by default) and forwards to the target."""

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self._delay_s = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        #: Connections accepted since the start (reconnections show up here).
        self.accepted = 0

    @property
    def url(self) -> str:
        """``nats://host:port`` of the proxy's listening side."""
        return f"nats://{self.host}:{self.port}"

    @property
    def held(self) -> bool:
        """Whether traffic is held (:meth:`hold`)."""
        return not self._flowing.is_set()

    @property
    def connections(self) -> int:
        """Open proxied connections."""
        return len(self._links)

    async def start(self) -> TcpProxy:
        """Start listening; returns ``self``."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- commands ---------------------------------------------------------------------------

    def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` after it was read (0: no added latency)."""
        self._delay_s = max(0.0, seconds)

    def hold(self) -> None:
        """Blackhole: stop moving bytes on every connection; close nothing."""
        self._flowing.clear()

    def release(self) -> None:
        """End a :meth:`hold`: everything held flows again, in order."""
        self._flowing.set()

    def cut(self) -> int:
        """Close every connection on both sides at once; returns how many there were."""
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        return len(links)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        self.release()
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    # -- forwarding -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        link = _Link(self, writer)
        self._links.add(link)
        try:
            await self._flowing.wait()  # a held link does not even reach the server
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            link.upstream = up_writer
            if link not in self._links:  # cut while connecting
                return
            for w in (writer, up_writer):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link.tasks = [
                asyncio.ensure_future(self._pump(reader, up_writer)),
                asyncio.ensure_future(self._pump(up_reader, writer)),
            ]
            # Either side closing ends the link (the other direction is then closed too).
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            self._links.discard(link)
            link.abort()
            self._handlers.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer`` chunk by chunk, honouring hold and delay; the delay
        of one chunk overlaps with reading the next (latency, not a bandwidth limit)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                if not data:
                    return  # end of stream: the caller closes both sides
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                await self._flowing.wait()  # held: leave the bytes in the sender's buffers
                reading = asyncio.ensure_future(reader.read(_CHUNK))
                done, _ = await asyncio.wait(
                    {reading, delivering}, return_when=asyncio.FIRST_COMPLETED
                )
                if delivering in done:  # the writing side failed
                    reading.cancel()
                    return
                try:
                    data = reading.result()
                except OSError:
                    data = b""
                queue.put_nowait((loop.time() + self._delay_s, data))
                if not data:
                    await delivering
                    return
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await delivering


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()
