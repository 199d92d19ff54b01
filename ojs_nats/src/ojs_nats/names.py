"""Deterministic mapping of OJS names (queues, priorities, worker ids) to valid NATS names.

Subject tokens may not contain ``.``, ``*``, ``>`` or white space; consumer names allow
``[A-Za-z0-9_-]``; KV keys allow ``[-/_=.A-Za-z0-9]``. Queue names (``[a-z0-9][a-z0-9.-]*``) map by
replacing ``.`` with ``_``, which they cannot contain, so the mapping is injective. Worker ids
and cron names may hold any character and are hex-encoded where they become keys.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "EVENT_PREFIX",
    "READY_STREAM",
    "TIMER_STREAM",
    "hex_key",
    "priority_token",
    "queue_token",
    "ready_consumer",
    "ready_subject",
]

READY_STREAM = "OJS_READY"
TIMER_STREAM = "OJS_TIMERS"
EVENTS_STREAM = "OJS_EVENTS"
COUNTER_STREAM = "OJS_COUNTERS"
JOBS_BUCKET = "OJS_JOBS"
QUEUES_BUCKET = "OJS_QUEUES"
CRON_BUCKET = "OJS_CRON"
WORKERS_BUCKET = "OJS_WORKERS"
EVENT_PREFIX = "ojs.events"
TIMER_CONSUMER = "ojs_timers"


def queue_token(queue: str) -> str:
    """A queue name as one subject token and consumer-name fragment."""
    return queue.replace(".", "_")


def priority_token(priority: int) -> str:
    """``-100..100`` as a sortable three-digit token (``000`` is -100, ``200`` is 100)."""
    return f"{priority + 100:03d}"


def ready_subject(queue: str, priority: int) -> str:
    """Subject of the ready hints of one queue and priority."""
    return f"ojs.ready.{queue_token(queue)}.{priority_token(priority)}"


def ready_consumer(queue: str, priority: int) -> str:
    """Durable consumer that hands out one queue's jobs of one priority."""
    return f"r_{queue_token(queue)}_{priority_token(priority)}"


def hex_key(text: str) -> str:
    """Any string as a KV-key-safe token of at most 512 characters.

    Hex up to 256 bytes of UTF-8; beyond that (a 256-character worker id of emoji is 1 KiB)
    ``h`` and the SHA-256 digest, which no hex token can equal (``h`` is not a hex digit).
    """
    raw = text.encode()
    if len(raw) <= 256:
        return raw.hex()
    return "h" + hashlib.sha256(raw).hexdigest()


def counter_subject(queue: str, state: str) -> str:
    """Per-queue, per-state counter subject."""
    return f"ojs.count.{queue_token(queue)}.{state}"
