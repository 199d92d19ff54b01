"""Idempotency keys: a request carried out once, its answer kept and given again to repeats.

Records live in the backend's :class:`~ojs_core.backend.IdempotencyStore` (so they hold
across replicas) for :data:`IDEMPOTENCY_TTL_S`. The first request reserves the key by
compare-and-swap; a repeat with the same request (same :func:`fingerprint`) gets the kept
answer, one with another request is 409 ``key_reused``, one that arrives while the first still
runs is a retryable 409 ``in_progress``. A reservation whose request died is taken over after
:data:`LEASE_S`; the request gets the time of the first reservation, so work derived from it
(the ids of enqueued jobs) is the same, and a takeover never does it twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import jsonio
from .backend import IdempotencyStore
from .errors import ConflictError, OJSError, PayloadTooLargeError

__all__ = ["IDEMPOTENCY_TTL_S", "LEASE_S", "InProgressError", "KeptAnswers", "fingerprint"]

log = logging.getLogger("ojs.idempotency")

#: How long an idempotency key's answer is kept (the bulk-operations spec's minimum: 24 h).
IDEMPOTENCY_TTL_S = 24 * 3600.0
#: A reservation whose request neither finished nor failed (its process died) is taken over
#: by a repeat of the request after this long.
LEASE_S = 60.0
_RECORD_VERSION = 1
#: Reservation attempts before a contended key is reported in progress.
_ATTEMPTS = 5

#: Carries the request out, given the time (epoch ms) of its first reservation; returns the
#: answer's status and body.
Execute = Callable[[int | None], Awaitable[tuple[int, dict[str, Any]]]]


class InProgressError(ConflictError):
    """409, retryable: a request with the same key is still being carried out."""

    retryable = True

    def __init__(self, key: str) -> None:
        super().__init__(
            "a request with this idempotency key is still being processed",
            details={"idempotency_key": key, "reason": "in_progress"},
            hint="Retry after a moment to get its answer.",
        )


def fingerprint(body: Mapping[str, Any]) -> str:
    """The request, key aside, as a digest: a repeat must send the same request."""
    rest = {k: v for k, v in body.items() if k != "idempotency_key"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class KeptAnswers:
    """Requests carried out once per key, over one store."""

    def __init__(self, store: IdempotencyStore, ttl_s: float, lease_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.lease_s = lease_s

    async def once(
        self, scoped: str, key: str, digest: str, now_ms: int, execute: Execute
    ) -> tuple[int, dict[str, Any], bool]:
        """Carry out ``execute`` unless ``scoped`` (the key in its operation's scope) has an
        answer already; the status, the body, and whether it is a kept answer given again."""
        store, ttl = self.store, self.ttl_s
        for _ in range(_ATTEMPTS):
            got = await store.get_idempotency(scoped)
            if got is None:
                record: dict[str, Any] = {"fp": digest, "state": "pending", "at": now_ms}
                expect = 0
            else:
                record, expect = _decode(got[0]), got[1]
                if record.get("fp") != digest:
                    raise ConflictError(
                        "this idempotency key was used with another request body",
                        details={"idempotency_key": key, "reason": "key_reused"},
                        hint="Use a new key for a new request.",
                    )
                if record.get("state") == "done":
                    if record.get("body") is None:
                        raise ConflictError(
                            "this request was carried out, but its answer was too large to "
                            "keep; read the jobs back instead",
                            details={"idempotency_key": key, "reason": "answer_not_kept"},
                        )
                    return int(record["status"]), record["body"], True
                if int(record.get("lease", 0)) > now_ms:
                    raise InProgressError(key)
            record["lease"] = now_ms + int(self.lease_s * 1000)
            revision = await store.put_idempotency(scoped, _encode(record), expect, ttl)
            if revision is not None:
                break
        else:
            raise InProgressError(key)
        try:
            status, body = await execute(int(record["at"]))
        except Exception:
            # Nothing to keep: a repeat may run it at once (its derived work is the same).
            with contextlib.suppress(Exception):
                await store.put_idempotency(scoped, _encode(record | {"lease": 0}), revision, ttl)
            raise
        done = {"fp": digest, "state": "done", "at": record["at"], "status": status, "body": body}
        try:
            try:
                stored = await store.put_idempotency(scoped, _encode(done), revision, ttl)
            except PayloadTooLargeError:
                done["body"] = None
                stored = await store.put_idempotency(scoped, _encode(done), revision, ttl)
        except OJSError:
            log.warning("could not keep the answer of idempotency key %r", key, exc_info=True)
            stored = None
        if stored is None:
            log.warning("the answer of idempotency key %r was not kept", key)
        return status, body, False


def _encode(record: Mapping[str, Any]) -> bytes:
    return zlib.compress(jsonio.dumps({"v": _RECORD_VERSION, **record}), 6)


def _decode(data: bytes) -> dict[str, Any]:
    try:
        record = jsonio.loads(zlib.decompress(data))
    except (zlib.error, ValueError):
        record = None
    if not isinstance(record, dict):
        return {"state": "unreadable"}
    return record
