"""Job progress (extension ``urn:ojs:ext:progress``, spec ``ojs-progress.md``).

A worker reports how far an active job has got: a fraction (``progress`` 0.0-1.0, or the
official SDK's ``percentage`` 0-100), structured ``data`` and a ``message``. The report is
stored on the job record (:attr:`~ojs_core.model.Job.progress`) through ``Backend.update_job``,
so it is as durable as the job and needs nothing new from a backend.

The rules, as pure functions applied under compare-and-swap:

* values are clamped into [0, 1] (§5.1: a bad calculation must not fail the worker);
* the fraction never decreases within an attempt (§5.1): a lower value keeps the higher one,
  while ``data`` and ``message`` are replaced by every report that carries them;
* each attempt starts without progress (§5.3; ``lifecycle.claim`` clears it), a failed attempt
  keeps its last report (§8.2) and an acknowledged job is at 1.0 (§8.1, ``lifecycle.ack``);
* only an ``active`` job (of the reporting worker, when it names itself) takes a report; any
  other report is ignored, not refused (§6.1, PRG-007: the job may have finished while the
  report was on its way, and progress is fire-and-forget);
* a report is a heartbeat (§6.3): it moves the visibility deadline as a heartbeat would;
* at most one ``job.progress`` event per job per :data:`EVENT_INTERVAL` (§6.2): the time of the
  last one is kept on the record, so the throttle holds across replicas. Every report is
  stored; a report inside the interval only skips the event (the final state is still read
  with ``GET /jobs/{id}/progress`` and announced by ``job.completed``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from . import jsonio
from .checkpoint import CheckpointRequest, apply_checkpoint, checkpointed_event
from .errors import FieldTooLargeError, ValidationError
from .events import job_event
from .lifecycle import held_by_another, prolong_visibility
from .limits import Limits
from .model import Event, Job, Progress
from .states import JobState
from .timeutil import format_ts

if TYPE_CHECKING:
    from .service import JobService

__all__ = [
    "EVENT_INTERVAL",
    "ProgressOutcome",
    "ProgressReport",
    "apply_report",
    "get_progress",
    "parse_progress",
    "progress_event",
    "report_progress",
]

_CHECKPOINT_BYTES = Limits().max_checkpoint_bytes
#: At most one ``job.progress`` event per job per this interval (progress spec §6.2).
EVENT_INTERVAL = timedelta(seconds=1)


@attrs.frozen
class ProgressReport:
    """One validated progress report: the fraction (clamped) and what came with it."""

    value: float | None = None
    data: Any = None
    message: str | None = None
    #: A checkpoint saved with the report (progress spec §6.4), or ``None``.
    checkpoint: CheckpointRequest | None = None


@attrs.frozen
class ProgressOutcome:
    """What became of a report: the job as stored, and whether the report was taken.

    ``reason`` says why it was not: ``not_active`` (the job is in another state) or
    ``not_owner`` (another worker holds the job)."""

    job: Job
    accepted: bool
    reason: str | None = None


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("must be a number", path=path)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float: out of range, so clamped anyway
        return 1e308 if value > 0 else -1e308
    if not math.isfinite(number):
        raise ValidationError("must be a finite number", path=path)
    return number


def parse_progress(
    body: Mapping[str, Any],
    max_bytes: int,
    max_checkpoint_bytes: int = _CHECKPOINT_BYTES,
) -> ProgressReport:
    """Validate a report: ``progress`` (0.0-1.0) or ``percentage`` (0-100; ``progress`` wins
    when both are given), ``data`` (an object) and ``message`` (a string), at least one of
    them. Out-of-range numbers are clamped; ``data`` and ``message`` together may take at most
    ``max_bytes`` of JSON (413 ``payload_too_large``). An optional ``checkpoint`` object
    (§6.4) is saved as the job's checkpoint with the report, within ``max_checkpoint_bytes``."""
    value: float | None = None
    if body.get("progress") is not None:
        value = _number(body["progress"], "progress")
    elif body.get("percentage") is not None:
        value = _number(body["percentage"], "percentage") / 100
    if value is not None:
        value = min(max(value, 0.0), 1.0)
    data = body.get("data")
    if data is not None and not isinstance(data, Mapping):
        raise ValidationError("must be an object", path="data")
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise ValidationError("must be a string", path="message")
    if value is None and data is None and message is None:
        raise ValidationError(
            "a progress report needs progress (0.0-1.0), percentage (0-100), data or message",
            path="progress",
        )
    if data is not None or message:
        size = len(jsonio.dumps([data, message], default=str))
        if size > max_bytes:
            raise FieldTooLargeError("data", size, max_bytes)
    checkpoint = body.get("checkpoint")
    if checkpoint is not None:
        if not isinstance(checkpoint, Mapping):
            raise ValidationError("must be an object", path="checkpoint")
        size = len(jsonio.dumps(checkpoint, default=str))
        if size > max_checkpoint_bytes:
            raise FieldTooLargeError("checkpoint", size, max_checkpoint_bytes)
    return ProgressReport(
        value=value,
        data=dict(data) if data is not None else None,
        message=message or None,
        checkpoint=None if checkpoint is None else CheckpointRequest(state=dict(checkpoint)),
    )


