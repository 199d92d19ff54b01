"""JSON Schemas of the binding's request and response bodies, for the OpenAPI document.

Small and honest: each schema states the fields a client can rely on (required, typed) and
leaves the rest open (``additionalProperties`` is allowed), because responses carry the union
of several specs' shapes. Request schemas describe what the server accepts; the server itself
validates in :mod:`ojs_core.envelope` and answers 400 with the field path for anything else.
"""

from __future__ import annotations

from typing import Any

from ojs_core.envelope import MAX_TIMEOUT_MS

__all__ = [
    "ACK",
    "CRON",
    "CRON_REQUEST",
    "ENQUEUE",
    "ERROR",
    "EVENT",
    "FETCH",
    "HEARTBEAT",
    "JOB",
    "NACK",
    "PAGINATION",
    "WORKFLOW",
    "WORKFLOW_REQUEST",
    "array",
    "obj",
]

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
TS: Schema = {"type": ["string", "null"], "description": "RFC 3339 timestamp"}
ANY_OBJECT: Schema = {"type": "object"}
STATES = [
    "scheduled",
    "available",
    "pending",
    "active",
    "completed",
    "retryable",
    "cancelled",
    "discarded",
]


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with ``required`` and ``optional`` typed properties; others allowed."""
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


def array(items: Schema, **extra: Any) -> Schema:
    """An array of ``items``."""
    return {"type": "array", "items": items, **extra}


ERROR = obj(
    {
        "error": obj(
            {"code": STR, "message": STR, "retryable": BOOL},
            {"details": ANY_OBJECT, "request_id": STR, "type": STR, "hint": STR},
        )
    }
)

JOB = obj(
    {
        "id": STR,
        "type": STR,
        "state": {"type": "string", "enum": STATES},
        "queue": STR,
        "args": {"type": "array"},
        "attempt": INT,
    },
    {
        "meta": ANY_OBJECT,
        "priority": INT,
        "max_attempts": INT,
        "created_at": TS,
        "enqueued_at": TS,
        "scheduled_at": TS,
        "started_at": TS,
        "completed_at": TS,
        "retain_until": TS,
        "result": {},
        "errors": {"type": "array"},
    },
)

PAGINATION = obj(
    {"total": INT, "limit": INT, "offset": INT, "has_more": BOOL},
    {"next_cursor": {"type": ["string", "null"]}},
)

#: What ojs_core.envelope accepts for names (JSON Schema has no \Z: ``$`` stands for it).
TYPE_NAME: Schema = {
    "type": "string",
    "pattern": "^[a-z][a-z0-9_-]*(\\.[a-z][a-z0-9_-]*)*$",
    "maxLength": 255,
}
QUEUE_NAME: Schema = {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]*$", "maxLength": 128}
PRIORITY: Schema = {"type": "integer", "minimum": -100, "maximum": 100}
UUID7: Schema = {
    "type": "string",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
}


_OPTIONS: Schema = {
    "type": "object",
    "description": "Further options (retry, unique, scheduled_at, ...) follow the OJS spec.",
    "properties": {
        "queue": QUEUE_NAME,
        "priority": PRIORITY,
        "timeout_ms": {"type": "integer", "minimum": 0, "maximum": MAX_TIMEOUT_MS},
        "visibility_timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS},
        "tags": array(STR),
    },
}

ENQUEUE = {
    "type": "object",
    "required": ["type", "args"],
    "properties": {
        "type": TYPE_NAME,
        "args": {"type": "array"},
        "queue": QUEUE_NAME,
        "meta": ANY_OBJECT,
        "id": UUID7,
        "priority": PRIORITY,
        "options": _OPTIONS,
    },
}

FETCH = {
    "type": "object",
    "required": ["queues"],
    "properties": {
        "queues": array(QUEUE_NAME, minItems=1),
        "count": {"type": "integer", "minimum": 1},
        "worker_id": {"type": "string", "minLength": 1, "maxLength": 256},
        "visibility_timeout_ms": {"type": "integer", "minimum": 1},
        "wait_ms": {"type": "integer", "minimum": 0},
        # Fair scheduling: the strategy across the queues (a worker's pool's wins), the pool.
        "strategy": {
            "type": "string",
            "enum": ["strict", "round-robin", "weighted", "least-loaded"],
        },
        "weights": {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        },
        "starvation_prevention": {"type": "object"},
        "pool": {"type": "string", "minLength": 1, "maxLength": 128},
    },
}

_JOB_ID_BODY = {
    "job_id": STR,
    "worker_id": STR,
}

ACK = obj(
    {"acknowledged": BOOL, "job_id": STR, "state": STR, "job": JOB},
    {"id": STR, "completed_at": TS},
)

NACK = obj(
    {"job_id": STR, "state": STR, "attempt": INT, "job": JOB},
    {"id": STR, "max_attempts": INT, "next_attempt_at": TS, "retry_delay_ms": INT},
)

HEARTBEAT = obj(
    {
        "state": {"type": "string", "enum": ["running", "quiet", "terminate"]},
        "worker_id": STR,
        "jobs_extended": array(STR),
        "server_time": STR,
    },
    {"directive": STR, "heartbeat_interval_ms": INT},
)

EVENT = obj({"id": STR, "type": STR, "time": STR}, {"data": ANY_OBJECT, "seq": INT})

WORKFLOW = obj(
    {"id": STR, "name": STR, "type": STR, "state": STR},
    {"steps": array(obj({"id": STR, "type": STR}, {"job_id": STR, "state": STR}))},
)

_STEP = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "id": STR,
        "type": TYPE_NAME,
        "args": {"type": "array"},
        "depends_on": array(STR),
        "options": ANY_OBJECT,
    },
}

WORKFLOW_REQUEST = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["chain", "group", "batch"]},
        "name": STR,
        "steps": array(_STEP, minItems=1),
        "jobs": array(_STEP, minItems=1),
        "callbacks": ANY_OBJECT,
    },
}

CRON = obj(
    {"name": STR, "expression": STR, "enabled": BOOL},
    {"timezone": STR, "next_run_at": TS, "last_run_at": TS, "job_template": ANY_OBJECT},
)

CRON_REQUEST = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": STR,
        "expression": STR,
        "cron": STR,
        "timezone": STR,
        "overlap_policy": STR,
        "job_template": ANY_OBJECT,
        "type": STR,
        "args": {"type": "array"},
    },
}

JOB_ID_BODY = {"type": "object", "properties": _JOB_ID_BODY}
