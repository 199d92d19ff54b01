"""OJS errors as gRPC statuses (gRPC binding §7-§8).

Every error carries a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer with a
``google.rpc.ErrorInfo`` (``domain: openjobspec.org``, ``reason``: the OJS error code,
``metadata``: ``retryable``, the request id and the error's details), plus a
``google.rpc.BadRequest`` naming the offending fields of a validation error and a
``google.rpc.RetryInfo`` (and the ``retry-after`` trailer) when the client should retry later.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from ojs_core.errors import OJSError

__all__ = ["DOMAIN", "MAX_MESSAGE_CHARS", "grpc_code", "status_of"]

log = logging.getLogger("ojs.grpc")

#: ``ErrorInfo.domain`` of every OJS error (§8.4).
DOMAIN = "openjobspec.org"

_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    # A body or envelope over its size limit: the client's mistake, not worth a retry.
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_BY_CODE = {
    "duplicate": grpc.StatusCode.ALREADY_EXISTS,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unsupported": grpc.StatusCode.FAILED_PRECONDITION,
    "queue_paused": grpc.StatusCode.FAILED_PRECONDITION,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def grpc_code(error: OJSError) -> grpc.StatusCode:
    """The status code of ``error`` (§7.1): by OJS code first, then by its HTTP status; any
    validation failure, whatever its HTTP status, is ``INVALID_ARGUMENT``."""
    if error.code in _BY_CODE:
        return _BY_CODE[error.code]
    if error.error_type == "validation_error" or error.code in ("validation_error",):
        return grpc.StatusCode.INVALID_ARGUMENT
    return _BY_STATUS.get(error.status, grpc.StatusCode.INTERNAL)


#: The longest message, and the longest metadata value, an error status carries: the status
#: travels in the trailers (``grpc-message``, ``grpc-status-details-bin``), which a client
#: refuses beyond its metadata limit (8 KiB by default), so long echoes of a request are cut.
MAX_MESSAGE_CHARS = 1000
_MAX_VALUE_CHARS = 500
_MAX_VIOLATIONS = 5


def _cut(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters (ending with an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return _cut(text, _MAX_VALUE_CHARS)


def status_of(error: OJSError, request_id: str | None = None) -> grpc.Status:
    """The rich status of ``error``: code, message, details and trailers (see the module)."""
    code = grpc_code(error)
    metadata = {"retryable": "true" if error.retryable else "false"}
    if request_id:
        metadata["request_id"] = request_id
    for key, value in error.details.items():
        if key != "validation_errors":
            metadata[key] = _text(value)
    if error.hint:
        metadata["hint"] = _text(error.hint)
    details = [error_details_pb2.ErrorInfo(reason=error.code, domain=DOMAIN, metadata=metadata)]
    violations = error.details.get("validation_errors") or []
    if violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_text(str(v.get("path", ""))),
                        description=_text(str(v.get("message", ""))),
                    )
                    for v in violations[:_MAX_VIOLATIONS]
                    if isinstance(v, dict)
                ]
            )
        )
    retry_after = getattr(error, "retry_after_s", None)
    if isinstance(retry_after, int | float) and retry_after > 0:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromMilliseconds(int(retry_after * 1000))
        details.append(info)
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    proto = status_pb2.Status(
        code=getattr(code_pb2, code.name),
        message=_cut(error.message, MAX_MESSAGE_CHARS),
        details=packed,
    )
    status: grpc.Status = rpc_status.to_status(proto)
    if isinstance(retry_after, int | float) and retry_after > 0:
        # The spec's retry hint (§9.3) beside the details trailer.
        trailers = (*status.trailing_metadata, ("retry-after", str(retry_after)))
        return _Status(status.code, status.details, trailers)
    return status


class _Status(grpc.Status):
    """A ``grpc.Status`` with our own trailers (``grpc.Status`` is an abstract base)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata
