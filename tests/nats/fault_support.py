"""Processes for the fault tests (imported as a plain module; not a test module).

* :class:`OjsServer`: one ``ojs-server`` (``python -m ojs_http.cli`` from this venv) on a
  loopback port, logging to a file; ``kill9`` and a graceful ``stop``.
* :class:`NatsCluster`: ``size`` nats-server processes with JetStream, joined by cluster routes
  on loopback, each with its store in a temporary directory; ``kill9`` one node, ask any live
  node which server leads a stream.
* :func:`wait_line`: await a line of a process's output.

Everything is bounded: every wait has a deadline and fails the test with what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from nats_support import eventually

import nats
from ojs_nats.embedded import find_nats_server, free_port

__all__ = ["V1", "NatsCluster", "NatsNode", "OjsServer", "http_client", "wait_line"]

V1 = "/ojs/v1"


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback for the probes: a node not listening yet is expected."""


#: Connection options of the short-lived probe connections to cluster nodes.
_PROBE: dict[str, Any] = {"allow_reconnect": False, "connect_timeout": 2, "error_cb": _quiet}


def http_client(base_url: str, timeout: float) -> httpx.AsyncClient:
    """An HTTP client for ojs-server that drops idle connections after 2 s, before the HTTP
    server closes them (its keep-alive timeout is 5 s): reusing a connection the server is closing
    fails with "Server disconnected without sending a response", a race of the test, not a
    fault of the server."""
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout, limits=httpx.Limits(keepalive_expiry=2.0)
    )


class OjsServer:
    """One ``ojs-server`` subprocess on a loopback port."""

    def __init__(self, workdir: Path, *args: str, log_level: str = "warning") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"ojs-server-{self.port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ojs_http.cli",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    log_level,
                    *args,
                ],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def errors_in_log(self, limit: int = 3) -> str:
        """The first ``limit`` ERROR records of the log, each with its traceback."""
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").splitlines()
            starts = [i for i, line in enumerate(lines) if " ERROR " in line][:limit]
            return "\n".join("\n".join(lines[i : i + 80]) for i in starts)
        return ""

    async def ready(self, within: float = 30.0) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:

            async def healthy() -> bool:
                assert self.proc.poll() is None, f"ojs-server exited: {self.log_tail()}"
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get(f"{V1}/health")).status_code == 200
                return False

            await eventually(healthy, within=within, what=f"ojs-server on {self.url} healthy")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class NatsNode:
    """One nats-server of a :class:`NatsCluster`."""

    def __init__(self, root: Path, name: str, cluster_name: str) -> None:
        self.name = name
        self.cluster_name = cluster_name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.cluster_port = free_port()
        self.monitor_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def configure(self, routes: list[int]) -> None:
        route_urls = ", ".join(json.dumps(f"nats-route://127.0.0.1:{p}") for p in routes)
        (self.dir / "nats-server.conf").write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.dir / 'jetstream'))}\n"
            "  sync_interval: 1s\n"
            "}\n"
            "cluster {\n"
            f"  name: {self.cluster_name}\n"
            f"  listen: 127.0.0.1:{self.cluster_port}\n"
            f"  routes: [{route_urls}]\n"
            "}\n"
        )

    async def client_names(self) -> list[str]:
        """The names of the clients connected to this node (its monitoring ``/connz``)."""
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"http://127.0.0.1:{self.monitor_port}/connz")
            response.raise_for_status()
            return [c.get("name", "") for c in response.json().get("connections") or []]

    def start(self) -> None:
        with open(self.dir / "nats-server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [find_nats_server(), "-c", str(self.dir / "nats-server.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class NatsCluster:
    """``size`` nats-servers with JetStream and full-mesh routes on loopback."""

    def __init__(self, root: Path, size: int = 3, name: str = "ojs-test") -> None:
        self.nodes = [NatsNode(root, f"n{i + 1}", name) for i in range(size)]
        for node in self.nodes:
            node.configure([n.cluster_port for n in self.nodes if n is not node])

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (what ``--backend`` takes)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def live(self) -> list[NatsNode]:
        return [n for n in self.nodes if n.alive]

    async def start(self, within: float = 30.0) -> None:
        """Start every node; return once JetStream answers (a meta leader was elected)."""
        for node in self.nodes:
            node.start()

        async def meta_ready() -> bool:
            for node in self.nodes:
                assert node.alive, f"{node.name} exited: {self.log_tail(node)}"
            with contextlib.suppress(Exception):
                nc = await nats.connect(self.nodes[0].url, **_PROBE)
                try:
                    info = await nc.jetstream(timeout=2).account_info()
                    return info is not None
                finally:
                    await nc.close()
            return False

        await eventually(meta_ready, within=within, interval=0.25, what="JetStream cluster ready")

    async def probe_leader(self, stream: str) -> str | None:
        """The server name of ``stream``'s leader as a live node sees it now (``None`` while
        there is none, or when no node answers within 2 s)."""
        for node in self.live():
            with contextlib.suppress(Exception):
                nc = await nats.connect(node.url, **_PROBE)
                try:
                    info = await nc.jetstream(timeout=2).stream_info(stream)
                    if info.cluster is not None and info.cluster.leader:
                        return info.cluster.leader
                finally:
                    await nc.close()
        return None

    async def leader_of(self, stream: str, within: float = 20.0) -> str:
        """The server name of ``stream``'s current leader (waits for one, bounded)."""
        return await eventually(
            lambda: self.probe_leader(stream), within=within, interval=0.1, what=f"{stream} leader"
        )

    async def node_serving(self, client_name: str, within: float = 10.0) -> NatsNode:
        """The live node a client named ``client_name`` is connected to."""

        async def find() -> NatsNode | None:
            for node in self.live():
                with contextlib.suppress(httpx.HTTPError):
                    if client_name in await node.client_names():
                        return node
            return None

        return await eventually(find, within=within, what=f"the node serving {client_name}")

    async def move_leader(self, stream: str, to: NatsNode, within: float = 30.0) -> None:
        """Make ``to`` the leader of ``stream`` (leader step-downs with a preferred placement)."""

        async def moved() -> bool:
            if await self.leader_of(stream) == to.name:
                return True
            with contextlib.suppress(Exception):
                nc = await nats.connect(to.url, **_PROBE)
                try:
                    await nc.request(
                        f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}",
                        json.dumps({"placement": {"preferred": to.name}}).encode(),
                        timeout=5,
                    )
                finally:
                    await nc.close()
            return False

        await eventually(moved, within=within, interval=0.5, what=f"{to.name} leading {stream}")

    @staticmethod
    def log_tail(node: NatsNode, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = (node.dir / "nats-server.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def wait_line(proc: asyncio.subprocess.Process, needle: str, within: float) -> str:
    """The first line of ``proc``'s stdout that contains ``needle`` (bounded)."""
    assert proc.stdout is not None
    seen: list[str] = []

    async def find() -> str:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError(f"process exited before {needle!r}: {''.join(seen)}")
            line = raw.decode(errors="replace")
            seen.append(line)
            if needle in line:
                return line

    try:
        return await asyncio.wait_for(find(), within)
    except TimeoutError:
        raise AssertionError(f"no {needle!r} within {within} s: {''.join(seen)}") from None
