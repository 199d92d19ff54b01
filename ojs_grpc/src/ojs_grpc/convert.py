"""Between ``ojs.v1`` messages and what :class:`~ojs_core.service.JobService` takes and returns.

Requests become the HTTP binding's JSON bodies (``{"type", "args", "options": {...}}``), which
the service parses and validates exactly as it does for HTTP: one parser, one set of rules, the
same error paths. Answers are built from the core model (:class:`~ojs_core.model.Job`, the
workflow's wire form). ``docs/grpc.md`` lists how each field maps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ojs_core.envelope import parse_enqueue
from ojs_core.errors import ValidationError
from ojs_core.model import CronJob, Event, Job, RetryPolicy, UniquePolicy
from ojs_core.states import JobState
from ojs_core.timeutil import format_ts, parse_ts

from ._gen import events_pb2, job_pb2, service_pb2, workflow_pb2
from .values import (
    dict_to_struct,
    duration_ms,
    fill_value,
    ms_to_duration,
    struct_to_dict,
    to_datetime,
    to_timestamp,
    values_to_list,
)

__all__ = [
    "cron_body",
    "cron_entry",
    "enqueue_body",
    "event_message",
    "job_message",
    "merged_options",
    "workflow_body",
    "workflow_message",
]

#: The enum numbers (typed ``Any``: the stubs type them as their own enum classes).
_STATES: dict[JobState, Any] = {
    s: job_pb2.JobState.Value(f"JOB_STATE_{s.value.upper()}") for s in JobState
}
_CONFLICTS: dict[Any, str] = {
    job_pb2.UNIQUE_CONFLICT_ACTION_REJECT: "reject",
    job_pb2.UNIQUE_CONFLICT_ACTION_REPLACE: "replace",
    job_pb2.UNIQUE_CONFLICT_ACTION_IGNORE: "ignore",
    job_pb2.UNIQUE_CONFLICT_ACTION_REPLACE_EXCEPT_SCHEDULE: "replace_except_schedule",
}
_CONFLICT_OUT: dict[str, Any] = {v: k for k, v in _CONFLICTS.items()}
_STATE_NAMES = {v: k.value for k, v in _STATES.items()}
_WORKFLOW_STATES = {
    "running": workflow_pb2.WORKFLOW_STATE_RUNNING,
    "completed": workflow_pb2.WORKFLOW_STATE_COMPLETED,
    "failed": workflow_pb2.WORKFLOW_STATE_FAILED,
    "cancelled": workflow_pb2.WORKFLOW_STATE_CANCELLED,
}
#: A step's state from its job's: ``pending`` waits on its dependencies; scheduled, available
#: and retryable jobs are ready to run (``PENDING`` in the proto's words).
_STEP_STATES = {
    "pending": workflow_pb2.WORKFLOW_STEP_STATE_WAITING,
    "scheduled": workflow_pb2.WORKFLOW_STEP_STATE_PENDING,
    "available": workflow_pb2.WORKFLOW_STEP_STATE_PENDING,
    "retryable": workflow_pb2.WORKFLOW_STEP_STATE_PENDING,
    "active": workflow_pb2.WORKFLOW_STEP_STATE_ACTIVE,
    "completed": workflow_pb2.WORKFLOW_STEP_STATE_COMPLETED,
    "discarded": workflow_pb2.WORKFLOW_STEP_STATE_FAILED,
    "cancelled": workflow_pb2.WORKFLOW_STEP_STATE_CANCELLED,
}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# -- requests -------------------------------------------------------------------------------


def _retry_body(policy: job_pb2.RetryPolicy, path: str) -> dict[str, Any]:
    # proto3 scalars have no presence: a zero means "not given" (the OJS defaults apply),
    # except ``jitter``, which is taken as sent once a retry policy is sent at all.
    out: dict[str, Any] = {"jitter": policy.jitter}
    if policy.max_attempts:
        out["max_attempts"] = policy.max_attempts
    if policy.HasField("initial_interval"):
        out["initial_interval_ms"] = duration_ms(
            policy.initial_interval, f"{path}.initial_interval"
        )
    if policy.backoff_coefficient:
        if not math.isfinite(policy.backoff_coefficient):
            raise ValidationError(
                "must be a finite number >= 1.0", path=f"{path}.backoff_coefficient"
            )
        out["backoff_coefficient"] = policy.backoff_coefficient
    if policy.HasField("max_interval"):
        out["max_interval_ms"] = duration_ms(policy.max_interval, f"{path}.max_interval")
    if policy.non_retryable_errors:
        out["non_retryable_errors"] = list(policy.non_retryable_errors)
    if policy.on_exhaustion:
        out["on_exhaustion"] = policy.on_exhaustion
    return out


def _unique_body(policy: job_pb2.UniquePolicy, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if policy.key:
        out["keys"] = list(policy.key)
    if policy.HasField("period"):
        out["period_ms"] = duration_ms(policy.period, f"{path}.period")
    if policy.on_conflict:
        if policy.on_conflict not in _CONFLICTS:
            raise ValidationError("is not a known conflict action", path=f"{path}.on_conflict")
        out["on_conflict"] = _CONFLICTS[policy.on_conflict]
    if policy.states:
        if any(s not in _STATE_NAMES for s in policy.states):
            raise ValidationError("contains an unknown state", path=f"{path}.states")
        out["states"] = [_STATE_NAMES[s] for s in policy.states]
    if policy.args_keys:
        out["args_keys"] = list(policy.args_keys)
    if policy.meta_keys:
        out["meta_keys"] = list(policy.meta_keys)
    return out


def _options_body(
    options: job_pb2.EnqueueOptions, now: datetime | None, path: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HTTP ``options`` object and the ``meta`` of ``options``. ``now`` turns a ``ttl``
    into ``expires_at``; ``None`` refuses a ``ttl`` (a cron template has no fixed time)."""
    out: dict[str, Any] = {}
    if options.queue:
        out["queue"] = options.queue
    if options.priority:
        out["priority"] = options.priority
    if options.HasField("delay_until"):
        out["delay_until"] = format_ts(to_datetime(options.delay_until, f"{path}.delay_until"))
    if options.HasField("timeout"):
        out["timeout_ms"] = duration_ms(options.timeout, f"{path}.timeout")
    retry = _retry_body(options.retry, f"{path}.retry") if options.HasField("retry") else {}
    if options.max_attempts and "max_attempts" not in retry:
        retry["max_attempts"] = options.max_attempts  # the shorthand; retry's own wins
    if retry:
        out["retry"] = retry
    if options.HasField("unique"):
        out["unique"] = _unique_body(options.unique, f"{path}.unique")
    if options.HasField("ttl"):
        if now is None:
            raise ValidationError("is not supported in a cron template", path=f"{path}.ttl")
        ttl = duration_ms(options.ttl, f"{path}.ttl")
        try:
            expires = now + timedelta(milliseconds=ttl)
        except OverflowError:  # within the 100-year bound, past year 9999 only in a test clock
            raise ValidationError("is out of range", path=f"{path}.ttl") from None
        out["expires_at"] = format_ts(expires)
    if options.tags:
        out["tags"] = list(options.tags)
    if options.HasField("visibility_timeout"):
        out["visibility_timeout_ms"] = duration_ms(
            options.visibility_timeout, f"{path}.visibility_timeout"
        )
    meta = struct_to_dict(options.meta, f"{path}.meta") if options.HasField("meta") else {}
    if options.trace_id:
        meta.setdefault("trace_id", options.trace_id)
    return out, meta


