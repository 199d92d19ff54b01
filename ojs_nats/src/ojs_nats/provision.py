"""Stream, bucket and consumer configurations as data, and the code that creates them.

Provisioning is idempotent and runs on every start of every replica: a stream that exists with
an older configuration has its mutable settings brought up to date.
"""

from __future__ import annotations

import contextlib
import logging

import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from ojs_core.webhooks import MAX_PENDING_PER_SUBSCRIPTION

from . import names
from .jetstream import settle

__all__ = [
    "EVENTS_MAX_AGE_S",
    "EVENTS_MAX_BYTES",
    "EVENTS_MAX_MSGS",
    "READY_IDLE_S",
    "delete_all",
    "provision",
    "ready_consumer_config",
    "stream_configs",
    "webhook_consumer_config",
    "webhook_events_consumer_config",
]

log = logging.getLogger("ojs.nats")

#: The event log keeps a day of events, a million at most.
EVENTS_MAX_AGE_S = 86_400
EVENTS_MAX_MSGS = 1_000_000
#: A ready consumer nobody pulled from for this long is deleted by the server (recreated on use).
READY_IDLE_S = 3600.0
#: Webhooks: a redelivered event's deliveries are recognised as duplicates for this long
#: (well beyond the routing consumer's ack wait); pending deliveries take at most this many
#: bytes (an event is a few hundred); each subscription's log keeps this many recent and as
#: many dead outcomes, for a week, in this many bytes in all.
WEBHOOK_DEDUPE_S = 600.0
WEBHOOK_MAX_BYTES = 1024 * 1024 * 1024
WEBHOOK_LOG_PER_SUBJECT = 100
WEBHOOK_LOG_MAX_AGE_S = 7 * 86_400
WEBHOOK_LOG_MAX_BYTES = 256 * 1024 * 1024
WEBHOOK_CLAIM_S = 120.0
WEBHOOK_ROUTE_ACK_S = 30.0
#: The event log is bounded by bytes too (an event is a few hundred bytes).
EVENTS_MAX_BYTES = 512 * 1024 * 1024
#: Buckets whose stream must allow atomic batches (a job with its marker, a batch enqueue).
ATOMIC_BUCKETS = frozenset({names.JOBS_BUCKET})
#: nats-server's "error creating store for stream": after every stream of an account was
#: deleted, it removes the store directory in the background, and a stream created meanwhile
#: fails with this code. Provisioning again shortly succeeds.
_STORE_BEING_REMOVED = 10049
_PROVISION_ATTEMPTS = 40


