"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

httpx costs more CPU per request than the servers under test, which on two cores would measure
the client. This speaks just enough HTTP/1.1 (JSON bodies, Content-Length responses) to keep
N connections busy; every scenario, baseline included, uses the same generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Conn", "Stats", "run_closed_loop"]


class Conn:
    """One keep-alive connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.writer is None or self.writer.is_closing():
            await self.open()  # the server closed the last one (Hypercorn does every 1,000)
        assert self.reader is not None
        assert self.writer is not None
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            lname = name.strip().lower()
            if lname == "content-length":
                length = int(value.strip())
            elif lname == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif lname == "connection" and "close" in value.lower():
                close = True
        if chunked:
            data = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                data += await self.reader.readexactly(size)
                await self.reader.readline()
        else:
            data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, (json.loads(data) if data else None)


class Stats:
    """Latencies (seconds) and counts of a run."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.items = 0
        self.errors = 0
        self.elapsed = 0.0

    def pct(self, p: float) -> float:
        """Percentile in milliseconds."""
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000

    @property
    def rate(self) -> float:
        """Items per second."""
        return self.items / self.elapsed if self.elapsed else 0.0


async def run_closed_loop(
    host: str,
    port: int,
    connections: int,
    duration: float,
    make: Callable[[int], tuple[str, str, Any, int]],
) -> Stats:
    """Each connection sends requests back to back for ``duration`` seconds.

    ``make(i)`` returns ``(method, path, body, items)`` for the i-th request of a connection;
    ``items`` is how many units (jobs) the request counts for.
    """
    stats = Stats()
    conns = [Conn(host, port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))
    deadline = time.perf_counter() + duration

    async def loop(conn: Conn) -> None:
        i = 0
        while time.perf_counter() < deadline:
            method, path, body, items = make(i)
            i += 1
            t0 = time.perf_counter()
            status, _ = await conn.request(method, path, body)
            stats.latencies.append(time.perf_counter() - t0)
            if status < 300:
                stats.items += items
            else:
                stats.errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in conns))
    stats.elapsed = time.perf_counter() - start
    await asyncio.gather(*(c.close() for c in conns))
    return stats