def enqueue_body(
    job_type: str,
    args: Any,
    options: job_pb2.EnqueueOptions | None,
    now: datetime | None,
    path: str = "",
) -> dict[str, Any]:
    """The HTTP enqueue body of a ``type``/``args``/``options`` triple (``Enqueue``,
    ``EnqueueBatch`` entries, cron templates, workflow steps)."""
    body: dict[str, Any] = {"type": job_type, "args": values_to_list(args, _join(path, "args"))}
    if options is not None:
        opts, meta = _options_body(options, now, _join(path, "options"))
        if opts:
            body["options"] = opts
        if meta:
            body["meta"] = meta
    return body


def merged_options(
    default: job_pb2.EnqueueOptions, entry: job_pb2.EnqueueOptions
) -> job_pb2.EnqueueOptions:
    """A batch entry's options over the batch's ``default_options`` (field by field; the
    entry's ``tags`` replace the default's rather than adding to them)."""
    merged = job_pb2.EnqueueOptions()
    merged.CopyFrom(default)
    merged.MergeFrom(entry)
    if entry.tags:
        del merged.tags[:]
        merged.tags.extend(entry.tags)
    return merged


def cron_body(request: service_pb2.RegisterCronRequest) -> dict[str, Any]:
    """The HTTP cron registration of a ``RegisterCron`` request (the cron spec's shape)."""
    template = enqueue_body(
        request.type,
        request.args,
        request.options if request.HasField("options") else None,
        None,
    )
    body: dict[str, Any] = {"name": request.name, "cron": request.cron, **template}
    if request.timezone:
        body["timezone"] = request.timezone
    return body


