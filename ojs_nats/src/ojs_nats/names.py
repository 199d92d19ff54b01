"""Every name the NATS backend uses: streams, buckets, consumers, subjects, keys and headers.

The storage layout in one place (``docs/nats-design.md`` explains it), so that no other module
spells a subject or a header inline.

OJS names map deterministically to valid NATS names. Subject tokens may not contain ``.``,
``*``, ``>`` or white space; consumer names allow ``[A-Za-z0-9_-]``; KV keys allow
``[-/_=.A-Za-z0-9]``. Queue names (``[a-z0-9][a-z0-9.-]*``) map by replacing ``.`` with ``_``,
which they cannot contain, so the mapping is injective. Worker ids may hold any character and
are hex-encoded where they become keys. Queue and cron names are used as keys as they are
when they are valid keys; the few that are not (``a.``, ``a..b``: valid OJS names, but a KV key
has no empty token) become ``=`` and their hex, which no OJS name can start with
(:func:`name_key`, reversed by :func:`key_name`).
"""

from __future__ import annotations

import hashlib
import re

from nats.js.api import Header
from nats.js.kv import KV_OP

__all__ = [
    "BUCKETS",
    "CONTROL_RESET",
    "COUNTER_STREAM",
    "CRON_BUCKET",
    "EVENTS_STREAM",
    "EVENT_FEED_SUBJECTS",
    "EVENT_PREFIX",
    "IDEMPOTENCY_BUCKET",
    "INDEX_STREAM",
    "INDEX_SUBJECTS",
    "JOBS_BUCKET",
    "QUEUES_BUCKET",
    "READY_STREAM",
    "SCHEMAS_BUCKET",
    "STREAMS",
    "TIMER_CONSUMER",
    "TIMER_STREAM",
    "WORKERS_BUCKET",
    "birth_entry_subject",
    "birth_filter",
    "counter_subject",
    "dead_key",
    "event_subject",
    "hex_key",
    "index_filter",
    "is_birth_subject",
    "is_job_id",
    "is_kv_key",
    "job_key",
    "key_name",
    "kv_stream",
    "kv_subject",
    "lane_token",
    "name_key",
    "notify_subject",
    "priority_token",
    "queue_token",
    "ready_consumer",
    "ready_subject",
    "shard_token",
    "state_entry_subject",
    "tenant_counter_filter",
    "tenant_counter_subject",
    "timer_fire_subject",
    "timer_job_id",
    "timer_schedule_subject",
    "type_counter_subject",
    "type_token",
    "unique_key",
    "webhook_log_subject",
    "webhook_subject",
    "workflow_key",
]

# -- streams and buckets --------------------------------------------------------------------

READY_STREAM = "OJS_READY"
TIMER_STREAM = "OJS_TIMERS"
EVENTS_STREAM = "OJS_EVENTS"
COUNTER_STREAM = "OJS_COUNTERS"
INDEX_STREAM = "OJS_INDEX"
#: Webhook deliveries waiting for an attempt (a work queue), and the log of their outcomes.
WEBHOOK_STREAM = "OJS_WEBHOOK_DELIVERIES"
WEBHOOK_LOG_STREAM = "OJS_WEBHOOK_LOG"
#: The plain streams (each KV bucket also has its stream, :func:`kv_stream`).
STREAMS = (
    READY_STREAM,
    TIMER_STREAM,
    EVENTS_STREAM,
    COUNTER_STREAM,
    INDEX_STREAM,
    WEBHOOK_STREAM,
    WEBHOOK_LOG_STREAM,
)

JOBS_BUCKET = "OJS_JOBS"
QUEUES_BUCKET = "OJS_QUEUES"
CRON_BUCKET = "OJS_CRON"
WORKERS_BUCKET = "OJS_WORKERS"
SCHEMAS_BUCKET = "OJS_SCHEMAS"
#: Webhook subscriptions, one key per subscription id.
WEBHOOKS_BUCKET = "OJS_WEBHOOKS"
#: Rate-limit keys (``ojs_nats.ratelimits``), one record per key.
LIMITS_BUCKET = "OJS_LIMITS"
#: Idempotency records of bulk requests, one key per scoped key, each with a message TTL.
IDEMPOTENCY_BUCKET = "OJS_IDEMPOTENCY"
#: Tenant configurations (multi-tenancy, ``ojs_nats.tenants``), one key per tenant.
TENANTS_BUCKET = "OJS_TENANTS"
#: Worker pool definitions (fair scheduling, ``ojs_nats.pools``), one key per pool.
POOLS_BUCKET = "OJS_POOLS"
BUCKETS = (
    JOBS_BUCKET,
    QUEUES_BUCKET,
    CRON_BUCKET,
    WORKERS_BUCKET,
    SCHEMAS_BUCKET,
    WEBHOOKS_BUCKET,
    LIMITS_BUCKET,
    IDEMPOTENCY_BUCKET,
    TENANTS_BUCKET,
    POOLS_BUCKET,
)

