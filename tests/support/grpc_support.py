"""Helpers of the gRPC tests (tests/grpc): keys, call metadata, reading rich error details."""

from __future__ import annotations

from typing import Any

import attrs
import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from ojs_core.service import JobService
from ojs_grpc import GrpcServer

__all__ = ["KEYS", "Harness", "as_role", "authenticate", "error_info", "field_violations"]

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
