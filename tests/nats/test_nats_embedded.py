"""The embedded nats-server: starts with JetStream, stops, and reaps an orphan on restart."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

import nats
from ojs_nats.embedded import EmbeddedNatsServer


async def _jetstream_ok(url: str) -> bool:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        info = await nc.jetstream().account_info()
        return info.streams == 0 or info.streams >= 0
    finally:
        await nc.close()


async def test_starts_with_jetstream_and_stops(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "store")
    url = await server.start()
    assert url.startswith("nats://127.0.0.1:")
    assert await _jetstream_ok(url)
    assert (tmp_path / "store" / "nats-server.pid").exists()
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))


async def test_restart_on_same_dir_reaps_orphan(tmp_path: Path) -> None:
    first = EmbeddedNatsServer(tmp_path / "store")
    await first.start()
    orphan_pid = int((tmp_path / "store" / "nats-server.pid").read_text())
    # Simulate the owning process dying without stopping its server: forget the handle.
    orphan, first._proc = first._proc, None
    assert orphan is not None
    second = EmbeddedNatsServer(tmp_path / "store")
    url = await second.start()
    try:
        assert await _jetstream_ok(url)
        new_pid = int((tmp_path / "store" / "nats-server.pid").read_text())
        assert new_pid != orphan_pid
        assert orphan.wait(timeout=5) is not None  # the orphan was stopped
    finally:
        await second.stop()


def test_server_started_under_asyncio_run_outlives_that_loop(tmp_path: Path) -> None:
    # The server dies with the *thread* that forked it (PR_SET_PDEATHSIG); asyncio.run shuts
    # its worker threads down on return, so the fork must not happen on one of them.
    server = EmbeddedNatsServer(tmp_path / "store")
    url = asyncio.run(server.start())
    proc = server._proc
    assert proc is not None
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)  # still running a second after the loop is gone
        assert asyncio.run(_jetstream_ok(url))
    finally:
        asyncio.run(server.stop())
    assert proc.poll() is not None