#: The durable consumer of fired timers that every replica shares.
TIMER_CONSUMER = "ojs_timers"
#: The durable consumers every replica shares: of webhook deliveries, and of events to route
#: to webhook subscriptions (on ``OJS_EVENTS``, created with the first subscription).
WEBHOOK_CONSUMER = "ojs_webhooks"
WEBHOOK_EVENTS_CONSUMER = "ojs_webhook_events"


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject a KV bucket stores ``key`` under."""
    return f"$KV.{bucket}.{key}"


# -- subjects -------------------------------------------------------------------------------

READY_SUBJECTS = "ojs.ready.>"
TIMER_SCHEDULE_SUBJECTS = "ojs.tsched.*"
TIMER_FIRE_SUBJECTS = "ojs.tfire.*"
_TIMER_FIRE_PREFIX = "ojs.tfire."
EVENT_PREFIX = "ojs.events"
EVENT_SUBJECTS = f"{EVENT_PREFIX}.>"
#: Where the events stream republishes each event once stored, with its stream sequence in
#: the ``Nats-Sequence`` header: the live feed (``eventfeed``) that every process subscribes to.
EVENT_FEED_SUBJECTS = "ojs.feed.events.>"
COUNTER_PREFIX = "ojs.count"
COUNTER_SUBJECTS = f"{COUNTER_PREFIX}.>"
#: Per-type counters (``ojs.tcount.<type>.<queue>.<state>``), in the counter stream too.
TYPE_COUNTER_PREFIX = "ojs.tcount"
TYPE_COUNTER_SUBJECTS = f"{TYPE_COUNTER_PREFIX}.>"
#: The listing index: state entries and birth entries (:mod:`ojs_nats.index`).
INDEX_SUBJECTS = "ojs.ix.>"
_STATE_ENTRY_PREFIX = "ojs.ix.s."
_BIRTH_ENTRY_PREFIX = "ojs.ix.b."
#: Core-NATS subject on which a replica that reset the store tells the others.
CONTROL_RESET = "ojs.control.reset"


def queue_token(queue: str) -> str:
    """A queue name as one subject token and consumer-name fragment."""
    return queue.replace(".", "_")


def priority_token(priority: int) -> str:
    """``-100..100`` as a sortable three-digit token (``000`` is -100, ``200`` is 100)."""
    return f"{priority + 100:03d}"


#: Tenant ids up to this many bytes are spelled out (hex) in subjects and consumer names;
#: longer ones are hashed, so a consumer name stays well inside NATS's limits.
_SHARD_HEX_BYTES = 24


def shard_token(shard: str) -> str:
    """A tenant id (multi-tenancy) as one subject token and consumer-name fragment: ``t`` and
    its UTF-8 in hex (tenant ids hold ``.`` and ``:``), or for a long id ``th`` and 32 hex
    digits of its SHA-256."""
    raw = shard.encode()
    if len(raw) <= _SHARD_HEX_BYTES:
        return "t" + raw.hex()
    return "th" + hashlib.sha256(raw).hexdigest()[:32]


def lane_token(lane: str) -> str:
    """A version lane (``type@major.minor``, job versioning) as one subject token."""
    return "v" + hashlib.sha256(lane.encode()).hexdigest()[:16]


def ready_subject(queue: str, priority: int, lane: str | None = None, shard: str = "") -> str:
    """Subject of the ready hints of one queue and priority: ``ojs.ready.<queue>.<priority>``,
    then a ``v…`` token for a versioned job's lane (job versioning), then a ``t…`` token for
    a job with ``meta.tenant_id`` (its tenant's shard). A job with neither keeps the four-token
    subject; each combination is one exact subject with a consumer of its own."""
    base = f"ojs.ready.{queue_token(queue)}.{priority_token(priority)}"
    if lane is not None:
        base = f"{base}.{lane_token(lane)}"
    return f"{base}.{shard_token(shard)}" if shard else base


def ready_consumer(queue: str, priority: int, lane: str | None = None, shard: str = "") -> str:
    """Durable consumer that hands out one queue's jobs of one priority (of one version lane,
    of one tenant), filtered on exactly :func:`ready_subject`."""
    base = f"r_{queue_token(queue)}_{priority_token(priority)}"
    if lane is not None:
        base = f"{base}_{lane_token(lane)}"
    return f"{base}_{shard_token(shard)}" if shard else base


def tenant_counter_subject(tenant: str, queue: str, state: str) -> str:
    """Counter of one tenant's jobs in one queue and state (in the counter stream)."""
    return f"{COUNTER_PREFIX}.{shard_token(tenant)}.x.{queue_token(queue)}.{state}"


