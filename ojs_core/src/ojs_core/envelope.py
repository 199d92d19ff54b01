"""Parsing and validation of client input: enqueue requests and their policies, the worker
fields of a heartbeat, and the error a worker reports with a failed job.

OJS has two request styles (digest §13-§14): envelope fields at the top level (seconds, ISO
durations) and the HTTP binding's ``options{}`` (``*_ms`` values, ``delay_until``). Both are
accepted, with the aliases the spec and the official SDK use. Every error names the field path,
e.g. ``options.retry.max_attempts``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from . import versioning
from .errors import ValidationError
from .ids import is_uuid7, uuid7
from .model import (
    DEFAULT_UNIQUE_STATES,
    ON_LIMIT,
    Job,
    JobError,
    RateLimit,
    RetryPolicy,
    UniquePolicy,
    Window,
)
from .retry import BACKOFF_STRATEGIES
from .states import JobState
from .timeutil import parse_duration_ms, parse_ts

__all__ = [
    "LIFECYCLE_TIMESTAMPS",
    "MAX_DURATION_MS",
    "MAX_TIMEOUT_MS",
    "PRIORITY_NAMES",
    "QUEUE_RE",
    "TYPE_RE",
    "parse_enqueue",
    "parse_job_error",
    "parse_rate_limit",
    "parse_rate_limit_key",
    "parse_retry",
    "parse_unique",
    "validate_queue",
]

TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*\Z")
QUEUE_RE = re.compile(r"^[a-z0-9][a-z0-9\-.]*\Z")
#: Longest execution or visibility timeout accepted (30 days): beyond it a worker should heartbeat.
MAX_TIMEOUT_MS = 30 * 86_400_000
PRIORITY_NAMES = {"critical": 20, "high": 10, "normal": 0, "low": -10}
UNIQUE_DIMENSIONS = frozenset({"type", "queue", "args", "meta"})
ON_CONFLICT = {
    "reject": "reject",
    "replace": "replace",
    "replace_except_schedule": "replace_except_schedule",
    "ignore": "ignore",
    "use_existing": "ignore",
}

#: The lifecycle timestamps the system sets, in wire order.
LIFECYCLE_TIMESTAMPS = (
    "created_at",
    "enqueued_at",
    "started_at",
    "completed_at",
    "cancelled_at",
    "discarded_at",
    "activated_at",
)

#: Attributes an enqueue request may carry at the top level or under ``options``.
OPTION_FIELDS = frozenset(
    {
        "queue",
        "priority",
        "timeout",
        "timeout_ms",
        "scheduled_at",
        "delay_until",
        "delay_ms",
        "expires_at",
        "retry",
        "retry_policy",
        "unique",
        "tags",
        "visibility_timeout",
        "visibility_timeout_ms",
        "pending",
        "metadata",
        "rate_limit",
    }
)
KNOWN_FIELDS = frozenset({"id", "type", "args", "meta", "schema", "specversion", "options"})
#: System-managed attributes: a client may send them, but they are ignored (core §5.3). Every
#: attribute of :class:`Job` that a client does not set is one, so that none can be smuggled in
#: as an unknown field and read back as the real one (``workflow_pending``, say).
SYSTEM_FIELDS = frozenset(
    {
        *LIFECYCLE_TIMESTAMPS,
        "max_attempts",
        *(a.name for a in attrs.fields(Job) if a.name != "extra"),
    }
    - KNOWN_FIELDS
    - OPTION_FIELDS
)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _int(value: Any, path: str, *, minimum: int | None = None, status: int = 400) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("must be an integer", path=path, status=status)
    if isinstance(value, float) and not value.is_integer():
        raise ValidationError("must be an integer", path=path, status=status)
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValidationError(f"must be >= {minimum}", path=path, status=status)
    return number


#: The longest duration accepted anywhere (100 years of 365 days): a longer one would overflow
#: the timestamp arithmetic of a retry, a rate-limit window or a unique period.
MAX_DURATION_MS = 100 * 365 * 86_400_000


def _bounded_ms(ms: int, path: str, *, status: int = 400) -> int:
    if ms > MAX_DURATION_MS:
        raise ValidationError(
            f"must be at most {MAX_DURATION_MS} ms (100 years)", path=path, status=status
        )
    return ms


def _ms(value: Any, path: str, *, minimum: int = 0, status: int = 400) -> int:
    """A duration given as an integer number of milliseconds."""
    return _bounded_ms(_int(value, path, minimum=minimum, status=status), path, status=status)


def _duration(value: Any, path: str, *, status: int = 400) -> int:
    if isinstance(value, str):
        try:
            ms = parse_duration_ms(value)
        except ValueError as exc:
            raise ValidationError(str(exc), path=path, status=status) from None
        return _bounded_ms(ms, path, status=status)
    raise ValidationError("must be an ISO 8601 duration string", path=path, status=status)


def _timestamp(value: Any, path: str, now: datetime) -> datetime:
    if not isinstance(value, str):
        raise ValidationError("must be an RFC 3339 timestamp string", path=path)
    try:
        return parse_ts(value, now)
    except ValueError as exc:
        raise ValidationError(str(exc), path=path) from None


def _str_list(value: Any, path: str, *, status: int = 400) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("must be an array of strings", path=path, status=status)
    return tuple(value)


def validate_queue(value: Any, path: str = "queue") -> str:
    """Check a queue name: ``[a-z0-9][a-z0-9.-]*``, at most 128 characters."""
    if not isinstance(value, str) or not value:
        raise ValidationError("must be a non-empty string", path=path)
    if len(value) > 128 or not QUEUE_RE.match(value):
        raise ValidationError(
            "must match ^[a-z0-9][a-z0-9\\-.]*$ and be at most 128 characters", path=path
        )
    return value


def parse_retry(raw: Any, path: str = "retry", base: RetryPolicy | None = None) -> RetryPolicy:
    """Merge a (partial) retry policy over the defaults; invalid values give 422 (suite)."""
    if not isinstance(raw, Mapping):
        raise ValidationError("must be an object", path=path, status=422)
    policy = base or RetryPolicy()
    changes: dict[str, Any] = {}
    if "max_attempts" in raw and raw["max_attempts"] is not None:
        changes["max_attempts"] = _int(
            raw["max_attempts"], _join(path, "max_attempts"), minimum=0, status=422
        )
    for name in ("initial_interval", "max_interval"):
        if raw.get(f"{name}_ms") is not None:
            changes[f"{name}_ms"] = _ms(raw[f"{name}_ms"], _join(path, f"{name}_ms"), status=422)
        elif raw.get(name) is not None:
            value = raw[name]
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    ms = round(float(value) * 1000)
                except OverflowError:
                    raise ValidationError(
                        "is out of range", path=_join(path, name), status=422
                    ) from None
                changes[f"{name}_ms"] = _ms(ms, _join(path, name), status=422)
            else:
                changes[f"{name}_ms"] = _duration(value, _join(path, name), status=422)
    if raw.get("backoff_coefficient") is not None:
        c = raw["backoff_coefficient"]
        bad = isinstance(c, bool) or not isinstance(c, int | float)
        if bad or not math.isfinite(c) or c < 1.0:
            raise ValidationError(
                "backoff_coefficient must be a finite number >= 1.0",
                path=_join(path, "backoff_coefficient"),
                status=422,
            )
        changes["backoff_coefficient"] = float(c)
    if raw.get("jitter") is not None:
        if not isinstance(raw["jitter"], bool):
            raise ValidationError("must be a boolean", path=_join(path, "jitter"), status=422)
        changes["jitter"] = raw["jitter"]
    if raw.get("non_retryable_errors") is not None:
        changes["non_retryable_errors"] = _str_list(
            raw["non_retryable_errors"], _join(path, "non_retryable_errors"), status=422
        )
    if raw.get("on_exhaustion") is not None:
        if raw["on_exhaustion"] not in ("discard", "dead_letter"):
            raise ValidationError(
                "must be 'discard' or 'dead_letter'", path=_join(path, "on_exhaustion"), status=422
            )
        changes["on_exhaustion"] = raw["on_exhaustion"]
    strategy = raw.get("backoff_strategy", raw.get("backoff_type"))
    if strategy is not None:
        strategy = "constant" if strategy == "none" else strategy
        if strategy not in BACKOFF_STRATEGIES:
            raise ValidationError(
                f"must be one of {', '.join(BACKOFF_STRATEGIES)}",
                path=_join(path, "backoff_strategy"),
                status=422,
            )
        changes["backoff_strategy"] = strategy
    policy = attrs.evolve(policy, **changes)
    if policy.max_interval_ms < policy.initial_interval_ms:
        raise ValidationError(
            "max_interval must be >= initial_interval", path=_join(path, "max_interval"), status=422
        )
    return policy


def parse_unique(raw: Any, path: str = "unique") -> UniquePolicy:
    """Parse a unique policy in any of the spec's spellings (``keys``/``key``, ``use_existing``)."""
    if not isinstance(raw, Mapping):
        raise ValidationError("must be an object", path=path)
    changes: dict[str, Any] = {}
    keys_raw = raw.get("keys", raw.get("key"))
    if keys_raw is not None:
        keys = _str_list(keys_raw, _join(path, "keys"))
        bad = [k for k in keys if k not in UNIQUE_DIMENSIONS]
        if bad:
            raise ValidationError(
                f"unknown dimension(s) {bad}; allowed: type, queue, args, meta",
                path=_join(path, "keys"),
            )
        changes["keys"] = tuple(dict.fromkeys(("type", *keys)))
    for name in ("args_keys", "meta_keys"):
        if raw.get(name) is not None:
            changes[name] = _str_list(raw[name], _join(path, name))
    if (
        "meta" in changes.get("keys", ())
        and raw.get("meta_keys") is not None
        and not changes.get("meta_keys")
    ):
        raise ValidationError("must be non-empty", path=_join(path, "meta_keys"))
    if raw.get("period") is not None:
        changes["period_ms"] = _duration(raw["period"], _join(path, "period"))
    elif raw.get("period_ms") is not None:
        changes["period_ms"] = _ms(raw["period_ms"], _join(path, "period_ms"), minimum=1)
    if raw.get("states") is not None:
        names = _str_list(raw["states"], _join(path, "states"))
        try:
            changes["states"] = tuple(JobState(n) for n in names)
        except ValueError:
            raise ValidationError("contains an unknown state", path=_join(path, "states")) from None
    on_conflict = raw.get("on_conflict")
    if on_conflict is not None:
        if not isinstance(on_conflict, str) or on_conflict not in ON_CONFLICT:
            raise ValidationError(
                "must be one of reject, replace, replace_except_schedule, ignore",
                path=_join(path, "on_conflict"),
            )
        changes["on_conflict"] = ON_CONFLICT[on_conflict]
    policy = UniquePolicy(**changes)
    if policy.states == ():
        policy = attrs.evolve(policy, states=DEFAULT_UNIQUE_STATES)
    return policy


