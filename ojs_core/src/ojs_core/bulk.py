"""The bulk-operations extension (``ojs-bulk-operations.md``): enqueue, cancel, retry and delete
many jobs in one request, with a result per item and optional idempotency keys.

:class:`BulkOperations` (``JobService.bulk``) validates a request, carries it out through the
service (so every OJS rule applies to each item exactly as to a single call) and returns a
:class:`BulkResult`: the status the spec gives the outcome (201/200 all succeeded, 207 some,
422 none or an atomic request refused) and the response body. ``docs/extensions.md`` lists the
shapes, limits and decisions.

- **Enqueue**, ``atomic`` (all or none: one atomic insert, so nothing is stored unless every
  job is) or ``partial`` (each job on its own; the valid ones are still inserted in ordered
  chunks, and a chunk the store refuses is retried job by job to find the culprits).
- **Cancel, retry, delete** by ``job_ids``, or (cancel and retry) by a ``filter``; each job is
  changed in its own compare-and-swap that checks the state (and the filter) again. These are
  ``partial`` only: the backends have no transaction over several existing jobs, so
  ``atomic`` is refused rather than approximated.
- **Idempotency keys** are kept :data:`IDEMPOTENCY_TTL_S` (24 h) through the backend's
  :class:`~ojs_core.backend.IdempotencyStore`, so they hold across replicas: the first request
  reserves the key (compare-and-swap), a repeat with the same body gets the stored answer, a
  repeat with another body is 409, one that arrives while the first still runs is 409
  (retryable). A reservation whose request died is taken over after :data:`LEASE_S`; enqueued
  jobs then get the ids the first attempt gave them (derived from the key), so a takeover never
  enqueues a job twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from . import lifecycle
from .backend import IdempotencyStore, JobFilter
from .envelope import parse_enqueue, validate_queue
from .errors import (
    ConflictError,
    DuplicateJobError,
    NotFoundError,
    OJSError,
    UnsupportedError,
    ValidationError,
)
from .events import make_event
from .idempotency import IDEMPOTENCY_TTL_S, LEASE_S, KeptAnswers, fingerprint
from .ids import deterministic_uuid7
from .limits import MAX_ID_LENGTH, BatchTooLargeError
from .model import Job
from .states import TERMINAL, JobState
from .tenancy import inject
from .timeutil import parse_ts

if TYPE_CHECKING:
    from .service import EnqueueOutcome, JobService

__all__ = [
    "CANCELLABLE",
    "IDEMPOTENCY_TTL_S",
    "LEASE_S",
    "MAX_KEY_LENGTH",
    "OPERATIONS",
    "RETRIABLE",
    "BulkOperations",
    "BulkResult",
]

log = logging.getLogger("ojs.bulk")
S = JobState

OPERATIONS = ("enqueue", "cancel", "retry", "delete")
#: The longest idempotency key (bulk-operations §10.2).
MAX_KEY_LENGTH = 256
#: States a bulk cancel changes: the job has not started and has not finished (§6.1).
CANCELLABLE = frozenset({S.SCHEDULED, S.AVAILABLE, S.PENDING, S.RETRYABLE})
#: States a bulk retry changes (§7).
RETRIABLE = frozenset({S.DISCARDED, S.RETRYABLE})
_DEFAULT_FILTER_STATES = {
    "cancel": (S.AVAILABLE, S.SCHEDULED),
    "retry": (S.DISCARDED, S.RETRYABLE),
}
_DONE = {"cancel": "cancelled", "retry": "retried", "delete": "deleted"}
_FILTER_KEYS = frozenset(
    {"type", "queue", "state", "enqueued_before", "enqueued_after", "priority", "meta"}
)
#: Jobs inserted together in a partial enqueue; changes of existing jobs run this many at once.
_CHUNK = 100
_CONCURRENCY = 32
_PAGE = 500


@attrs.frozen
class BulkResult:
    """A bulk request's answer: its HTTP status, its body, and whether it is a stored answer
    given again for a repeated idempotency key."""

    status: int
    body: dict[str, Any]
    replayed: bool = False

    @property
    def size(self) -> int:
        """How many items the request processed (``X-OJS-Batch-Size``)."""
        total = self.body.get("total", 0)
        return total if isinstance(total, int) else 0


ItemCheck = Callable[[int, Any], None]


@attrs.frozen(kw_only=True)
class _Filter:
    states: tuple[JobState, ...]
    type: str | None = None
    queue: str | None = None
    before: datetime | None = None
    after: datetime | None = None
    priority: int | None = None
    meta: Mapping[str, Any] | None = None
    #: Multi-tenancy: the caller's tenant (``None``: any) and the owner test.
    tenant: str | None = None
    owns: Callable[[Job, str | None], bool] | None = None

    def matches(self, job: Job) -> bool:
        created = job.created_at
        return (
            (self.owns is None or self.owns(job, self.tenant))
            and job.state in self.states
            and (self.type is None or job.type == self.type)
            and (self.queue is None or job.queue == self.queue)
            and (self.before is None or (created is not None and created < self.before))
            and (self.after is None or (created is not None and created > self.after))
            and (self.priority is None or job.priority == self.priority)
            and (
                self.meta is None
                or all(job.meta.get(k, _MISSING) == v for k, v in self.meta.items())
            )
        )


_MISSING = object()


class BulkOperations:
    """The bulk operations of one :class:`~ojs_core.service.JobService`."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        #: How long an idempotency key's answer is kept (tests shorten it).
        self.idempotency_ttl_s = IDEMPOTENCY_TTL_S
        self.lease_s = LEASE_S

    @property
    def max_items(self) -> int:
        """The most items one request may carry (``Limits.max_batch_jobs``)."""
        return self.service.limits.max_batch_jobs

    @property
    def idempotent(self) -> bool:
        """Whether the backend stores idempotency keys."""
        return isinstance(self.service.backend, IdempotencyStore)

    # -- entry point ----------------------------------------------------------------------------

    async def run(
        self,
        operation: str,
        body: Any,
        *,
        idempotency_key: str | None = None,
        block_s: float = 0.0,
        check_item: ItemCheck | None = None,
        tenant: str | None = None,
    ) -> BulkResult:
        """Carry out one bulk request. ``idempotency_key`` (the ``Idempotency-Key`` header)
        wins over the body's ``idempotency_key``; ``check_item(index, envelope)`` may refuse an
        enqueued envelope (the binding's size limit) by raising an :class:`OJSError`, which
        fails that item only. Malformed requests raise 400 (or 413 over the item limit)
        naming the field, before anything is changed or reserved. ``tenant`` scopes the
        request (multi-tenancy): enqueued jobs get it in ``meta.tenant_id``, changes touch its
        jobs only (another tenant's is skipped as not found), and its idempotency keys are
        its own."""
        if operation not in OPERATIONS:
            raise NotFoundError("bulk operation", operation)
        if not isinstance(body, Mapping):
            raise ValidationError("request body must be a JSON object")
        atomic = _atomicity(body.get("atomicity"))
        key = idempotency_key if idempotency_key is not None else body.get("idempotency_key")
        if key is not None:
            path = "headers.Idempotency-Key" if idempotency_key is not None else "idempotency_key"
            if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
                raise ValidationError(
                    f"must be a non-empty string of at most {MAX_KEY_LENGTH} characters",
                    path=path,
                )
        execute: Callable[[int | None], Awaitable[BulkResult]]
        if operation == "enqueue":
            items = body.get("jobs")
            if not isinstance(items, list) or not items:
                raise ValidationError("must be a non-empty array", path="jobs")
            self._check_size(len(items))
            if tenant is not None:
                items = [inject(e, tenant, f"jobs[{i}]") for i, e in enumerate(items)]

            def execute(at: int | None) -> Awaitable[BulkResult]:
                return self._enqueue(items, atomic, block_s, check_item, key, at)

        else:
            if atomic:
                raise ValidationError(
                    f"bulk {operation} is partial only: the store has no transaction over "
                    "several existing jobs",
                    path="atomicity",
                    code="unsupported",
                    status=422,
                )
            target = self._target(operation, body)

            def execute(at: int | None) -> Awaitable[BulkResult]:
                return self._change(operation, target, tenant)

        if key is None:
            return await execute(None)
        store = self.service.backend
        if not isinstance(store, IdempotencyStore):
            raise UnsupportedError(
                f"the {self.service.backend.name} backend does not store idempotency keys"
            )
        kept = KeptAnswers(store, self.idempotency_ttl_s, self.lease_s)

        async def answer(at: int | None) -> tuple[int, dict[str, Any]]:
            result = await execute(at)
            return result.status, result.body

        # A tenant's keys are its own ("/" cannot occur in a tenant id): another tenant reusing
        # a key must neither replay this answer nor be refused for it.
        scope = f"bulk.{operation}:{key}" if tenant is None else f"bulk.{operation}/{tenant}/{key}"
        status, body_out, replayed = await kept.once(
            scope, key, fingerprint(body), _ms(self.service.now()), answer
        )
        return BulkResult(status, body_out, replayed=replayed)

    def _check_size(self, size: int) -> None:
        if size > self.max_items:
            raise BatchTooLargeError(size, self.max_items)

    # -- enqueue --------------------------------------------------------------------------------

    async def _enqueue(
        self,
        items: list[Any],
        atomic: bool,
        block_s: float,
        check_item: ItemCheck | None,
        key: str | None,
        at: int | None,
    ) -> BulkResult:
        service = self.service
        now = service.now()
        results: list[dict[str, Any] | None] = [None] * len(items)
        valid: list[tuple[int, Job]] = []
        assigned: set[str] = set()  # ids derived from the idempotency key
        for i, item in enumerate(items):
            try:
                if check_item is not None:
                    check_item(i, item)
                if (
                    key is not None
                    and at is not None
                    and isinstance(item, Mapping)
                    and item.get("id") is None
                ):
                    job_id = deterministic_uuid7(at, "bulk.enqueue", key, str(i))
                    item = {**item, "id": job_id}
                    assigned.add(job_id)
                valid.append((i, parse_enqueue(item, now=now, path=f"jobs[{i}]")))
            except OJSError as exc:
                results[i] = _failed(i, exc)
        if atomic:
            await self._enqueue_atomic(valid, results, assigned, block_s)
        else:
            await self._enqueue_partial(valid, results, assigned, block_s)
        done = [r for r in results if r is not None]
        assert len(done) == len(items)
        succeeded = sum(1 for r in done if r["status"] != "failed")
        failed = len(done) - succeeded
        if failed == 0:
            status = 201
        elif succeeded == 0:
            status = 422
        else:
            status = 207
        body = {"total": len(done), "succeeded": succeeded, "failed": failed, "items": done}
        body["atomicity"] = "atomic" if atomic else "partial"
        await service.emit(
            [
                make_event(
                    "bulk.enqueue.completed",
                    service.now(),
                    {
                        "total": len(done),
                        "succeeded": succeeded,
                        "failed": failed,
                        "atomicity": body["atomicity"],
                    },
                )
            ]
        )
        return BulkResult(status, body)

    async def _enqueue_atomic(
        self,
        valid: list[tuple[int, Job]],
        results: list[dict[str, Any] | None],
        assigned: set[str],
        block_s: float,
    ) -> None:
        bad = [i for i, r in enumerate(results) if r is not None]
        if bad:
            _roll_back(valid, results, bad)
            return
        jobs = [job for _, job in valid]
        try:
            outcomes = await self.service.enqueue_jobs(jobs, block_s=block_s)
        except DuplicateJobError as exc:
            if "unique_key" not in exc.details and assigned:
                stored = await self.service.backend.get_jobs([j.id for j in jobs])
                if all(s is not None for s in stored) and {j.id for j in jobs} <= assigned:
                    # An earlier attempt under the same idempotency key stored them all.
                    for (i, _), job in zip(valid, stored, strict=True):
                        assert job is not None
                        results[i] = _created(i, job, "created")
                    return
            self._blame(valid, results, exc)
            return
        except OJSError as exc:
            if exc.status >= 500:
                raise  # nothing was stored: the whole request may be tried again
            self._blame(valid, results, exc)
            return
        for (i, _), outcome in zip(valid, outcomes, strict=True):
            results[i] = _outcome(i, outcome)

    @staticmethod
    def _blame(
        valid: list[tuple[int, Job]], results: list[dict[str, Any] | None], exc: OJSError
    ) -> None:
        """An atomic insert refused: the items that caused it get ``exc``, the others are
        reported rolled back."""
        position = exc.details.get("index")
        if isinstance(position, int) and 0 <= position < len(valid):
            culprits = [valid[position][0]]
        elif isinstance(exc.details.get("queue"), str):
            culprits = [i for i, job in valid if job.queue == exc.details["queue"]]
        else:
            culprits = [i for i, _ in valid]
        for i in culprits:
            results[i] = _failed(i, exc)
        _roll_back(valid, results, culprits)

    async def _enqueue_partial(
        self,
        valid: list[tuple[int, Job]],
        results: list[dict[str, Any] | None],
        assigned: set[str],
        block_s: float,
    ) -> None:
        service = self.service
        for start in range(0, len(valid), _CHUNK):
            chunk = valid[start : start + _CHUNK]
            try:
                outcomes = await service.enqueue_jobs([j for _, j in chunk], block_s=block_s)
            except OJSError as exc:
                if exc.status >= 500 and start == 0:
                    raise  # nothing stored yet: the request as a whole may be tried again
            else:
                for (i, _), outcome in zip(chunk, outcomes, strict=True):
                    results[i] = _outcome(i, outcome)
                continue
            # The chunk was refused whole: job by job, so only the culprits fail.
            unavailable: OJSError | None = None
            for i, job in chunk:
                if unavailable is not None:
                    results[i] = _failed(i, unavailable)
                    continue
                try:
                    (outcome,) = await service.enqueue_jobs([job], block_s=block_s)
                except DuplicateJobError as exc:
                    existing = None
                    if job.id in assigned and "unique_key" not in exc.details:
                        existing = await service.backend.get_job(job.id)
                    results[i] = _created(i, existing, "created") if existing else _failed(i, exc)
                except OJSError as exc:
                    results[i] = _failed(i, exc)
                    if exc.status >= 500:
                        unavailable = exc  # the rest is not attempted
                else:
                    results[i] = _outcome(i, outcome)

    # -- cancel, retry, delete ------------------------------------------------------------------

    def _target(self, operation: str, body: Mapping[str, Any]) -> list[Any] | _Filter:
        ids, flt = body.get("job_ids"), body.get("filter")
        if ids is not None and flt is not None:
            raise ValidationError("give job_ids or filter, not both", path="filter")
        if ids is None and flt is None:
            raise ValidationError("is required (or filter)", path="job_ids")
        if ids is not None:
            if not isinstance(ids, list) or not ids:
                raise ValidationError("must be a non-empty array of job ids", path="job_ids")
            self._check_size(len(ids))
            return ids
        if operation == "delete":
            raise ValidationError(
                "bulk delete takes job_ids only (the admin API deletes by filter)", path="filter"
            )
        return _parse_filter(operation, flt)

    async def _change(
        self, operation: str, target: list[Any] | _Filter, tenant: str | None = None
    ) -> BulkResult:
        tenancy = self.service.tenancy
        if isinstance(target, _Filter):
            target = attrs.evolve(target, tenant=tenant, owns=tenancy.owns)
            jobs, more = await self._collect(target)
            ids: list[Any] = [j.id for j in jobs]
            still: Callable[[Job], bool] = target.matches
        else:
            ids, more = target, False
            allowed = {"cancel": CANCELLABLE, "retry": RETRIABLE, "delete": TERMINAL}[operation]

            def still(job: Job) -> bool:
                # Checked in the compare-and-swap too: never another tenant's job.
                return job.state in allowed and tenancy.owns(job, tenant)

        act = {"cancel": self._cancel, "retry": self._retry, "delete": self._delete}[operation]
        gate = asyncio.Semaphore(_CONCURRENCY)
        done = _DONE[operation]

        unavailable: list[OJSError] = []

        async def one(index: int, job_id: Any) -> dict[str, Any]:
            item: dict[str, Any] = {"index": index, "job_id": job_id}
            try:
                if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_ID_LENGTH:
                    raise ValidationError(
                        "must be a job id (a non-empty string)", path=f"job_ids[{index}]"
                    )
                async with gate:
                    if tenant is not None:  # another tenant's job is not found, not refused
                        await self.service.get(job_id, tenant=tenant)
                    await act(job_id, still)
            except OJSError as exc:
                if exc.status >= 500:
                    unavailable.append(exc)
                return item | {"status": "skipped", "reason": exc.message} | _error(exc)
            return item | {"status": done}

        items = list(await asyncio.gather(*(one(i, j) for i, j in enumerate(ids))))
        if items and len(unavailable) == len(items):
            raise unavailable[0]  # nothing was changed: the request may be tried again whole
        changed = sum(1 for item in items if item["status"] == done)
        skipped = len(items) - changed
        if skipped == 0:
            status = 200
        elif changed == 0:
            status = 422
        else:
            status = 207
        body: dict[str, Any] = {
            "total_matched": len(items),
            done: changed,
            "skipped": skipped,
            "total": len(items),
            "succeeded": changed,
            "failed": skipped,
            "items": items,
        }
        if isinstance(target, _Filter):
            body["has_more"] = more
        service = self.service
        data = {"total": len(items), done: changed, "skipped": skipped}
        await service.emit([make_event(f"bulk.{operation}.completed", service.now(), data)])
        return BulkResult(status, body)

    async def _collect(self, flt: _Filter) -> tuple[list[Job], bool]:
        """Up to :attr:`max_items` jobs the filter selects, and whether there were more."""
        found: list[Job] = []
        backend = self.service.backend
        for state in flt.states:
            offset = 0
            while True:
                page = await backend.list_jobs(
                    JobFilter(
                        state=state.value,
                        queue=flt.queue,
                        type=flt.type,
                        limit=_PAGE,
                        offset=offset,
                    )
                )
                for job in page.items:
                    if flt.matches(job):
                        if len(found) == self.max_items:
                            return found, True
                        found.append(job)
                if len(page.items) < _PAGE:
                    break
                offset += len(page.items)
        return found, False

    async def _cancel(self, job_id: str, still: Callable[[Job], bool]) -> None:
        def cancel(job: Job, now: datetime) -> Job:
            _require(job, still, "cancelled", "scheduled, available, pending and retryable")
            return lifecycle.cancel(job, now)

        await self.service.transition(job_id, cancel)

    async def _retry(self, job_id: str, still: Callable[[Job], bool]) -> None:
        def retry(job: Job, now: datetime) -> Job:
            _require(job, still, "retried", "discarded and retryable")
            return lifecycle.retry_now(job, now)

        await self.service.transition(job_id, retry)

    async def _delete(self, job_id: str, still: Callable[[Job], bool]) -> None:
        backend = self.service.backend
        if await backend.delete_job(job_id, only_if=still):
            return
        job = await backend.get_job(job_id)
        if job is None:
            raise NotFoundError("job", job_id)
        _require(job, still, "deleted", "completed, cancelled and discarded")
        raise ConflictError(f"Job '{job_id}' changed while it was being deleted; try again")


