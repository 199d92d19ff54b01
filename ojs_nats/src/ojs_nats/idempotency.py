"""Idempotency records in ``OJS_IDEMPOTENCY`` (:class:`~ojs_core.backend.IdempotencyStore`).

One key per scoped idempotency key (:func:`~ojs_nats.names.hex_key` of it: any characters, at
most 512), the core's opaque bytes as the value. Each write carries a per-message TTL
(``Nats-TTL``), so a record disappears on its own once it has not been written for that long;
the bucket keeps one version per key. Writes are compare-and-swap on the key's last sequence,
so every replica agrees on which request reserved a key.
"""

from __future__ import annotations

import math

from . import names
from .connection import Connection
from .jetstream import Op, WrongSequenceError, commit
from .records import RecordStore

__all__ = ["IdempotencyBucket"]


class IdempotencyBucket:
    """Records by key, each expiring ``ttl_s`` after its last write."""

    def __init__(self, conn: Connection, store: RecordStore) -> None:
        self.conn = conn
        self.store = store

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and revision of ``key``, or ``None``."""
        return await self.store.get(names.IDEMPOTENCY_BUCKET, names.hex_key(key))

    async def put(self, key: str, value: bytes, expect: int, ttl_s: float) -> int | None:
        """Store ``value`` if the key's revision is ``expect``; the new revision or ``None``."""
        k = names.hex_key(key)
        current, revision = await self.store.entry(names.IDEMPOTENCY_BUCKET, k)
        if (revision if current is not None else 0) != expect:
            return None
        headers = {
            # A deletion marker's revision (a reset bucket has none) is what a create expects.
            names.EXPECTED_SUBJECT_SEQUENCE: str(revision),
            names.MSG_TTL: f"{max(1, math.ceil(ttl_s))}s",
        }
        op: Op = (names.kv_subject(names.IDEMPOTENCY_BUCKET, k), value, headers)
        try:
            (sequence,) = await commit(self.conn.nc, self.conn.js, [op])
        except WrongSequenceError:
            return None
        return sequence