#: A rate-limit key (rate-limiting extension §6.2), at most :data:`MAX_RATE_LIMIT_KEY` long.
RATE_LIMIT_KEY_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._:-]*\Z")
MAX_RATE_LIMIT_KEY = 255
#: The largest ``concurrency``: every holder is kept in the key's record.
MAX_CONCURRENCY = 10_000
#: The largest ``limit`` of a rate window or throttle.
MAX_WINDOW_LIMIT = 1_000_000_000


def parse_rate_limit_key(value: Any, path: str) -> str:
    """A rate-limit key, or 400 naming ``path``."""
    if (
        not isinstance(value, str)
        or len(value) > MAX_RATE_LIMIT_KEY
        or not RATE_LIMIT_KEY_RE.match(value)
    ):
        raise ValidationError(
            f"must be 1-{MAX_RATE_LIMIT_KEY} characters of letters, digits and ._:- "
            "starting with a letter or digit",
            path=path,
        )
    return value


def _window(raw: Any, path: str) -> Window:
    if not isinstance(raw, Mapping):
        raise ValidationError("must be an object", path=path)
    if raw.get("limit") is None:
        raise ValidationError("is required", path=_join(path, "limit"))
    limit = _int(raw["limit"], _join(path, "limit"), minimum=1)
    if limit > MAX_WINDOW_LIMIT:
        raise ValidationError(f"must be at most {MAX_WINDOW_LIMIT}", path=_join(path, "limit"))
    period = raw.get("period", "PT1S")
    period_ms = (
        _ms(period, _join(path, "period"), minimum=1)
        if isinstance(period, int)
        else _duration(period, _join(path, "period"))
    )
    return Window(limit=limit, period_ms=max(1, period_ms))