def tenant_counter_filter(tenant: str, queue: str | None = None) -> str:
    """Every counter subject of one tenant (of one queue)."""
    q = queue_token(queue) if queue is not None else "*"
    return f"{COUNTER_PREFIX}.{shard_token(tenant)}.x.{q}.*"


def notify_subject(queue: str) -> str:
    """Core-NATS subject that wakes fetches waiting on a queue (see ``arrivals``)."""
    return f"ojs.notify.{queue_token(queue)}"


def timer_schedule_subject(job_id: str) -> str:
    """Subject of a job's one message schedule (its timer deadline)."""
    return f"ojs.tsched.{job_id}"


def timer_fire_subject(job_id: str) -> str:
    """Subject a job's schedule fires into."""
    return f"{_TIMER_FIRE_PREFIX}{job_id}"


def timer_job_id(subject: str) -> str:
    """The job id of a fired timer's subject."""
    return subject.rsplit(".", 1)[-1]


WEBHOOK_SUBJECTS = "ojs.whq.>"
WEBHOOK_LOG_SUBJECTS = "ojs.whlog.>"


def webhook_subject(subscription_id: str) -> str:
    """Where the deliveries of one subscription wait."""
    return f"ojs.whq.{subscription_id}"


def webhook_log_subject(subscription_id: str, kind: str) -> str:
    """The outcome log of one subscription's deliveries: ``recent`` or ``dead``."""
    return f"ojs.whlog.{subscription_id}.{kind}"


def event_subject(event_type: str) -> str:
    """Core-NATS subject of one event type (captured by the events stream)."""
    return f"{EVENT_PREFIX}.{event_type}"


def counter_subject(queue: str, state: str) -> str:
    """Per-queue, per-state counter subject."""
    return f"{COUNTER_PREFIX}.{queue_token(queue)}.{state}"


def type_counter_subject(job_type: str, queue: str, state: str) -> str:
    """Per-type, per-queue, per-state counter subject (totals of listings by type)."""
    return f"{TYPE_COUNTER_PREFIX}.{type_token(job_type)}.{queue_token(queue)}.{state}"


_TYPE_TOKEN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def type_token(job_type: str) -> str:
    """A job type as one subject token: ``.`` becomes ``=`` (which no type holds); a type
    outside the OJS alphabet becomes ``/`` and its hex (no type starts with ``/``)."""
    if len(job_type) <= 255 and _TYPE_TOKEN.fullmatch(job_type):
        return job_type.replace(".", "=")
    return "/" + job_type.encode().hex()


# -- keys of the jobs bucket ----------------------------------------------------------------

JOB_PREFIX = "j."
UNIQUE_PREFIX = "u."
WORKFLOW_PREFIX = "w."
DEAD_PREFIX = "d."


def job_key(job_id: str) -> str:
    """Key of a job record: ``{"e": epoch, "j": job}``."""
    return JOB_PREFIX + job_id


def unique_key(key: str) -> str:
    """Key of a unique-key holder (its value is the holding job's id)."""
    return UNIQUE_PREFIX + key


def workflow_key(workflow_id: str) -> str:
    """Key of a workflow record."""
    return WORKFLOW_PREFIX + workflow_id


def dead_key(job_id: str) -> str:
    """Key of a dead-letter marker."""
    return DEAD_PREFIX + job_id


def _list_token(value: str | None, token: str | None) -> str:
    """A filter token (``*`` for any): ``token`` is the value's subject token."""
    return "*" if value is None or token is None else token


def _filter_tokens(state: str | None, queue: str | None, job_type: str | None) -> list[str] | None:
    tokens = [
        _list_token(state, state),
        _list_token(queue, queue_token(queue) if queue is not None else None),
        _list_token(job_type, type_token(job_type) if job_type is not None else None),
    ]
    for value, token in zip((state, queue, job_type), tokens, strict=True):
        if value is not None and (not token or not _TOKEN.fullmatch(token)):
            return None
    return tokens


_TOKEN = re.compile(r"[-/_=A-Za-z0-9]{1,600}")