def _atomicity(raw: Any) -> bool:
    if raw is None or raw == "partial":
        return False
    if raw == "atomic":
        return True
    raise ValidationError('must be "atomic" or "partial"', path="atomicity")


def _parse_filter(operation: str, raw: Any) -> _Filter:
    if not isinstance(raw, Mapping):
        raise ValidationError("must be an object", path="filter")
    if not raw:
        raise ValidationError("must name at least one criterion", path="filter")
    for name in raw:
        if name not in _FILTER_KEYS:
            raise ValidationError(
                f"unknown filter key; use {', '.join(sorted(_FILTER_KEYS))}",
                path=f"filter.{name}",
            )
    allowed = CANCELLABLE if operation == "cancel" else RETRIABLE
    states_raw = raw.get("state")
    states: tuple[JobState, ...] = _DEFAULT_FILTER_STATES[operation]
    if states_raw is not None:
        if isinstance(states_raw, str):
            states_raw = [states_raw]
        if not isinstance(states_raw, list) or not states_raw:
            raise ValidationError("must be a non-empty array of states", path="filter.state")
        parsed = []
        names = ", ".join(sorted(s.value for s in allowed))
        for i, value in enumerate(states_raw):
            try:
                state = JobState(value)
            except (ValueError, TypeError):
                state = None
            if state is None or state not in allowed:
                raise ValidationError(
                    f"bulk {operation} applies to {names} jobs", path=f"filter.state[{i}]"
                )
            parsed.append(state)
        states = tuple(dict.fromkeys(parsed))
    kind = raw.get("type")
    if kind is not None and (not isinstance(kind, str) or not kind or len(kind) > 255):
        raise ValidationError("must be an exact job type", path="filter.type")
    queue = raw.get("queue")
    if queue is not None:
        queue = validate_queue(queue, "filter.queue")
    priority = raw.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ValidationError("must be an integer", path="filter.priority")
    meta = raw.get("meta")
    if meta is not None and not isinstance(meta, Mapping):
        raise ValidationError("must be an object", path="filter.meta")
    return _Filter(
        states=states,
        type=kind,
        queue=queue,
        before=_timestamp(raw.get("enqueued_before"), "filter.enqueued_before"),
        after=_timestamp(raw.get("enqueued_after"), "filter.enqueued_after"),
        priority=priority,
        meta=dict(meta) if meta is not None else None,
    )