def parse_rate_limit(raw: Any, path: str = "rate_limit", *, stored: bool = False) -> RateLimit:
    """The extension's ``{key, concurrency, rate: {limit, period}, throttle: {limit, period},
    on_limit}``; also the conformance suite's ``{max_per_second}`` and a bare ``{limit,
    period}`` (both a rate window). A ``stored`` policy (read back from a store) keeps any
    string key: older versions did not check keys, and a stored job must always be readable."""
    if not isinstance(raw, Mapping):
        raise ValidationError("must be an object", path=path)
    key = raw.get("key")
    if key is not None:
        if not stored:
            key = parse_rate_limit_key(key, _join(path, "key"))
        elif not isinstance(key, str):
            raise ValidationError("must be a string", path=_join(path, "key"))
    rate: Window | None = None
    if raw.get("max_per_second") is not None:
        mps = raw["max_per_second"]
        if isinstance(mps, bool) or not isinstance(mps, int | float) or not 0 < mps <= 1e9:
            raise ValidationError("must be a positive number", path=_join(path, "max_per_second"))
        if float(mps).is_integer():
            rate = Window(limit=int(mps), period_ms=1000)
        else:
            rate = Window(limit=1, period_ms=max(1, round(1000 / mps)))
    elif raw.get("rate") is not None:
        rate = _window(raw["rate"], _join(path, "rate"))
    elif raw.get("limit") is not None:
        rate = _window(raw, path)
    throttle = None
    if raw.get("throttle") is not None:
        throttle = _window(raw["throttle"], _join(path, "throttle"))
    concurrency = None
    if raw.get("concurrency") is not None:
        concurrency = _int(raw["concurrency"], _join(path, "concurrency"), minimum=0)
        if concurrency > MAX_CONCURRENCY:
            raise ValidationError(
                f"must be at most {MAX_CONCURRENCY}", path=_join(path, "concurrency")
            )
    on_limit = raw.get("on_limit", "wait")
    if on_limit not in ON_LIMIT:
        raise ValidationError("must be one of " + ", ".join(ON_LIMIT), path=_join(path, "on_limit"))
    if rate is None and throttle is None and concurrency is None:
        raise ValidationError(
            "needs at least one of concurrency, rate, throttle or max_per_second", path=path
        )
    return RateLimit(
        key=key, concurrency=concurrency, rate=rate, throttle=throttle, on_limit=on_limit
    )


