"""OJS error types.

Every error that can reach a client is an :class:`OJSError` carrying the wire code (lowercase,
as the HTTP binding and the conformance suite use), the HTTP status the binding maps it to, and
whether the client may retry. Backends raise these too, so the HTTP layer never has to guess.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BackendUnavailableError",
    "ConflictError",
    "DuplicateJobError",
    "FieldTooLargeError",
    "ForbiddenError",
    "InvalidStateTransitionError",
    "NotFoundError",
    "OJSError",
    "PayloadTooLargeError",
    "QueueFullError",
    "UnauthorizedError",
    "UnsupportedError",
    "ValidationError",
]

DOCS_BASE = "https://openjobspec.org/spec/errors#"


class OJSError(Exception):
    """Base class of every error with an OJS wire representation."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    error_type: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.hint = hint

    def to_wire(self, request_id: str | None = None) -> dict[str, Any]:
        """Return the binding's wrapped error body ``{"error": {...}}``."""
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.error_type:
            body["type"] = self.error_type
        if self.details:
            body["details"] = self.details
        if self.hint:
            body["hint"] = self.hint
            body["docs_url"] = DOCS_BASE + self.code
        if request_id:
            body["request_id"] = request_id
        return {"error": body}


class ValidationError(OJSError):
    """A request or envelope failed validation; ``path`` names the offending field.

    Status 400, as the HTTP binding has it for every invalid request, except retry policies:
    the conformance suite (L1-RTR-011/012) requires 422 for those. Every validation error
    carries ``type: "validation_error"``, whatever its status (docs/architecture.md).
    """

    code = "invalid_request"
    status = 400
    error_type = "validation_error"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        full = f"{path}: {message}" if path else message
        merged = dict(details or {})
        if path:
            merged.setdefault("validation_errors", [{"path": path, "message": message}])
        super().__init__(full, details=merged)
        self.path = path
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]


class PayloadTooLargeError(OJSError):
    """The request body or an envelope exceeds the size limit."""

    code = "envelope_too_large"
    status = 413


class FieldTooLargeError(PayloadTooLargeError):
    """A field of a request is larger than its limit (a checkpoint's state, a progress
    report's data): 413 ``payload_too_large`` naming the field, its size and the limit."""

    code = "payload_too_large"

    def __init__(self, path: str, size: int, limit: int, message: str | None = None) -> None:
        super().__init__(
            message or f"{path}: {size} bytes of JSON; the limit is {limit}",
            details={"path": path, "size": size, "limit": limit},
            hint="Store large values elsewhere and keep a reference in the job.",
        )
        self.path = path
        self.size = size
        self.limit = limit


class NotFoundError(OJSError):
    """The job, workflow, cron entry or other resource does not exist."""

    code = "not_found"
    status = 404

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            f"{resource_type.capitalize()} '{resource_id}' not found",
            details={"resource_type": resource_type, "resource_id": resource_id},
            hint=f"Check the {resource_type} identifier; it may be deleted or never existed.",
        )
        self.resource_type = resource_type
        self.resource_id = resource_id


class ConflictError(OJSError):
    """The operation conflicts with the resource's current state."""

    code = "conflict"
    status = 409


class InvalidStateTransitionError(ConflictError):
    """A job cannot move from its current state to the attempted one."""

    def __init__(self, job_id: str, current: str, attempted: str, action: str = "") -> None:
        verb = f" {action}" if action else ""
        super().__init__(
            f"Cannot{verb} job '{job_id}': transition {current} -> {attempted} is not allowed",
            details={
                "job_id": job_id,
                "current_state": current,
                "attempted_state": attempted,
                "expected_state": _expected_for(attempted),
            },
        )
        self.job_id = job_id
        self.current = current
        self.attempted = attempted


def _expected_for(attempted: str) -> str:
    return {"completed": "active", "retryable": "active", "discarded": "active"}.get(
        attempted, "non-terminal"
    )


class DuplicateJobError(OJSError):
    """A job with the same id, or the same unique key, already exists."""

    code = "duplicate"
    status = 409

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)


class UnsupportedError(OJSError):
    """The request asks for something this server does not implement."""

    code = "unsupported"
    status = 422


class BackendUnavailableError(OJSError):
    """The storage backend cannot be reached; the client should retry later."""

    code = "backend_unavailable"
    status = 503
    retryable = True

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFullError(OJSError):
    """An enqueue refused because the queue reached its bound (backpressure extension).

    ``queue``, ``depth`` (the jobs the queue holds waiting, plus those being admitted) and
    ``bound`` say which bound was hit; ``retry_after_s`` is the suggested wait. A batch is
    refused whole; the error names the first of its queues (by name) found over its bound.
    """

    code = "queue_full"
    status = 429
    retryable = True

    def __init__(
        self,
        queue: str,
        depth: int,
        bound: int,
        *,
        strategy: str = "reject",
        retry_after_s: int = 5,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            f"Queue '{queue}' has reached its depth bound ({bound})",
            details={"queue": queue, "depth": depth, "bound": bound, "strategy": strategy}
            | (details or {}),
        )
        self.queue = queue
        self.depth = depth
        self.bound = bound
        self.strategy = strategy
        self.retry_after_s = retry_after_s
        #: The spec's headers (ojs-backpressure.md §7.2), added by the HTTP binding.
        self.headers = {"X-OJS-Queue-Depth": str(depth), "X-OJS-Queue-Bound": str(bound)}

    def to_wire(self, request_id: str | None = None) -> dict[str, Any]:
        """The wrapped body, with the spec's ``queue``, ``depth``, ``bound`` and ``strategy``
        also at the top of the error object (§7.1), where the spec's clients look."""
        body = super().to_wire(request_id)
        body["error"].update(
            queue=self.queue, depth=self.depth, bound=self.bound, strategy=self.strategy
        )
        return body


class UnauthorizedError(OJSError):
    """No credentials, or credentials that match nothing (401; gRPC ``UNAUTHENTICATED``).
    Raised by both bindings' authorization checks. ``token_given``: a token was presented
    (and is not valid), which the HTTP challenge says (RFC 6750 §3)."""

    code = "unauthorized"
    status = 401

    def __init__(self, message: str, *, token_given: bool = False, hint: str | None = None) -> None:
        super().__init__(
            message,
            hint=hint
            or "Send Authorization: Bearer <key> with a key the server knows "
            "(see docs/security.md).",
        )
        challenge = 'Bearer realm="ojs"'
        if token_given:
            challenge += ', error="invalid_token"'
        #: Response headers the HTTP binding adds.
        self.headers = {"WWW-Authenticate": challenge}


class ForbiddenError(OJSError):
    """A known caller whose roles do not include one the operation needs (403; gRPC
    ``PERMISSION_DENIED``)."""

    code = "forbidden"
    status = 403
