"""The fault-injection TCP proxy itself (tests/nats/tcp_proxy.py), on a loopback echo server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from tcp_proxy import TcpProxy


@pytest.fixture
async def echo_proxy() -> AsyncIterator[TcpProxy]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with TcpProxy("127.0.0.1", port) as proxy:
        yield proxy
    server.close()
    await server.wait_closed()


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), 5)


async def test_forwards_and_delays(echo_proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_proxy.port)
    assert await roundtrip(reader, writer, b"x" * 300_000) == b"x" * 300_000
    echo_proxy.delay(0.2)
    started = time.monotonic()
    assert await roundtrip(reader, writer, b"ping") == b"ping"
    assert time.monotonic() - started >= 0.4  # 0.2 s each way
    echo_proxy.delay(0)
    writer.close()


async def test_hold_delivers_nothing_and_closes_nothing_until_released(
    echo_proxy: TcpProxy,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_proxy.port)
    assert await roundtrip(reader, writer, b"a") == b"a"
    echo_proxy.hold()
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(10), 0.5)
    # A new connection is accepted but goes nowhere while held.
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", echo_proxy.port)
    writer2.write(b"new")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader2.read(10), 0.3)
    echo_proxy.release()
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    assert await asyncio.wait_for(reader2.readexactly(3), 5) == b"new"
    writer.close()
    writer2.close()


async def test_cut_closes_every_connection_and_new_ones_work(echo_proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_proxy.port)
    assert await roundtrip(reader, writer, b"a") == b"a"
    assert echo_proxy.cut() == 1
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(10), 5) == b""
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_proxy.port)
    assert await roundtrip(reader, writer, b"b") == b"b"
    writer.close()