def _priority(value: Any, path: str) -> int:
    if isinstance(value, str) and value.lower() in PRIORITY_NAMES:
        return PRIORITY_NAMES[value.lower()]
    p = _int(value, path)
    if not -100 <= p <= 100:
        raise ValidationError("must be between -100 and 100", path=path)
    return p


def _visibility(value: Any, path: str) -> int:
    if isinstance(value, str):
        return _duration(value, path)
    return _bounded_ms(_int(value, path, minimum=1) * 1000, path)


def parse_enqueue(body: Any, *, now: datetime, path: str = "") -> Job:
    """Turn one enqueue request into a new :class:`Job` in its initial state.

    Raises :class:`ValidationError` naming the field for anything invalid. The returned job has
    an id (the client's, or a fresh UUIDv7), ``created_at = now`` and the state the request
    implies: ``pending``, ``scheduled`` (future ``scheduled_at``) or ``available``.
    """
    if not isinstance(body, Mapping):
        raise ValidationError("job must be a JSON object", path=path or None)
    options_raw = body.get("options")
    if options_raw is not None and not isinstance(options_raw, Mapping):
        raise ValidationError("must be an object", path=_join(path, "options"))
    options: Mapping[str, Any] = options_raw or {}

    def opt(name: str) -> tuple[Any, str]:
        # Options win over top-level attributes: the binding's form is the more specific one.
        if options.get(name) is not None:
            return options[name], _join(path, f"options.{name}")
        return body.get(name), _join(path, name)

    jtype = body.get("type")
    if jtype is None:
        raise ValidationError("is required", path=_join(path, "type"))
    version: str | None = None
    if isinstance(jtype, str) and "@" in jtype:  # job versioning §5.3: "type@2.0"
        jtype, version = versioning.split_type(jtype)
        version = versioning.parse_version(version, _join(path, "type"))
    if body.get("version") is not None:  # §5.3: the field wins over the type's suffix
        version = versioning.parse_version(body["version"], _join(path, "version"))
    if not isinstance(jtype, str) or not jtype or len(jtype) > 255 or not TYPE_RE.match(jtype):
        raise ValidationError(
            "must be dot-separated lowercase segments matching [a-z][a-z0-9_-]*",
            path=_join(path, "type"),
        )
    args = body.get("args")
    if args is None:
        raise ValidationError("is required", path=_join(path, "args"))
    if not isinstance(args, list):
        raise ValidationError("must be a JSON array", path=_join(path, "args"))

    job_id = body.get("id")
    if job_id is None:
        job_id = uuid7(int(now.timestamp() * 1000))
    elif not isinstance(job_id, str) or not is_uuid7(job_id):
        raise ValidationError("must be a lowercase UUIDv7", path=_join(path, "id"))

    queue_v, queue_p = opt("queue")
    queue = "default" if queue_v is None else validate_queue(queue_v, queue_p)

    meta_v = body.get("meta")
    if meta_v is not None and not isinstance(meta_v, Mapping):
        raise ValidationError("must be an object", path=_join(path, "meta"))
    meta = dict(meta_v or {})
    metadata_v, metadata_p = opt("metadata")
    if metadata_v is not None:
        if not isinstance(metadata_v, Mapping):
            raise ValidationError("must be an object", path=metadata_p)
        meta.update(metadata_v)

    prio_v, prio_p = opt("priority")
    priority = 0 if prio_v is None else _priority(prio_v, prio_p)

    timeout_ms: int | None = None
    t_v, t_p = opt("timeout_ms")
    if t_v is not None:
        timeout_ms = _int(t_v, t_p, minimum=0) or None
    else:
        ts_v, ts_p = opt("timeout")
        if ts_v is not None:
            timeout_ms = _visibility(ts_v, ts_p)

    visibility_ms: int | None = None
    v_v, v_p = opt("visibility_timeout_ms")
    if v_v is not None:
        visibility_ms = _int(v_v, v_p, minimum=1)
    else:
        vs_v, vs_p = opt("visibility_timeout")
        if vs_v is not None:
            visibility_ms = _visibility(vs_v, vs_p)

    for value, name in ((timeout_ms, "timeout_ms"), (visibility_ms, "visibility_timeout_ms")):
        if value is not None and value > MAX_TIMEOUT_MS:
            raise ValidationError(
                f"must be at most {MAX_TIMEOUT_MS} ms (30 days)",
                path=_join(path, f"options.{name}"),
            )

    scheduled_at: datetime | None = None
    for name in ("scheduled_at", "delay_until"):
        s_v, s_p = opt(name)
        if s_v is not None:
            scheduled_at = _timestamp(s_v, s_p, now)
            break
    d_v, d_p = opt("delay_ms")
    if scheduled_at is None and d_v is not None:
        from datetime import timedelta

        try:
            scheduled_at = now + timedelta(milliseconds=_int(d_v, d_p, minimum=0))
        except OverflowError:
            raise ValidationError("is out of range", path=d_p) from None
    e_v, e_p = opt("expires_at")
    expires_at = None if e_v is None else _timestamp(e_v, e_p, now)

    retry = RetryPolicy()
    r_v, r_p = opt("retry")
    if r_v is None:
        r_v, r_p = opt("retry_policy")
    if r_v is not None:
        retry = parse_retry(r_v, r_p)

    u_v, u_p = opt("unique")
    unique = None if u_v is None else parse_unique(u_v, u_p)

    tags_v, tags_p = opt("tags")
    tags = [] if tags_v is None else list(_str_list(tags_v, tags_p))

    rl_v, rl_p = opt("rate_limit")
    rate_limit = None if rl_v is None else parse_rate_limit(rl_v, rl_p)

    pending_v, pending_p = opt("pending")
    if pending_v is not None and not isinstance(pending_v, bool):
        raise ValidationError("must be a boolean", path=pending_p)

    schema = body.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise ValidationError("must be a string", path=_join(path, "schema"))
    spec = body.get("specversion", "1.0")
    if spec != "1.0":
        raise ValidationError(
            "unsupported specversion; this server speaks 1.0", path=_join(path, "specversion")
        )

    extra = {
        k: v
        for k, v in body.items()
        if k not in KNOWN_FIELDS and k not in OPTION_FIELDS and k not in SYSTEM_FIELDS
    }
    if version is not None:
        extra["version"] = version

    if pending_v:
        state, enqueued_at = JobState.PENDING, None
    elif scheduled_at is not None and scheduled_at > now:
        state, enqueued_at = JobState.SCHEDULED, None
    else:
        state, enqueued_at = JobState.AVAILABLE, now

    return Job(
        id=job_id,
        type=jtype,
        queue=queue,
        args=args,
        meta=meta,
        priority=priority,
        timeout_ms=timeout_ms,
        visibility_timeout_ms=visibility_ms,
        scheduled_at=scheduled_at,
        expires_at=expires_at,
        retry=retry,
        unique=unique,
        schema=schema,
        tags=tags,
        rate_limit=rate_limit,
        extra=extra,
        state=state,
        created_at=now,
        enqueued_at=enqueued_at,
    )