def _timestamp(raw: Any, path: str) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return parse_ts(raw)
    raise ValidationError("must be an RFC 3339 timestamp", path=path)


def _require(job: Job, still: Callable[[Job], bool], done: str, states: str) -> None:
    if not still(job):
        raise ConflictError(
            f"Job is in {job.state.value} state; only {states} jobs are {done} (or it no "
            "longer matches the filter)",
            details={"job_id": job.id, "current_state": job.state.value},
        )


def _summary(job: Job) -> dict[str, Any]:
    return {"id": job.id, "type": job.type, "queue": job.queue, "state": job.state.value}


def _created(index: int, job: Job, status: str) -> dict[str, Any]:
    return {"index": index, "status": status, "job": _summary(job)}


def _outcome(index: int, outcome: EnqueueOutcome) -> dict[str, Any]:
    item = _created(index, outcome.job, "created" if outcome.created else "duplicate")
    if outcome.warnings:
        item["warnings"] = list(outcome.warnings)
    return item


def _error(exc: OJSError) -> dict[str, Any]:
    wire: dict[str, Any] = exc.to_wire()["error"]
    return {"error": wire}


def _failed(index: int, exc: OJSError) -> dict[str, Any]:
    return {"index": index, "status": "failed"} | _error(exc)


def _roll_back(
    valid: Sequence[tuple[int, Job]], results: list[dict[str, Any] | None], culprits: list[int]
) -> None:
    first = culprits[0] if culprits else None
    for i, _ in valid:
        if results[i] is None:
            error = OJSError(
                f"not enqueued: the request is atomic and item {first} failed",
                details={"failed_index": first},
            )
            results[i] = {"index": i, "status": "failed"} | _rolled_back(error)


def _rolled_back(error: OJSError) -> dict[str, Any]:
    wire = _error(error)
    wire["error"]["code"] = "rolled_back"
    return wire


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
