"""The one cattrs converter between model objects and their JSON-ready wire form.

The same form is used on the wire and by backends that store jobs as JSON, so a job read back
from storage equals the job written. Hooks handle the odd cases: timestamps as RFC 3339, retry
and unique policies with ISO 8601 durations, unknown envelope fields flattened to the top level,
and ``None``-valued fields left out (OJS wants absent, not ``null``, e.g. for ``started_at``).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn

from .envelope import LIFECYCLE_TIMESTAMPS, parse_rate_limit, parse_retry, parse_unique
from .model import (
    Checkpoint,
    CronJob,
    Event,
    Job,
    JobError,
    Progress,
    RateLimit,
    RetryPolicy,
    UniquePolicy,
    Window,
    Workflow,
)
from .timeutil import format_duration, format_ts, parse_ts

__all__ = [
    "converter",
    "cron_to_wire",
    "event_to_wire",
    "job_from_dict",
    "job_to_wire",
]

converter = cattrs.Converter()
converter.register_unstructure_hook(datetime, format_ts)
converter.register_structure_hook(datetime, lambda v, _: parse_ts(v))


def _retry_out(p: RetryPolicy) -> dict[str, Any]:
    out = {
        "max_attempts": p.max_attempts,
        "initial_interval": format_duration(p.initial_interval_ms),
        "backoff_coefficient": p.backoff_coefficient,
        "max_interval": format_duration(p.max_interval_ms),
        "jitter": p.jitter,
        "non_retryable_errors": list(p.non_retryable_errors),
        "on_exhaustion": p.on_exhaustion,
        "backoff_strategy": p.backoff_strategy,
    }
    if p.on_exhaustion is None:  # not chosen (a template): the server's default applies
        del out["on_exhaustion"]
    return out


def _unique_out(p: UniquePolicy) -> dict[str, Any]:
    out: dict[str, Any] = {
        "keys": list(p.keys),
        "states": [s.value for s in p.states],
        "on_conflict": p.on_conflict,
    }
    if p.args_keys is not None:
        out["args_keys"] = list(p.args_keys)
    if p.meta_keys is not None:
        out["meta_keys"] = list(p.meta_keys)
    if p.period_ms is not None:
        out["period"] = format_duration(p.period_ms)
    return out


def _window_out(w: Window) -> dict[str, Any]:
    return {"limit": w.limit, "period": format_duration(w.period_ms)}


def _rate_out(r: RateLimit) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.key is not None:
        out["key"] = r.key
    if r.concurrency is not None:
        out["concurrency"] = r.concurrency
    if r.rate is not None:
        out["rate"] = _window_out(r.rate)
        if r.rate.period_ms == 1000:
            out["max_per_second"] = r.rate.limit
    if r.throttle is not None:
        out["throttle"] = _window_out(r.throttle)
    if r.on_limit != "wait":
        out["on_limit"] = r.on_limit
    return out


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a JSON value: dicts and lists become tuples, and scalars carry
    their type (``True`` and ``1`` are equal in Python, not in JSON)."""
    if isinstance(value, dict):
        return ("{}", *sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("[]", *(_frozen(v) for v in value))
    return (type(value).__name__, value)


def _cached_parse(parse: Any) -> Any:
    """Structure hook for a policy: stored policies repeat (defaults, one per producer), so
    each distinct one is validated once; policies are frozen, so sharing them is safe. A value
    that fails to parse is not remembered (it raises every time)."""
    cache: dict[Any, Any] = {}

    def hook(value: Any, _: Any) -> Any:
        try:
            key = _frozen(value)
            hit = cache.get(key)
        except TypeError:  # unhashable after all (a float NaN, say): no caching
            return parse(value)
        if hit is None:
            hit = parse(value)
            if len(cache) >= _POLICY_CACHE:
                cache.clear()
            cache[key] = hit
        return hit

    return hook


#: Distinct policies remembered per kind (retry, unique, rate limit).
_POLICY_CACHE = 1024


converter.register_unstructure_hook(RetryPolicy, _retry_out)
converter.register_structure_hook(RetryPolicy, _cached_parse(parse_retry))
converter.register_unstructure_hook(UniquePolicy, _unique_out)
converter.register_structure_hook(UniquePolicy, _cached_parse(parse_unique))
converter.register_unstructure_hook(RateLimit, _rate_out)
converter.register_structure_hook(
    RateLimit, _cached_parse(functools.partial(parse_rate_limit, stored=True))
)


def _drop_none(fn: Any) -> Any:
    def hook(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in fn(obj).items() if v is not None}

    return hook


converter.register_unstructure_hook(
    JobError, _drop_none(make_dict_unstructure_fn(JobError, converter))
)
converter.register_unstructure_hook(
    Workflow, _drop_none(make_dict_unstructure_fn(Workflow, converter))
)
converter.register_unstructure_hook(
    CronJob, _drop_none(make_dict_unstructure_fn(CronJob, converter))
)


def _progress_out(p: Progress) -> dict[str, Any]:
    # ``percentage`` is derived (what the official SDK reports); it is ignored when read back.
    out: dict[str, Any] = {
        "value": p.value,
        "percentage": p.percentage,
        "data": _plain(p.data),
        "message": p.message,
        "attempt": p.attempt,
        "updated_at": format_ts(p.updated_at),
        "event_at": _ts(p.event_at),
    }
    return {k: v for k, v in out.items() if v is not None}


def _checkpoint_out(c: Checkpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "state": _plain(c.state),
        "sequence": c.sequence,
        "created_at": format_ts(c.created_at),
        "attempt": c.attempt,
        "worker_id": c.worker_id,
        "step_index": c.step_index,
        "metadata": _plain(c.metadata),
    }
    # ``state`` stays even when null: a null checkpoint state is a value the worker saved.
    return {k: v for k, v in out.items() if v is not None or k == "state"}


converter.register_unstructure_hook(Progress, _progress_out)
converter.register_unstructure_hook(Checkpoint, _checkpoint_out)

_job_base_out = make_dict_unstructure_fn(Job, converter)
_job_base_in = make_dict_structure_fn(Job, converter)
_JOB_FIELDS = frozenset(a.name for a in Job.__attrs_attrs__)
#: Fields derived on output that must not land in ``extra`` when read back.
_DERIVED = frozenset({"max_attempts"})


def _job_out_reference(job: Job) -> dict[str, Any]:
    """The generic (cattrs-driven) form of :func:`_job_out`: the specification that the fast
    encoder below is tested against."""
    d = _job_base_out(job)
    extra = d.pop("extra")
    out = {k: v for k, v in d.items() if v is not None}
    if not out["errors"]:
        del out["errors"]
    if not out["dead_letter"]:
        del out["dead_letter"]
    if not out["workflow_pending"]:
        del out["workflow_pending"]
    if not out["checkpoint_seq"]:
        del out["checkpoint_seq"]
    out["max_attempts"] = job.retry.max_attempts
    for k, v in extra.items():
        out.setdefault(k, v)
    return out


@functools.lru_cache(maxsize=256)
def _policy_out(policy: RetryPolicy | UniquePolicy | RateLimit) -> dict[str, Any]:
    # Policies are frozen and mostly shared (defaults, one per producer): convert each once.
    return converter.unstructure(policy)  # type: ignore[no-any-return]


def _copy_policy(policy: RetryPolicy | UniquePolicy | RateLimit) -> dict[str, Any]:
    try:
        cached = _policy_out(policy)
    except TypeError:  # pragma: no cover - an unhashable value inside a policy
        return converter.unstructure(policy)  # type: ignore[no-any-return]
    return {k: list(v) if isinstance(v, list) else v for k, v in cached.items()}


def _plain(value: Any) -> Any:
    # JSON values (args, meta, result): what cattrs does to an ``Any`` field, without the walk
    # through the type machinery: containers are copied, so the output shares nothing mutable.
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):  # an in-process caller's value: as cattrs would write it
        return format_ts(value)
    return value


