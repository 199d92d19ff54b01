"""The embedded nats-server: starts with JetStream and stops; reaps an orphan, joins a live
server on the same store; refuses connections without its token; applies its sync policy."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from nats_support import eventually

import nats
from ojs_core.plugins import BackendOptions, BackendPluginError, load_backend
from ojs_core.service import JobService
from ojs_nats.backend import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer, find_nats_server, free_port, parse_sync


async def _jetstream_ok(url: str, **options: Any) -> bool:
    nc = await nats.connect(url, connect_timeout=5, **options)
    try:
        info = await nc.jetstream().account_info()
        return info.streams == 0 or info.streams >= 0
    finally:
        await nc.close()


async def test_starts_with_jetstream_and_stops(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "store")
    url = await server.start()
    assert url.startswith("nats://127.0.0.1:")
    assert await _jetstream_ok(url, **server.connect_options)
    assert (tmp_path / "store" / "nats-server.pid").exists()
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))


def _orphan_of(server: EmbeddedNatsServer) -> int:
    """Start a nats-server on ``server``'s store and configuration whose parent is gone, as if
    its owner had died without stopping it; returns its pid."""
    subprocess.run(
        ["sh", "-c", f'"{find_nats_server()}" -c "{server.config_file}" >/dev/null 2>&1 &'],
        check=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid = int(server.pid_file.read_text())
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == "1":
                return pid
        time.sleep(0.05)
    raise AssertionError("the orphan did not start")


async def test_restart_on_same_dir_reaps_an_orphan(tmp_path: Path) -> None:
    first = EmbeddedNatsServer(tmp_path / "store")
    await first.start()
    await first.stop()  # leaves the configuration behind
    orphan_pid = _orphan_of(first)
    second = EmbeddedNatsServer(tmp_path / "store")
    url = await second.start()
    try:
        assert not second.joined
        assert await _jetstream_ok(url, **second.connect_options)
        assert int((tmp_path / "store" / "nats-server.pid").read_text()) != orphan_pid
        assert _gone(orphan_pid)
    finally:
        await second.stop()


async def test_a_second_process_joins_the_running_server(tmp_path: Path) -> None:
    owner = EmbeddedNatsServer(tmp_path / "store")
    joiner = EmbeddedNatsServer(tmp_path / "store")
    url = await owner.start()
    try:
        assert await joiner.start() == url
        assert joiner.joined
        assert not owner.joined
        assert joiner.connect_options == owner.connect_options
        assert await _jetstream_ok(url, **joiner.connect_options)
        await joiner.stop()  # leaves the server to its owner
        assert await _jetstream_ok(url, **owner.connect_options)
    finally:
        await owner.stop()
    assert not owner.pid_file.exists()  # removed on a clean stop


async def test_a_connection_without_the_token_is_refused(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "store")
    url = await server.start()
    try:
        for options in ({}, {"token": "wrong"}):
            with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
                await nats.connect(url, allow_reconnect=False, connect_timeout=5, **options)
        assert await _jetstream_ok(url, **server.connect_options)
        for secret in (server.token_file, server.config_file):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        token = server.token_file.read_text().strip()
        assert len(token) >= 32
        assert token not in _cmdline(_pid(server))
    finally:
        await server.stop()
    again = EmbeddedNatsServer(tmp_path / "store")
    await again.start()
    try:
        assert again.connect_options == {"token": token}  # kept for the directory's life
    finally:
        await again.stop()


def _pid(server: EmbeddedNatsServer) -> int:
    return int(server.pid_file.read_text())


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _external_server(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [find_nats_server(), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("sync", ["always", "1s", "250ms", "2m"])
async def test_the_sync_policy_reaches_the_server_and_health(tmp_path: Path, sync: str) -> None:
    backend = NatsBackend(embedded=EmbeddedNatsServer(tmp_path / "store", sync=sync))
    await backend.open()
    try:
        assert f"sync_interval: {sync}" in backend.embedded.config_file.read_text()  # type: ignore[union-attr]
        health = await backend.health()
        assert health.ok
        assert health.details["sync"] == sync
    finally:
        await backend.close()


@pytest.mark.parametrize("bad", ["", "sometimes", "0s", "-1s", "1d", "1 s"])
def test_a_bad_sync_policy_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="sync policy"):
        parse_sync(bad)
    with pytest.raises(BackendPluginError, match="sync policy"):
        load_backend("embedded", BackendOptions(extra={"nats_sync": bad or "x"}))


@pytest.mark.parametrize(
    ("conf", "expected"),
    [("", "2m"), ("sync_interval: always", "always"), ("sync_interval: 5s", "5s")],
)
async def test_an_external_servers_sync_policy_is_read_from_its_monitoring_port(
    tmp_path: Path, conf: str, expected: str
) -> None:
    port, monitor = free_port(), free_port()
    config = tmp_path / "server.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
        f'jetstream {{\n store_dir: "{tmp_path / "js"}"\n {conf}\n}}\n'
    )
    proc = _external_server(config)
    try:
        backend = NatsBackend(f"nats://127.0.0.1:{port}", monitor_url=f"http://127.0.0.1:{monitor}")
        await eventually_open(backend)
        try:
            assert (await backend.health()).details["sync"] == expected
        finally:
            await backend.close()
        unmonitored = NatsBackend(f"nats://127.0.0.1:{port}")
        await unmonitored.open()
        try:
            assert (await unmonitored.health()).details["sync"] == "unknown"
        finally:
            await unmonitored.close()
    finally:
        proc.terminate()
        proc.wait()


async def eventually_open(backend: NatsBackend) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            await backend.open()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


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
        assert asyncio.run(_jetstream_ok(url, **server.connect_options))
    finally:
        asyncio.run(server.stop())
    assert proc.poll() is not None


async def test_a_joined_backend_reconnects_when_the_server_is_restarted(tmp_path: Path) -> None:
    owner = EmbeddedNatsServer(tmp_path / "store")
    url = await owner.start()
    joined = NatsBackend(embedded=EmbeddedNatsServer(tmp_path / "store"))
    await joined.open()
    try:
        assert joined.embedded is not None
        assert joined.embedded.joined
        svc = JobService(joined)
        before = (await svc.enqueue({"type": "a.job", "args": []})).job.id
        await owner.stop()  # the owning process exits
        await eventually(lambda: not joined.connected, what="the joined backend sees it")
        again = EmbeddedNatsServer(tmp_path / "store")  # a new owner, on the same store
        assert await again.start() == url  # the same port again
        try:
            await eventually(lambda: joined.connected, within=20, what="reconnected")
            assert (await svc.get(before)).state.value == "available"
            after = await svc.enqueue({"type": "a.job", "args": []})
            assert after.job.state.value == "available"
        finally:
            await again.stop()
    finally:
        await joined.close()