#: What a heartbeat may tell about its worker, and the type each must have.
_WORKER_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "hostname": (str, "a string"),
    "pid": (int, "an integer"),
    "queues": (list, "an array of queue names"),
    "concurrency": (int, "an integer"),
    "labels": (dict, "an object"),
    "pool": (str, "a pool name"),
}
MAX_WORKER_QUEUES = 1000
#: A worker pool's name (fair scheduling, ``ojs_core.pools``).
POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_worker_fields(info: Mapping[str, Any]) -> dict[str, Any]:
    """The worker description a heartbeat carries (``hostname``, ``pid``, ``queues``,
    ``concurrency``, ``labels``), checked: a wrong type is a :class:`ValidationError` naming the
    field, never a record that later reads cannot decode. Absent and ``null`` fields are left
    out; other keys are ignored."""
    out: dict[str, Any] = {}
    for name, (kind, what) in _WORKER_FIELDS.items():
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValidationError(f"must be {what}", path=name)
        out[name] = value
    if "hostname" in out and len(out["hostname"]) > 255:
        raise ValidationError("must be at most 255 characters", path="hostname")
    for name in ("pid", "concurrency"):
        if name in out and out[name] < 0:
            raise ValidationError("must be >= 0", path=name)
    if "pool" in out and not POOL_NAME.match(out["pool"]):
        raise ValidationError(
            "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
            path="pool",
        )
    if "queues" in out:
        queues = out["queues"]
        if len(queues) > MAX_WORKER_QUEUES:
            raise ValidationError(f"must list at most {MAX_WORKER_QUEUES} queues", path="queues")
        out["queues"] = [validate_queue(q, f"queues[{i}]") for i, q in enumerate(queues)]
    return out