def workflow_body(request: workflow_pb2.CreateWorkflowRequest, now: datetime) -> dict[str, Any]:
    """The HTTP workflow request (a graph of steps with ``depends_on``)."""
    steps = []
    for i, step in enumerate(request.steps):
        path = f"steps[{i}]"
        body = enqueue_body(
            step.type, step.args, step.options if step.HasField("options") else None, now, path
        )
        body["id"] = step.id
        if step.depends_on:
            body["depends_on"] = list(step.depends_on)
        steps.append(body)
    out: dict[str, Any] = {"steps": steps}
    if request.name:
        out["name"] = request.name
    return out


# -- answers --------------------------------------------------------------------------------


def _retry_message(target: job_pb2.RetryPolicy, policy: RetryPolicy) -> None:
    target.max_attempts = policy.max_attempts
    ms_to_duration(target.initial_interval, policy.initial_interval_ms)
    target.backoff_coefficient = policy.backoff_coefficient
    ms_to_duration(target.max_interval, policy.max_interval_ms)
    target.jitter = policy.jitter
    target.non_retryable_errors.extend(policy.non_retryable_errors)
    if policy.on_exhaustion:
        target.on_exhaustion = policy.on_exhaustion


def _unique_message(target: job_pb2.UniquePolicy, policy: UniquePolicy) -> None:
    target.key.extend(policy.keys)
    if policy.period_ms is not None:
        ms_to_duration(target.period, policy.period_ms)
    target.on_conflict = _CONFLICT_OUT.get(policy.on_conflict, 0)
    target.states.extend(_STATES[s] for s in policy.states)
    target.args_keys.extend(policy.args_keys or ())
    target.meta_keys.extend(policy.meta_keys or ())


def job_message(job: Job, target: job_pb2.Job | None = None) -> job_pb2.Job:
    """The ``Job`` message of ``job`` (filled into ``target`` when given)."""
    out = job_pb2.Job() if target is None else target
    out.id = job.id
    out.type = job.type
    out.queue = job.queue
    for arg in job.args:
        fill_value(out.args.add(), arg)
    if job.meta:
        dict_to_struct(out.meta, job.meta)
        trace = job.meta.get("trace_id")
        if isinstance(trace, str):
            out.trace_id = trace
    out.state = _STATES[job.state]
    out.priority = job.priority
    out.attempt = job.attempt
    out.max_attempts = job.retry.max_attempts
    _retry_message(out.retry_policy, job.retry)
    if job.unique is not None:
        _unique_message(out.unique_policy, job.unique)
    if job.result is not None:
        # Struct holds objects only: any other result is carried as {"value": result}.
        result = job.result if isinstance(job.result, Mapping) else {"value": job.result}
        dict_to_struct(out.result, result)
    for error in job.errors or ([job.error] if job.error else []):
        item = out.errors.add(code=error.code, message=error.message)
        item.retryable = bool(error.retryable)
        if error.attempt is not None:
            item.attempt = error.attempt
        if error.occurred_at is not None:
            to_timestamp(item.occurred_at, error.occurred_at)
        if error.backtrace:
            item.backtrace = "\n".join(error.backtrace)
        if error.details:
            dict_to_struct(item.details, error.details)
    finished = job.completed_at or job.cancelled_at or job.discarded_at
    for field, when in (
        (out.created_at, job.created_at),
        (out.enqueued_at, job.enqueued_at),
        (out.scheduled_at, job.scheduled_at),
        (out.started_at, job.started_at),
        (out.completed_at, finished),
        (out.expires_at, job.expires_at),
    ):
        if when is not None:
            to_timestamp(field, when)
    if job.timeout_ms is not None:
        ms_to_duration(out.timeout, job.timeout_ms)
    if job.visibility_timeout_ms is not None:
        ms_to_duration(out.visibility_timeout, job.visibility_timeout_ms)
    out.tags.extend(job.tags)
    if job.workflow_id:
        out.workflow_id = job.workflow_id
    out.specversion = job.specversion
    return out