def _error_out(error: JobError) -> dict[str, Any]:
    return converter.unstructure(error)  # type: ignore[no-any-return]


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def _job_out(job: Job) -> dict[str, Any]:
    # Hand-written for speed (every stored write and every response encodes a job); equal to
    # _job_out_reference for every job, which the tests check.
    out: dict[str, Any] = {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "args": _plain(job.args),
        "meta": _plain(job.meta),
        "priority": job.priority,
        "specversion": job.specversion,
    }
    if job.timeout_ms is not None:
        out["timeout_ms"] = job.timeout_ms
    if job.visibility_timeout_ms is not None:
        out["visibility_timeout_ms"] = job.visibility_timeout_ms
    if job.scheduled_at is not None:
        out["scheduled_at"] = format_ts(job.scheduled_at)
    if job.expires_at is not None:
        out["expires_at"] = format_ts(job.expires_at)
    out["retry"] = _copy_policy(job.retry)
    if job.unique is not None:
        out["unique"] = _copy_policy(job.unique)
    if job.schema is not None:
        out["schema"] = job.schema
    out["tags"] = list(job.tags)
    if job.rate_limit is not None:
        out["rate_limit"] = _copy_policy(job.rate_limit)
    out["state"] = job.state.value
    out["attempt"] = job.attempt
    for name in LIFECYCLE_TIMESTAMPS:
        value = getattr(job, name)
        if value is not None:
            out[name] = format_ts(value)
    if job.error is not None:
        out["error"] = _error_out(job.error)
    if job.errors:
        out["errors"] = [_error_out(e) for e in job.errors]
    if job.result is not None:
        out["result"] = _plain(job.result)
    if job.worker_id is not None:
        out["worker_id"] = job.worker_id
    if job.next_attempt_at is not None:
        out["next_attempt_at"] = format_ts(job.next_attempt_at)
    if job.retry_delay_ms is not None:
        out["retry_delay_ms"] = job.retry_delay_ms
    if job.parent_results is not None:
        out["parent_results"] = _plain(job.parent_results)
    if job.dead_letter:
        out["dead_letter"] = True
    if job.workflow_pending:
        out["workflow_pending"] = True
    if job.progress is not None:
        out["progress"] = _progress_out(job.progress)
    if job.checkpoint is not None:
        out["checkpoint"] = _checkpoint_out(job.checkpoint)
    if job.checkpoint_seq:
        out["checkpoint_seq"] = job.checkpoint_seq
    if job.visible_until is not None:
        out["visible_until"] = format_ts(job.visible_until)
    if job.retain_until is not None:
        out["retain_until"] = format_ts(job.retain_until)
    if job.unique_key is not None:
        out["unique_key"] = job.unique_key
    if job.workflow_id is not None:
        out["workflow_id"] = job.workflow_id
    if job.workflow_node is not None:
        out["workflow_node"] = job.workflow_node
    if job.pool is not None:
        out["pool"] = job.pool
    out["max_attempts"] = job.retry.max_attempts
    for k, v in job.extra.items():
        if k not in out:
            out[k] = _plain(v)
    return out


