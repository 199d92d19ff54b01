"""``ojs-server --grpc-port`` start and stop: the gRPC grace period runs beside the HTTP
server's drain (not before it), the event keepalive is bounded below and above, and a
certificate or key that does not load is reported as such, before anything is bound."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from grpc_support import free_port

from ojs_grpc import ServerTLS
from ojs_http import cli, grpc_serve
from ojs_http.settings import HttpSettings

SECRET = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"


class SlowGrpc:
    """A gRPC server whose graceful stop lasts until ``release`` is set."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()

    async def stop(self, grace_s: float) -> None:
        self.stopping.set()
        await self.release.wait()


class Hub:
    def __init__(self) -> None:
        self.ended = False

    def end_all(self) -> None:
        self.ended = True


async def test_the_grpc_grace_period_does_not_hold_back_the_http_drain() -> None:
    state, hub, server = SimpleNamespace(phase="serving"), Hub(), SlowGrpc()
    async with asyncio.timeout(10):  # it must return while the gRPC stop still runs
        stopping = await cli.begin_drain(state, hub, server, 10.0)
    assert (state.phase, hub.ended) == ("draining", True)
    assert stopping is not None
    await server.stopping.wait()
    assert not stopping.done()
    server.release.set()
    await stopping


@pytest.mark.parametrize(
    ("heartbeat", "keepalive"), [(0.0, 1.0), (0.01, 1.0), (15.0, 15.0), (300.0, 30.0)]
)
def test_the_event_keepalive_is_between_one_and_thirty_seconds(
    heartbeat: float, keepalive: float
) -> None:
    settings = grpc_serve.grpc_settings(HttpSettings(event_heartbeat_s=heartbeat))
    assert settings.event_keepalive_s == keepalive


def test_a_malformed_certificate_is_reported_as_one(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("junk\n")
    (tmp_path / "key.pem").write_text(SECRET)
    with pytest.raises(ValueError, match="cannot load the gRPC TLS certificate/key") as err:
        ServerTLS.from_files(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert "c2VjcmV0" not in str(err.value)


def test_ojs_server_names_the_certificate_not_the_port(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text(SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OJS_", "NATS_URL"))}
    bad = str(tmp_path / "bad.pem")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ojs_http.cli", "--backend", "memory"),
            *("--port", str(free_port()), "--grpc-port", str(free_port())),
            *("--grpc-tls-cert", bad, "--grpc-tls-key", bad),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "cannot load the gRPC TLS certificate/key" in done.stderr
    assert "cannot listen" not in done.stderr
    assert "c2VjcmV0" not in done.stderr + done.stdout