def state_entry_subject(state: str, queue: str, job_type: str, age: int = 0) -> str:
    """Subject of the index entries of the jobs in one state, queue and type, of one age
    class (:data:`ojs_nats.index.AGES`): ``ojs.ix.s.<state>.<queue>.<type>.<age>`` (each
    entry's data is the job id and its birth)."""
    return f"{_STATE_ENTRY_PREFIX}{state}.{queue_token(queue)}.{type_token(job_type)}.{age}"


def birth_entry_subject(queue: str, job_type: str) -> str:
    """Subject of the birth entries of the jobs of one queue and type:
    ``ojs.ix.b.<queue>.<type>`` (each entry's data is the job id; its sequence the birth)."""
    return f"{_BIRTH_ENTRY_PREFIX}{queue_token(queue)}.{type_token(job_type)}"


def index_filter(state: str | None, queue: str | None, job_type: str | None) -> str | None:
    """The subject filter of the index entries of a listing by state, queue and type (any of
    them ``None``: any; every age class, the last token); ``None`` when a value cannot be
    stored (a name from a URL that no job can have)."""
    tokens = _filter_tokens(state, queue, job_type)
    return None if tokens is None else f"{_STATE_ENTRY_PREFIX}{'.'.join(tokens)}.*"


def birth_filter(queue: str | None, job_type: str | None) -> str | None:
    """The subject filter of the birth entries of a listing by queue and type (or neither);
    ``None`` when a value cannot be stored."""
    tokens = _filter_tokens(None, queue, job_type)
    return None if tokens is None else _BIRTH_ENTRY_PREFIX + ".".join(tokens[1:])


def is_birth_subject(subject: str) -> bool:
    """Whether an index stream subject is a birth entry's (else a state entry's)."""
    return subject.startswith(_BIRTH_ENTRY_PREFIX)


_JOB_ID = re.compile(r"[-_=.A-Za-z0-9]{1,200}")
_KV_KEY = re.compile(r"[-/_=.A-Za-z0-9]{1,512}")


def is_job_id(text: str) -> bool:
    """Whether ``text`` could be the id of a stored job (ids from URLs are checked first)."""
    return _JOB_ID.fullmatch(text) is not None


def is_kv_key(text: str) -> bool:
    """Whether ``text`` is a valid KV key (a name from a URL may not be)."""
    return _KV_KEY.fullmatch(text) is not None


def name_key(name: str) -> str:
    """A queue, cron or rate-limit name as a KV key: itself when valid, else ``=`` + hex."""
    if is_kv_key(name) and not name.endswith(".") and ".." not in name:
        return name
    return "=" + name.encode().hex()


def key_name(key: str) -> str:
    """The queue or cron name of a key made by :func:`name_key`."""
    if key.startswith("="):
        try:
            return bytes.fromhex(key[1:]).decode()
        except ValueError:
            return key
    return key


def hex_key(text: str) -> str:
    """Any string as a KV-key-safe token of at most 512 characters.

    Hex up to 256 bytes of UTF-8; beyond that (a 256-character worker id of emoji is 1 KiB)
    ``h`` and the SHA-256 digest, which no hex token can equal (``h`` is not a hex digit).
    """
    raw = text.encode()
    if len(raw) <= 256:
        return raw.hex()
    return "h" + hashlib.sha256(raw).hexdigest()


# -- JetStream API subjects -----------------------------------------------------------------


def direct_get_subject(stream: str) -> str:
    """Batched direct get (``multi_last``) of a stream."""
    return f"$JS.API.DIRECT.GET.{stream}"


def stream_info_subject(stream: str) -> str:
    """Stream info (with ``subjects_filter`` to list a bucket's keys)."""
    return f"$JS.API.STREAM.INFO.{stream}"


def consumer_next_subject(stream: str, consumer: str) -> str:
    """Pull request to a durable consumer."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"


# -- headers --------------------------------------------------------------------------------

EXPECTED_SUBJECT_SEQUENCE = Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value
BATCH_ID = Header.BATCH_ID.value
BATCH_SEQUENCE = Header.BATCH_SEQUENCE.value
BATCH_COMMIT = Header.BATCH_COMMIT.value
SCHEDULE = Header.SCHEDULE.value
SCHEDULE_TARGET = Header.SCHEDULE_TARGET.value
INCR = Header.INCR.value
MSG_TTL = Header.MSG_TTL.value
ROLLUP = Header.ROLLUP.value
STATUS = Header.STATUS.value
KV_OPERATION = KV_OP
#: Headers of a direct-get answer: the subject and sequence of the message returned.
DIRECT_SUBJECT = "Nats-Subject"
DIRECT_SEQUENCE = "Nats-Sequence"
DIRECT_TIMESTAMP = "Nats-Time-Stamp"
DIRECT_NUM_PENDING = "Nats-Num-Pending"
