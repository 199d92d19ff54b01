"""Durable checkpoints (extension ``urn:ojs:ext:durable-execution``, spec
``ojs-durable-execution.md``).

A worker saves the state it needs to resume an active job; if the attempt dies (a crash, a
visibility timeout, a failure that is retried) the next attempt receives the checkpoint in the
job envelope (``checkpoint``, DUR-004) and can continue from there.

The checkpoint is stored **on the job record** (:attr:`~ojs_core.model.Job.checkpoint`), written
with ``Backend.update_job`` like every transition: it is exactly as durable as the job (the
NATS backend's record survives a server restart), it cannot outlive or diverge from the job,
and no backend needs a new method. The cost is that every write of the job (heartbeats,
progress) rewrites the checkpoint too, which is why checkpoints are bounded
(``Limits.max_checkpoint_bytes``) and meant to hold references rather than bulk data (§9.1).

The rules, as pure functions applied under compare-and-swap:

* only an ``active`` job takes a checkpoint (409 otherwise, DUR-007), and only from its
  current attempt: a caller that names its worker (``worker_id``) or its attempt (``attempt``,
  or the official SDK's ``metadata.attempt``) and is not the job's current holder gets 409,
  so a worker whose attempt was reclaimed cannot overwrite its successor's state (§4.2);
* ``sequence`` grows by one per save for the job's whole life (DUR-008), even across a delete;
* a save is a heartbeat: the worker is demonstrably alive;
* the checkpoint survives failed attempts (DUR-R001) and is dropped when the job becomes
  terminal (``lifecycle``: completed, cancelled or discarded, DUR-005). A dead-letter job is
  discarded, so it has no checkpoint left to resume from when retried by hand: §5.2's MUST wins
  over §6.3's "preserved unless the operator clears it".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from . import jsonio
from .errors import (
    ConflictError,
    FieldTooLargeError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationError,
)
from .events import job_event
from .lifecycle import check_owner, prolong_visibility
from .model import Checkpoint, Event, Job
from .states import JobState

if TYPE_CHECKING:
    from .service import JobService

__all__ = [
    "CheckpointRequest",
    "apply_checkpoint",
    "checkpointed_event",
    "delete_checkpoint",
    "get_checkpoint",
    "parse_checkpoint",
    "save_checkpoint",
]


@attrs.frozen
class CheckpointRequest:
    """One validated save: the state and what the caller says about itself."""

    state: Any
    step_index: int | None = None
    metadata: dict[str, Any] | None = None
    attempt: int | None = None


def _attempt(body: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> int | None:
    value = body.get("attempt")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError("must be a positive integer", path="attempt")
        return value
    # The official SDK's DurableContext sends its attempt as a string in metadata; anything
    # that is not a plain number there is the SDK's business, not a reason to refuse the save.
    raw = (metadata or {}).get("attempt")
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return raw
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and int(raw) >= 1:
        return int(raw)
    return None


def parse_checkpoint(body: Mapping[str, Any], max_bytes: int) -> CheckpointRequest:
    """Validate a save: ``state`` (any JSON value, required), ``step_index`` (an integer >= 0),
    ``metadata`` (an object), ``attempt`` (an integer >= 1). ``state`` and ``metadata``
    together may take at most ``max_bytes`` of JSON (413 ``payload_too_large``)."""
    if "state" not in body:
        raise ValidationError("is required (any JSON value)", path="state")
    step = body.get("step_index")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ValidationError("must be a non-negative integer", path="step_index")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValidationError("must be an object", path="metadata")
    size = len(jsonio.dumps([body["state"], metadata], default=str))
    if size > max_bytes:
        raise FieldTooLargeError("state", size, max_bytes)
    return CheckpointRequest(
        state=body["state"],
        step_index=step,
        metadata=dict(metadata) if metadata is not None else None,
        attempt=_attempt(body, metadata),
    )


def apply_checkpoint(
    job: Job, request: CheckpointRequest, now: datetime, worker_id: str | None
) -> Job:
    """The job with the checkpoint saved; 409 when the caller is not its active attempt."""
    details: dict[str, Any] = {"job_id": job.id, "current_state": job.state.value}
    if job.state is not JobState.ACTIVE:
        raise ConflictError(
            f"Job '{job.id}' is {job.state.value}; only an active job can save a checkpoint",
            details=details | {"expected_state": JobState.ACTIVE.value},
        )
    check_owner(job, worker_id, details)
    if request.attempt is not None and request.attempt != job.attempt:
        raise ConflictError(
            f"Attempt {request.attempt} of job '{job.id}' is over (the job is on attempt "
            f"{job.attempt}); its checkpoint is not saved",
            details=details | {"attempt": job.attempt, "requested_attempt": request.attempt},
        )
    sequence = job.checkpoint_seq + 1
    checkpoint = Checkpoint(
        state=request.state,
        sequence=sequence,
        created_at=now,
        attempt=job.attempt,
        worker_id=job.worker_id or worker_id,
        step_index=request.step_index,
        metadata=request.metadata,
    )
    return attrs.evolve(
        prolong_visibility(job, now), checkpoint=checkpoint, checkpoint_seq=sequence
    )


async def save_checkpoint(
    service: JobService, job_id: str, request: CheckpointRequest, worker_id: str | None = None
) -> Checkpoint:
    """Save a checkpoint of an active job (404 unknown job, 409 not its active attempt, 413
    over the limit or when the store cannot hold the record) and emit ``job.checkpointed``."""
    now = service.now()
    try:
        _, after = await service.update_job(
            job_id, lambda job: apply_checkpoint(job, request, now, worker_id), now
        )
    except FieldTooLargeError:
        raise
    except PayloadTooLargeError as exc:
        # The store's own bound on a record (NATS max_payload counts the whole job): still the
        # checkpoint's fault, since the job fitted before it.
        limit = int(exc.details.get("limit", 0))
        size = int(exc.details.get("size", 0))
        raise FieldTooLargeError(
            "state",
            size,
            limit,
            f"state: the job with this checkpoint would be {size} bytes stored; the store "
            f"holds at most {limit} per job",
        ) from exc
    checkpoint = after.checkpoint
    assert checkpoint is not None
    await service.emit([checkpointed_event(after, now)])
    return checkpoint


def checkpointed_event(job: Job, now: datetime) -> Event:
    """The ``job.checkpointed`` event of a saved checkpoint (durable-execution DUR-R003)."""
    assert job.checkpoint is not None
    return job_event("job.checkpointed", job, now, sequence=job.checkpoint.sequence)


async def get_checkpoint(service: JobService, job_id: str) -> Checkpoint | None:
    """The job's checkpoint, ``None`` when it has none; 404 for an unknown job."""
    return (await service.get(job_id)).checkpoint


async def delete_checkpoint(service: JobService, job_id: str) -> bool:
    """Remove the job's checkpoint (any state: an operator may clear it); whether there was
    one. 404 for an unknown job. The sequence is kept, so later saves continue it."""
    now = service.now()

    def clear(job: Job) -> Job:
        return job if job.checkpoint is None else attrs.evolve(job, checkpoint=None)

    try:
        before, after = await service.update_job(job_id, clear, now)
    except NotFoundError:
        raise NotFoundError("job", job_id) from None
    return after is not before