def _ignored(job: Job, worker_id: str | None) -> str | None:
    if job.state is not JobState.ACTIVE:
        return "not_active"
    if held_by_another(job, worker_id):
        return "not_owner"
    return None


def apply_report(job: Job, report: ProgressReport, now: datetime, worker_id: str | None) -> Job:
    """The job with ``report`` applied (the same object when the report is ignored)."""
    if _ignored(job, worker_id) is not None:
        return job
    previous = job.progress if job.progress and job.progress.attempt == job.attempt else None
    value = report.value
    if previous is not None and previous.value is not None:
        value = previous.value if value is None else max(value, previous.value)
    event_at = previous.event_at if previous is not None else None
    if event_at is None or now - event_at >= EVENT_INTERVAL:
        event_at = now  # this report is announced (progress_event)
    progress = Progress(
        value=value,
        data=report.data,
        message=report.message,
        attempt=job.attempt,
        updated_at=now,
        event_at=event_at,
    )
    job = attrs.evolve(prolong_visibility(job, now), progress=progress)
    if report.checkpoint is not None:
        # The job is active and the reporter's (checked above): the save cannot be refused.
        job = apply_checkpoint(job, report.checkpoint, now, worker_id)
    return job


def _announces(before: Job, after: Job) -> bool:
    """Whether the stored report is the first of its interval (``apply_report`` moved
    ``event_at``); compared with the version it was applied to, so a clock that has not moved
    (or a concurrent report that won) is no reason for a second event."""
    now = after.progress
    if now is None:
        return False
    then = before.progress
    if then is None or then.attempt != now.attempt:
        return True
    return then.event_at != now.event_at


def progress_event(job: Job, now: datetime) -> Event:
    """The ``job.progress`` event of a stored report: ``progress`` in percent, as the events
    spec has it, and ``value`` as the fraction the progress spec uses."""
    progress = job.progress
    assert progress is not None
    extra: dict[str, Any] = {"timestamp": format_ts(now)}
    if progress.value is not None:
        extra["progress"] = round(progress.value * 100)
        extra["value"] = progress.value
    if progress.message is not None:
        extra["message"] = progress.message
    return job_event("job.progress", job, now, **extra)


async def report_progress(
    service: JobService, job_id: str, report: ProgressReport, worker_id: str | None = None
) -> ProgressOutcome:
    """Store ``report`` on the job (a heartbeat too) and announce it unless throttled.

    :class:`~ojs_core.errors.NotFoundError` for an unknown job; a job that is not active, or
    is another worker's, is left alone (``accepted`` false with the ``reason``)."""
    now = service.now()
    before, after = await service.update_job(
        job_id, lambda job: apply_report(job, report, now, worker_id), now
    )
    if after is before:
        return ProgressOutcome(after, False, _ignored(after, worker_id) or "not_active")
    events = [progress_event(after, now)] if _announces(before, after) else []
    if report.checkpoint is not None and after.checkpoint is not None:
        events.append(checkpointed_event(after, now))
    await service.emit(events)
    return ProgressOutcome(after, True)


async def get_progress(service: JobService, job_id: str) -> Job:
    """The job whose progress is asked for (:class:`~ojs_core.errors.NotFoundError` if none);
    its progress is ``job.progress`` when it belongs to the current attempt."""
    return await service.get(job_id)