def _options_of(job: Job, target: job_pb2.EnqueueOptions) -> None:
    """The enqueue options a (template) job was made with."""
    if job.queue != "default":
        target.queue = job.queue
    target.priority = job.priority
    if job.timeout_ms is not None:
        ms_to_duration(target.timeout, job.timeout_ms)
    _retry_message(target.retry, job.retry)
    if job.unique is not None:
        _unique_message(target.unique, job.unique)
    target.tags.extend(job.tags)
    if job.meta:
        dict_to_struct(target.meta, job.meta)
    target.max_attempts = job.retry.max_attempts
    if job.visibility_timeout_ms is not None:
        ms_to_duration(target.visibility_timeout, job.visibility_timeout_ms)


def cron_entry(cron: CronJob, now: datetime) -> service_pb2.CronEntry:
    """The ``CronEntry`` of a stored cron entry (its template's options re-read)."""
    entry = service_pb2.CronEntry(
        name=cron.name, cron=cron.expression, timezone=cron.timezone, type=""
    )
    template = dict(cron.job_template)
    template.setdefault("args", [])
    template.pop("id", None)
    job = parse_enqueue(template, now=now)
    entry.type = job.type
    for arg in job.args:
        fill_value(entry.args.add(), arg)
    _options_of(job, entry.options)
    if cron.next_run_at is not None:
        to_timestamp(entry.next_run_at, cron.next_run_at)
    if cron.last_run_at is not None:
        to_timestamp(entry.last_run_at, cron.last_run_at)
    return entry


def workflow_message(wire: Mapping[str, Any]) -> workflow_pb2.Workflow:
    """The ``Workflow`` message of the service's workflow (its HTTP wire form)."""
    out = workflow_pb2.Workflow(
        id=wire["id"],
        name=wire.get("name") or "",
        state=_WORKFLOW_STATES.get(wire["state"], workflow_pb2.WORKFLOW_STATE_UNSPECIFIED),
    )
    for step in wire["steps"]:
        out.steps.add(
            id=step["id"],
            type=step.get("type") or "",
            state=_STEP_STATES.get(step["state"], workflow_pb2.WORKFLOW_STEP_STATE_UNSPECIFIED),
            job_id=step["job_id"],
            depends_on=step.get("depends_on", []),
        )
    to_timestamp(out.created_at, parse_ts(wire["created_at"]))
    if wire.get("completed_at"):
        to_timestamp(out.completed_at, parse_ts(wire["completed_at"]))
    return out


def event_message(event: Event) -> events_pb2.Event:
    """The ``Event`` message of a lifecycle event; ``data`` carries the event's own data and
    its number in the event log (``seq``)."""
    data = event.data
    out = events_pb2.Event(
        id=event.id,
        type=event.type,
        job_id=str(data.get("job_id") or ""),
        job_type=str(data.get("job_type") or ""),
        queue=str(data.get("queue") or ""),
        workflow_id=str(data.get("workflow_id") or ""),
    )
    to_timestamp(out.timestamp, event.time)
    dict_to_struct(out.data, {**data, "seq": event.seq})
    return out