def stream_configs(replicas: int) -> list[StreamConfig]:
    """The plain streams. No work stream has a max age or a message limit: a job may wait for
    weeks in a paused or backlogged queue."""
    file = StorageType.FILE
    return [
        StreamConfig(
            name=names.READY_STREAM,
            subjects=[names.READY_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=file,
            num_replicas=replicas,
            allow_atomic=True,
        ),
        StreamConfig(
            name=names.TIMER_STREAM,
            subjects=[names.TIMER_SCHEDULE_SUBJECTS, names.TIMER_FIRE_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=file,
            num_replicas=replicas,
            max_msgs_per_subject=1,
            allow_msg_schedules=True,
            allow_atomic=True,
        ),
        StreamConfig(
            name=names.EVENTS_STREAM,
            subjects=[names.EVENT_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=file,
            num_replicas=replicas,
            max_age=EVENTS_MAX_AGE_S,
            max_msgs=EVENTS_MAX_MSGS,
            max_bytes=EVENTS_MAX_BYTES,
            discard=DiscardPolicy.OLD,
            allow_direct=True,  # read by batched direct gets, without a consumer
            # Each stored event again on core NATS with its sequence: the live feed.
            republish=RePublish(src=names.EVENT_SUBJECTS, dest=names.EVENT_FEED_SUBJECTS),
        ),
        StreamConfig(
            name=names.COUNTER_STREAM,
            subjects=[names.COUNTER_SUBJECTS, names.TYPE_COUNTER_SUBJECTS],
            storage=file,
            num_replicas=replicas,
            allow_msg_counter=True,
            allow_direct=True,  # listing totals: the last value of many counters at once
        ),
        StreamConfig(
            # The listing index: few subjects (one per state, queue and type), so a listing's
            # wildcard filter matches few; entries are removed by sequence.
            name=names.INDEX_STREAM,
            subjects=[names.INDEX_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=file,
            num_replicas=replicas,
            allow_direct=True,  # listings read entries by batched direct gets
        ),
        StreamConfig(
            # Webhook deliveries waiting for their next attempt; the id of a delivery is its
            # message id, so routing an event twice within the window adds nothing.
            name=names.WEBHOOK_STREAM,
            subjects=[names.WEBHOOK_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=file,
            num_replicas=replicas,
            duplicate_window=WEBHOOK_DEDUPE_S,
            max_bytes=WEBHOOK_MAX_BYTES,
            # One subject per subscription: a full one refuses its own new deliveries only.
            max_msgs_per_subject=MAX_PENDING_PER_SUBSCRIPTION,
            discard=DiscardPolicy.NEW,
            discard_new_per_subject=True,
        ),
        StreamConfig(
            # The outcomes of webhook attempts, per subscription: the last
            # WEBHOOK_LOG_PER_SUBJECT recent ones and as many dead ones, for a week at most.
            name=names.WEBHOOK_LOG_STREAM,
            subjects=[names.WEBHOOK_LOG_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=file,
            num_replicas=replicas,
            max_msgs_per_subject=WEBHOOK_LOG_PER_SUBJECT,
            max_age=WEBHOOK_LOG_MAX_AGE_S,
            max_bytes=WEBHOOK_LOG_MAX_BYTES,
            discard=DiscardPolicy.OLD,
            allow_direct=True,
        ),
    ]


def timer_consumer_config(ack_wait_s: float) -> ConsumerConfig:
    """The durable consumer of fired timers shared by every replica."""
    return ConsumerConfig(
        durable_name=names.TIMER_CONSUMER,
        filter_subject=names.TIMER_FIRE_SUBJECTS,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_ack_pending=-1,
    )


def webhook_consumer_config() -> ConsumerConfig:
    """The durable consumer of webhook deliveries shared by every replica: a claim lasts
    :data:`WEBHOOK_CLAIM_S` (an attempt with its redirects takes 30 s at most); retries come
    back by a delayed negative acknowledgement."""
    return ConsumerConfig(
        durable_name=names.WEBHOOK_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=WEBHOOK_CLAIM_S,
        max_ack_pending=-1,
        max_deliver=-1,
    )


def webhook_events_consumer_config() -> ConsumerConfig:
    """The durable consumer of events to route to webhook subscriptions, shared by every
    replica; created with the first subscription, it sees the events stored from then on."""
    return ConsumerConfig(
        durable_name=names.WEBHOOK_EVENTS_CONSUMER,
        filter_subject=names.EVENT_SUBJECTS,
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=WEBHOOK_ROUTE_ACK_S,
        max_ack_pending=-1,
        max_deliver=-1,
    )


def ready_consumer_config(
    queue: str, priority: int, ack_wait_s: float, lane: str | None = None, shard: str = ""
) -> ConsumerConfig:
    """The durable consumer of one queue's ready hints of one priority.

    Reaped by the server after :data:`READY_IDLE_S` without a pull: any client can create one by
    naming a queue and a priority, and an idle consumer still costs the server. Its hints stay
    in the work-queue stream; the next fetch of the level recreates it, and a new consumer
    delivers every hint still there."""
    return ConsumerConfig(
        durable_name=names.ready_consumer(queue, priority, lane, shard),
        filter_subject=names.ready_subject(queue, priority, lane, shard),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_ack_pending=-1,
        max_deliver=-1,
        inactive_threshold=READY_IDLE_S,
    )


def bucket_config(bucket: str, replicas: int) -> KeyValueConfig:
    """Every bucket keeps one version per key, on file."""
    return KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas)


async def _stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # It exists with another configuration (an older version, or other replicas):
        # bring the mutable settings up to date.
        try:
            await js.update_stream(config)
        except nats.js.errors.BadRequestError:
            log.warning("stream %s exists with an incompatible configuration", config.name)


async def _bucket(js: JetStreamContext, name: str, replicas: int) -> KeyValue:
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        pass
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.create_key_value(bucket_config(name, replicas))

    async def configured() -> KeyValue:
        # Direct gets for every bucket (reads without a consumer), atomic batches where
        # needed. Per-message TTLs for deletion markers (a removed record leaves no lasting
        # tombstone).
        cfg = (await js.stream_info(names.kv_stream(name))).config
        atomic = name in ATOMIC_BUCKETS
        if not cfg.allow_direct or not cfg.allow_msg_ttl or (atomic and not cfg.allow_atomic):
            cfg.allow_direct = True
            cfg.allow_msg_ttl = True
            if atomic:
                cfg.allow_atomic = True
            await js.update_stream(cfg)
        return await js.key_value(name)

    # A bucket just created on a cluster may be "not found" for a moment (its stream has no
    # leader yet): a server started on a fresh three-node cluster failed to open on it.
    return await settle(configured, lambda exc: isinstance(exc, nats.js.errors.NotFoundError))


async def _provision_once(
    js: JetStreamContext, replicas: int, ack_wait_s: float
) -> dict[str, KeyValue]:
    for config in stream_configs(replicas):
        await _stream(js, config)
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.add_consumer(names.TIMER_STREAM, timer_consumer_config(ack_wait_s))
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.add_consumer(names.WEBHOOK_STREAM, webhook_consumer_config())
    return {bucket: await _bucket(js, bucket, replicas) for bucket in names.BUCKETS}


async def provision(js: JetStreamContext, replicas: int, ack_wait_s: float) -> dict[str, KeyValue]:
    """Create (or update) every stream, bucket and shared consumer; the buckets by name."""
    return await settle(
        lambda: _provision_once(js, replicas, ack_wait_s),
        lambda exc: (
            isinstance(exc, nats.js.errors.ServerError) and exc.err_code == _STORE_BEING_REMOVED
        ),
        attempts=_PROVISION_ATTEMPTS,
    )


async def delete_all(js: JetStreamContext) -> None:
    """Delete every stream and bucket (for :meth:`NatsBackend.reset`)."""
    for stream in (*names.STREAMS, *(names.kv_stream(b) for b in names.BUCKETS)):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