def _job_in(d: dict[str, Any], _: Any) -> Job:
    # ``extra`` is flattened on output, so a top-level "extra" key is a client's unknown field.
    known = {k: v for k, v in d.items() if k in _JOB_FIELDS and k != "extra"}
    extra = {
        k: v for k, v in d.items() if (k not in _JOB_FIELDS or k == "extra") and k not in _DERIVED
    }
    for name, is_ours in _LATER_FIELDS.items():
        if name in known and not is_ours(known[name]):
            # Stored before this field existed: a client's unknown field of the same name.
            extra[name] = known.pop(name)
    if extra:
        known["extra"] = extra
    return _job_base_in(known, Job)


#: Job fields added after records were first stored, and how to tell the field's own value
#: from a client's unknown top-level field of the same name kept by an older version.
_LATER_FIELDS: dict[str, Any] = {
    "progress": lambda v: isinstance(v, dict) and "updated_at" in v,
    "checkpoint": lambda v: isinstance(v, dict) and "sequence" in v and "created_at" in v,
    "checkpoint_seq": lambda v: isinstance(v, int) and not isinstance(v, bool),
    # A client's unknown top-level "pool" read as ours only names a key the job never held:
    # its release is a no-op.
    "pool": lambda v: isinstance(v, str),
}


converter.register_unstructure_hook(Job, _job_out)
converter.register_structure_hook(Job, _job_in)


def job_to_wire(job: Job) -> dict[str, Any]:
    """The job as the HTTP binding returns it (also the storage form)."""
    out: dict[str, Any] = converter.unstructure(job)
    return out


def job_from_dict(d: dict[str, Any]) -> Job:
    """Rebuild a job from :func:`job_to_wire` output (e.g. read back from storage)."""
    return converter.structure(d, Job)


def event_to_wire(event: Event) -> dict[str, Any]:
    """CloudEvents-style envelope plus the flat fields conformance level 0 lists."""
    out: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": format_ts(event.time),
        "timestamp": format_ts(event.time),
        "datacontenttype": "application/json",
        "data": event.data,
    }
    if event.subject is not None:
        out["subject"] = event.subject
    for k in ("job_id", "queue", "state"):
        if k in event.data:
            out[k] = event.data[k]
    return out


def cron_to_wire(cron: CronJob) -> dict[str, Any]:
    """A cron entry in the union of the openapi/suite and the cron-spec shapes."""
    tpl = cron.job_template
    out: dict[str, Any] = {
        "name": cron.name,
        "expression": cron.expression,
        "cron": cron.expression,
        "timezone": cron.timezone,
        "overlap_policy": cron.overlap_policy,
        "enabled": cron.enabled,
        "job_template": tpl,
        "type": tpl.get("type"),
        "args": tpl.get("args", []),
        "run_count": cron.run_count,
        "status": "active" if cron.enabled else "disabled",
        "next_run_at": format_ts(cron.next_run_at) if cron.next_run_at else None,
        "last_run_at": format_ts(cron.last_run_at) if cron.last_run_at else None,
    }
    if tpl.get("options") is not None:
        out["options"] = tpl["options"]
    if cron.description is not None:
        out["description"] = cron.description
    if cron.created_at is not None:
        out["created_at"] = format_ts(cron.created_at)
    if cron.updated_at is not None:
        out["updated_at"] = format_ts(cron.updated_at)
    return out
