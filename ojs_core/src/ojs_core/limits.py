"""Bounds on what one request may ask of the service.

Every operation that takes a list from a client has a ceiling, so that no single request can
hold the server's memory or a backend's round trips for long. The ceilings live in one object,
:class:`Limits`, that :class:`~ojs_core.service.JobService` applies to every caller (the HTTP
binding and the in-process client alike); ``docs/configuration.md`` lists them. Going over a
limit is the client's mistake and answers with a 4xx that names the limit:

- a batch larger than ``max_batch_jobs``: 413 ``batch_size_exceeded`` with ``max_batch_size``
  (the bulk-operations spec's shape);
- anything else over its bound: 400 ``invalid_request`` whose ``details`` carry the field path
  and the ``maximum``.
"""

from __future__ import annotations

from typing import Any

import attrs

from .errors import OJSError, ValidationError

__all__ = ["MAX_ID_LENGTH", "MAX_VISIBILITY_MS", "BatchTooLargeError", "Limits", "check_count"]

#: The longest visibility timeout a fetch or heartbeat may ask for (one day, in milliseconds):
#: the HTTP and gRPC bindings refuse more (a longer job should heartbeat).
MAX_VISIBILITY_MS = 86_400_000
#: The longest identifier (job or workflow id, cron or queue name) a binding passes on to
#: the service: generated ids are 36 characters, names are shorter than this.
MAX_ID_LENGTH = 256


def _positive(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """Per-request ceilings of the service; each default is generous for real workloads.

    ``max_batch_jobs``: jobs in one batch enqueue (the bulk-operations spec asks for at least
    1,000). ``max_fetch_count``: jobs one fetch may claim. ``max_fetch_queues``: queues one fetch
    may name. ``max_heartbeat_jobs``: job ids one heartbeat may extend (each is a write).
    ``max_workflow_steps``: jobs one workflow may create (steps plus callbacks).
    ``max_workflow_depth``: nesting of chains and groups inside a workflow definition.
    ``max_event_page``: events one poll of the event log may return.
    ``max_checkpoint_bytes``: a checkpoint's ``state`` and ``metadata`` as compact JSON (the
    durable-execution spec caps checkpoints at 1 MiB; 413 ``payload_too_large`` over it).
    ``max_progress_bytes``: a progress report's ``data`` and ``message`` as compact JSON (the
    progress spec recommends at most 4 KB; over this is 413 ``payload_too_large``).
    """

    max_batch_jobs: int = attrs.field(default=10_000, validator=_positive)
    max_fetch_count: int = attrs.field(default=1000, validator=_positive)
    max_fetch_queues: int = attrs.field(default=100, validator=_positive)
    max_heartbeat_jobs: int = attrs.field(default=1000, validator=_positive)
    max_workflow_steps: int = attrs.field(default=1000, validator=_positive)
    max_workflow_depth: int = attrs.field(default=32, validator=_positive)
    max_event_page: int = attrs.field(default=1000, validator=_positive)
    max_checkpoint_bytes: int = attrs.field(default=1024 * 1024, validator=_positive)
    max_progress_bytes: int = attrs.field(default=64 * 1024, validator=_positive)


class BatchTooLargeError(OJSError):
    """A batch holds more jobs than ``Limits.max_batch_jobs`` (bulk-operations spec §9.1)."""

    code = "batch_size_exceeded"
    status = 413

    def __init__(self, size: int, maximum: int) -> None:
        super().__init__(
            f"Batch size {size} exceeds maximum of {maximum}",
            details={"batch_size": size, "max_batch_size": maximum},
            hint="Split the jobs into batches of at most max_batch_size.",
        )
        self.size = size
        self.maximum = maximum
        #: Response headers the HTTP binding adds (bulk-operations spec §11.3).
        self.headers = {"X-OJS-Max-Batch-Size": str(maximum)}

    def to_wire(self, request_id: str | None = None) -> dict[str, Any]:
        """The error body, with ``max_batch_size`` beside ``code`` as the spec shows it."""
        body = super().to_wire(request_id)
        body["error"]["max_batch_size"] = self.maximum
        return body


def check_count(count: int, maximum: int, path: str, what: str) -> None:
    """Refuse ``count`` items of ``what`` at ``path`` when over ``maximum`` (400 naming both)."""
    if count > maximum:
        raise ValidationError(
            f"at most {maximum} {what} per request, got {count}",
            path=path,
            details={"maximum": maximum, "count": count},
        )
