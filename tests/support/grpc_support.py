"""Helpers of the gRPC tests (tests/grpc): keys, call metadata, reading rich error details."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ojs_core.service import JobService
from ojs_grpc import GrpcServer

__all__ = [
    "KEYS",
    "Harness",
    "as_role",
    "authenticate",
    "error_info",
    "field_violations",
    "free_port",
    "ojs_server",
]

#: The API keys of the test servers: key -> roles.
KEYS = {"admin-key": {"admin"}, "producer-key": {"producer"}, "worker-key": {"worker"}}


def authenticate(token: str) -> set[str] | None:
    """The token authenticator of the in-process servers."""
    return KEYS.get(token)


def as_role(role: str) -> tuple[tuple[str, str], ...]:
    """Call metadata presenting the key of ``role``."""
    return (("authorization", f"Bearer {role}-key"),)


@attrs.define
class Harness:
    """An in-process server, its service, and a client stub."""

    service: JobService
    server: GrpcServer
    channel: grpc.aio.Channel
    stub: Any


def _status(error: grpc.aio.AioRpcError) -> Any:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    raise AssertionError(f"no rich status in {error!r}")


def error_info(error: grpc.aio.AioRpcError) -> Any:
    """The ``google.rpc.ErrorInfo`` of an error answered by the server."""
    for detail in _status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The ``(field, description)`` pairs of the error's ``google.rpc.BadRequest``."""
    for detail in _status(error).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return [(v.field, v.description) for v in bad.field_violations]
    return []


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def ojs_server(
    *args: str, env: dict[str, str], grpc_credentials: grpc.ChannelCredentials | None = None
) -> Iterator[tuple[str, int, list[str]]]:
    """``ojs-server`` as a process with ``--grpc-port``: yields the HTTP base URL, the gRPC
    port and (after the block) the process's output lines. Started when ``grpc.health.v1``
    answers ``SERVING``; stopped with SIGTERM, which must end it within 20 s."""
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "ojs_http.cli", "--port", str(http_port)]
    proc = subprocess.Popen(
        [*command, "--grpc-port", str(grpc_port), "--log-level", "warning", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        _wait_serving(proc, grpc_port, grpc_credentials)
        yield f"http://127.0.0.1:{http_port}", grpc_port, lines
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        lines.extend(out.splitlines())


def _wait_serving(
    proc: subprocess.Popen[str], port: int, credentials: grpc.ChannelCredentials | None
) -> None:
    target = f"localhost:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        channel = (
            grpc.secure_channel(target, credentials)
            if credentials is not None
            else grpc.insecure_channel(target)
        )
        try:
            with channel:
                stub = health_pb2_grpc.HealthStub(channel)
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, "ojs-server's gRPC port did not start"
        time.sleep(0.1)