def parse_job_error(raw: Any, path: str = "error") -> JobError:
    """Accept the binding's ``{code, message, retryable, details}`` and core's ``{type, message,
    backtrace}`` error objects."""
    if raw is None:
        return JobError(code="handler_error", message="job failed")
    if isinstance(raw, str):
        return JobError(code="handler_error", message=raw)
    if not isinstance(raw, Mapping):
        raise ValidationError("must be an object", path=path)
    code = raw.get("code")
    etype = raw.get("type")
    message = raw.get("message", "")
    retryable = raw.get("retryable")
    details = raw.get("details")
    backtrace = raw.get("backtrace", raw.get("stack_trace"))
    if code is not None and not isinstance(code, str):
        raise ValidationError("must be a string", path=f"{path}.code")
    if etype is not None and not isinstance(etype, str):
        raise ValidationError("must be a string", path=f"{path}.type")
    if not isinstance(message, str):
        raise ValidationError("must be a string", path=f"{path}.message")
    if retryable is not None and not isinstance(retryable, bool):
        raise ValidationError("must be a boolean", path=f"{path}.retryable")
    if details is not None and not isinstance(details, Mapping):
        raise ValidationError("must be an object", path=f"{path}.details")
    if isinstance(backtrace, str):
        backtrace = backtrace.splitlines()
    if backtrace is not None and not isinstance(backtrace, list):
        raise ValidationError("must be an array of strings", path=f"{path}.backtrace")
    if etype is None and isinstance(details, Mapping):
        cls = details.get("error_class")
        etype = cls if isinstance(cls, str) else None
    until = raw.get("rate_limit_until")
    if until is None and isinstance(details, Mapping):
        until = details.get("rate_limit_until")
    if until is not None:
        # Rate-limiting extension §9: no job of the failed job's key starts before then.
        upath = f"{path}.rate_limit_until"
        if not isinstance(until, str):
            raise ValidationError("must be an RFC 3339 timestamp", path=upath)
        try:
            parse_ts(until)
        except ValueError:
            raise ValidationError("must be an RFC 3339 timestamp", path=upath) from None
        details = {**(details or {}), "rate_limit_until": until}
    return JobError(
        code=code or "handler_error",
        message=message,
        type=etype,
        retryable=retryable,
        details=dict(details) if details else None,
        backtrace=[str(b) for b in backtrace][:50] if backtrace else None,
    )
