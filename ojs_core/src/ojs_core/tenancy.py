"""The multi-tenancy extension (``urn:ojs:ext:experimental:multi-tenancy`` 0.1.0).

A job belongs to the tenant named by ``meta.tenant_id`` (MT-001); a job without one belongs to
the *default tenant* (``_default`` unless configured), and ``meta`` is left as it was sent. The
HTTP binding injects the ``X-OJS-Tenant`` header into ``meta.tenant_id`` (:func:`inject`); a
request with the header is *scoped*: it reads, cancels, lists and fetches only that tenant's
jobs (:meth:`Tenancy.owns`, :meth:`Tenancy.scope`).

Isolation model (spec §6.3, "hybrid: sharded queues"): a backend keeps the ``available`` jobs
of each queue in one shard per tenant (:func:`shard_of`; the shard ``""`` holds the default
tenant's jobs). A scoped fetch pulls from its tenant's shard only, so it never takes (and
sets aside) another tenant's jobs; an unscoped fetch serves the shards of each priority level
in weighted round-robin (:mod:`ojs_core.fairness`).

Limits (spec §8), stored through the backend's :class:`~ojs_core.backend.TenantStore`, so every
replica applies the same ones (each replica reads a tenant's record at most once a second):

* ``max_concurrency`` (MT-003) is the rate-limit key ``tenant:<id>`` with a concurrency limit,
  admitted in the same :class:`~ojs_core.rate_limiting.Admission` as the job's own key;
* ``max_queue_depth`` and ``max_scheduled`` are checked at enqueue against the backend's
  per-tenant counters (:class:`~ojs_core.backend.TenantCounts`), as a bounded queue's depth is
  (``ojs_core.backpressure``): exact within a process, approximate across replicas;
* ``max_enqueue_rate`` is a sliding window in the rate-limit store (key
  ``tenant-enqueue:<id>``), admitted by compare-and-swap: exact across replicas.

A refusal is 429 ``TENANT_LIMIT_EXCEEDED`` with the spec's body (MT-004) and a
``tenant.limit_exceeded`` event; a tenant's first configuration emits ``tenant.created``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .backend import Backend, JobFilter, RateLimitStore, TenantCounts, TenantStore
from .envelope import parse_rate_limit
from .errors import NotFoundError, OJSError, UnsupportedError, ValidationError
from .events import make_event
from .fairness import Dispatch, FairShare
from .model import Event, Job, RateLimit, Window
from .rate_limit_rules import KeyState, admit
from .rate_limiting import AdmissionKeys
from .states import JobState
from .timeutil import format_duration, format_ts

__all__ = [
    "DEFAULT_TENANT",
    "HEADER",
    "Tenancy",
    "TenantConfig",
    "TenantLimitError",
    "TenantRequiredError",
    "inject",
    "parse_tenant_id",
    "shard_of",
]

DEFAULT_TENANT = "_default"
HEADER = "X-OJS-Tenant"
MAX_TENANT_ID = 128
_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._:-]*")
#: A tenant's record is read again after this many seconds (another replica may change it).
CONFIG_TTL_S = 1.0
#: ``tenant.limit_exceeded`` at most once per tenant, limit and this many seconds.
_EXCEEDED_EVERY_S = 1.0
#: The states counted by ``max_queue_depth`` (spec §8.1: available + scheduled jobs; jobs
#: waiting for a retry or a workflow step are waiting too).
DEPTH_STATES = (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RETRYABLE, JobState.PENDING)
_MAX_WEIGHT = 1_000_000
Emit = Callable[[Sequence[Event]], Awaitable[None]]


def shard_of(job: Job) -> str:
    """The ready shard of ``job``: its ``meta.tenant_id``, or ``""`` (the default tenant)."""
    tid = job.meta.get("tenant_id")
    return tid if isinstance(tid, str) else ""


def parse_tenant_id(value: Any, path: str = "tenant_id") -> str:
    """A tenant id (spec §5.2: ``^[a-zA-Z0-9][a-zA-Z0-9._:-]*$``, here at most 128 long)."""
    if not isinstance(value, str) or not value:
        raise ValidationError("must be a non-empty string", path=path)
    if len(value) > MAX_TENANT_ID or _PATTERN.fullmatch(value) is None:
        raise ValidationError(
            f"must be 1-{MAX_TENANT_ID} characters of letters, digits and ._:- starting with "
            "a letter or digit",
            path=path,
        )
    return value


def inject(body: Any, tenant: str | None, path: str = "") -> Any:
    """``body`` (an enqueue request) with the header's tenant in ``meta.tenant_id`` (spec
    §5.3); 400 when the body names another tenant. Returned unchanged without a header."""
    if tenant is None or not isinstance(body, Mapping):
        return body
    meta = body.get("meta")
    where = f"{path}.meta.tenant_id" if path else "meta.tenant_id"
    if isinstance(meta, Mapping) and meta.get("tenant_id") is not None:
        if meta["tenant_id"] != tenant:
            raise ValidationError(f"conflicts with the {HEADER} header ({tenant!r})", path=where)
        return body
    new_meta = dict(meta) if isinstance(meta, Mapping) else {}
    new_meta["tenant_id"] = tenant
    return {**body, "meta": new_meta}


class TenantLimitError(OJSError):
    """An enqueue refused because the tenant reached a limit (429, spec §8.2)."""

    code = "TENANT_LIMIT_EXCEEDED"
    status = 429
    retryable = True

    def __init__(
        self, tenant: str, limit: str, current: int, maximum: int, retry_after_s: int
    ) -> None:
        super().__init__(
            f"Tenant '{tenant}' has exceeded {limit} ({maximum})",
            details={"tenant_id": tenant, "limit": limit, "current": current, "maximum": maximum},
        )
        self.tenant = tenant
        self.limit = limit
        self.current = current
        self.maximum = maximum
        self.retry_after_s = retry_after_s

    def to_wire(self, request_id: str | None = None) -> dict[str, Any]:
        """The spec's fields at the top of the error object."""
        body = super().to_wire(request_id)
        body["error"].update(
            tenant_id=self.tenant, limit=self.limit, current=self.current, maximum=self.maximum
        )
        return body


class TenantRequiredError(OJSError):
    """A job without ``meta.tenant_id`` when tenants are required (422, spec §5.1)."""

    code = "tenant_required"
    status = 422


@attrs.frozen(kw_only=True)
class TenantConfig:
    """One tenant's configuration (spec §8.1), as stored."""

    tenant_id: str
    max_concurrency: int | None = None
    max_enqueue_rate: Window | None = None
    max_queue_depth: int | None = None
    max_scheduled: int | None = None
    fairness_weight: float = 1.0
    priority_boost: int = 0
    reason: str | None = None
    created_at: str = ""
    updated_at: str = ""

    def limits_wire(self) -> dict[str, Any]:
        """The ``limits`` object."""
        rate = self.max_enqueue_rate
        return {
            "max_concurrency": self.max_concurrency,
            "max_enqueue_rate": None
            if rate is None
            else {"limit": rate.limit, "period": format_duration(rate.period_ms)},
            "max_queue_depth": self.max_queue_depth,
            "max_scheduled": self.max_scheduled,
        }

    def to_wire(self) -> dict[str, Any]:
        """The admin API's shape (spec §8.1)."""
        out: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "limits": self.limits_wire(),
            "fairness_weight": self.fairness_weight,
            "priority_boost": self.priority_boost,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.reason:
            out["reason"] = self.reason
        return out

    def to_store(self) -> dict[str, Any]:
        """The stored form."""
        rate = self.max_enqueue_rate
        return {
            "id": self.tenant_id,
            "c": self.max_concurrency,
            "r": None if rate is None else [rate.limit, rate.period_ms],
            "d": self.max_queue_depth,
            "s": self.max_scheduled,
            "w": self.fairness_weight,
            "b": self.priority_boost,
            "why": self.reason,
            "ca": self.created_at,
            "ua": self.updated_at,
        }

    @classmethod
    def from_store(cls, raw: Mapping[str, Any]) -> TenantConfig:
        """The record :meth:`to_store` made."""
        r = raw.get("r")
        return cls(
            tenant_id=raw["id"],
            max_concurrency=raw.get("c"),
            max_enqueue_rate=None if r is None else Window(limit=r[0], period_ms=r[1]),
            max_queue_depth=raw.get("d"),
            max_scheduled=raw.get("s"),
            fairness_weight=float(raw.get("w", 1.0)),
            priority_boost=int(raw.get("b", 0)),
            reason=raw.get("why"),
            created_at=raw.get("ca", ""),
            updated_at=raw.get("ua", ""),
        )


def _opt_int(raw: Mapping[str, Any], name: str, path: str, lo: int, hi: int) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"must be an integer from {lo} to {hi}", path=f"{path}{name}")
    return value


_LIMIT_FIELDS = ("max_concurrency", "max_enqueue_rate", "max_queue_depth", "max_scheduled")


def parse_limits(raw: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """The limit fields present in ``raw`` (``null`` removes a limit)."""
    out: dict[str, Any] = {}
    if "max_concurrency" in raw:
        out["max_concurrency"] = _opt_int(raw, "max_concurrency", path, 0, 10_000)
    if "max_queue_depth" in raw:
        out["max_queue_depth"] = _opt_int(raw, "max_queue_depth", path, 0, 2**53)
    if "max_scheduled" in raw:
        out["max_scheduled"] = _opt_int(raw, "max_scheduled", path, 0, 2**53)
    if "max_enqueue_rate" in raw:
        rate = raw["max_enqueue_rate"]
        out["max_enqueue_rate"] = (
            None if rate is None else parse_rate_limit(rate, f"{path}max_enqueue_rate").rate
        )
        if rate is not None and out["max_enqueue_rate"] is None:
            raise ValidationError("must be {limit, period}", path=f"{path}max_enqueue_rate")
    return out


def parse_config(body: Any) -> dict[str, Any]:
    """``PUT /ojs/v1/admin/tenants/{id}``: ``limits{}`` (or the limit fields at the top),
    ``fairness_weight``, ``priority_boost``, ``reason``."""
    if not isinstance(body, Mapping):
        raise ValidationError("must be an object", path="")
    out: dict[str, Any] = {}
    limits = body.get("limits")
    if limits is not None:
        if not isinstance(limits, Mapping):
            raise ValidationError("must be an object", path="limits")
        out.update(parse_limits(limits, "limits."))
    out.update(parse_limits(body))
    if body.get("fairness_weight") is not None:
        w = body["fairness_weight"]
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w <= _MAX_WEIGHT:
            raise ValidationError(
                f"must be a number above 0, at most {_MAX_WEIGHT}", path="fairness_weight"
            )
        out["fairness_weight"] = float(w)
    if "priority_boost" in body:
        out["priority_boost"] = _opt_int(body, "priority_boost", "", -200, 200) or 0
    out.update(_reason(body))
    return out


def _reason(body: Mapping[str, Any]) -> dict[str, Any]:
    reason = body.get("reason")
    if reason is None:
        return {}
    if not isinstance(reason, str) or len(reason) > 1000:
        raise ValidationError("must be a string of at most 1000 characters", path="reason")
    return {"reason": reason}


class Tenancy:
    """The extension for one :class:`~ojs_core.service.JobService`."""

    def __init__(
        self,
        backend: Backend,
        now: Callable[[], datetime],
        emit: Emit,
        *,
        default: str = DEFAULT_TENANT,
        require: bool = False,
    ) -> None:
        self.backend = backend
        self._now = now
        self._emit = emit
        #: The tenant of jobs without ``meta.tenant_id`` (spec §15.3).
        self.default = default
        #: Refuse jobs without ``meta.tenant_id`` (spec §5.1) instead of giving them the default.
        self.require = require
        self.store: TenantStore | None = backend if isinstance(backend, TenantStore) else None
        self.counts: TenantCounts | None = backend if isinstance(backend, TenantCounts) else None
        self._limits_store: RateLimitStore | None = (
            backend if isinstance(backend, RateLimitStore) else None
        )
        #: tenant -> (monotonic time read, record or None).
        self._cache: dict[str, tuple[float, TenantConfig | None]] = {}
        self.fair = FairShare(self.weight)
        #: Jobs this process admitted and is storing, by tenant (counted with the depth).
        self._admitting: Counter[str] = Counter()
        self._locks: dict[str, asyncio.Lock] = {}
        self._exceeded_at: dict[tuple[str, str], float] = {}

    @property
    def supported(self) -> bool:
        """Whether tenant configurations are stored (the admin API works)."""
        return self.store is not None

    # -- who owns what --------------------------------------------------------------------

    def tenant_of(self, job: Job) -> str:
        """The tenant a job belongs to."""
        tid = job.meta.get("tenant_id")
        return tid if isinstance(tid, str) else self.default

    def owns(self, job: Job, tenant: str | None) -> bool:
        """Whether a request scoped to ``tenant`` (``None``: unscoped) may see ``job``."""
        return tenant is None or self.tenant_of(job) == tenant

    def shards(self, tenant: str) -> frozenset[str]:
        """The ready shards holding ``tenant``'s jobs."""
        return frozenset((tenant, "")) if tenant == self.default else frozenset((tenant,))

    def dispatch(self, tenant: str | None) -> Dispatch:
        """The ``activate.dispatch`` of a fetch scoped to ``tenant`` (``None``: any)."""
        return Dispatch(self.fair, None if tenant is None else self.shards(tenant))

    def weight(self, shard: str) -> float:
        """A shard's fairness weight (cached; 1 when unknown)."""
        got = self._cache.get(shard or self.default)
        cfg = got[1] if got is not None else None
        return cfg.fairness_weight if cfg is not None else 1.0

    # -- configuration --------------------------------------------------------------------

    def cached(self, tenant: str) -> TenantConfig | None:
        """The tenant's record as last read (no I/O; ``None`` when unknown)."""
        got = self._cache.get(tenant)
        return got[1] if got is not None else None

    async def config(self, tenant: str) -> TenantConfig | None:
        """The tenant's record, read at most once per :data:`CONFIG_TTL_S`."""
        if self.store is None:
            return None
        got = self._cache.get(tenant)
        clock = time.monotonic()
        if got is not None and clock - got[0] < CONFIG_TTL_S:
            return got[1]
        cfg = await self.store.get_tenant(tenant)
        self._cache[tenant] = (time.monotonic(), cfg)
        return cfg

    async def load(self, tenants: Sequence[str]) -> None:
        """Refresh the cached records of ``tenants`` (those older than the TTL)."""
        if self.store is None:
            return
        wanted = set(tenants)
        if len(wanted) == 1:
            await self.config(next(iter(wanted)))
        elif wanted:
            await asyncio.gather(*(self.config(t) for t in wanted))

    def concurrency_policy(self, job: Job) -> tuple[str, RateLimit] | None:
        """The rate-limit key and policy of the job's tenant's ``max_concurrency`` (cached
        record), or ``None``."""
        if self.store is None:
            return None
        tenant = self.tenant_of(job)
        got = self._cache.get(tenant)
        if got is None or got[1] is None or got[1].max_concurrency is None:
            return None
        return f"tenant:{tenant}", RateLimit(concurrency=got[1].max_concurrency)

    def admission_keys(self, load: Callable[[Sequence[Job]], Awaitable[None]]) -> AdmissionKeys:
        """The tenants' ``max_concurrency`` as an admission key provider of the rate-limit
        admission (``load`` reads the candidates' tenants' records first)."""
        policy = self.concurrency_policy
        return AdmissionKeys(
            policy=policy,
            limited=self.may_be_limited,
            load=load,
            held=lambda job: None if (p := policy(job)) is None else p[0],
        )

    def may_be_limited(self, job: Job) -> bool:
        """Whether a candidate must go through admission for its tenant (cheap: a job
        without ``meta.tenant_id`` only when the default tenant has a concurrency limit)."""
        if self.store is None:
            return False
        if isinstance(job.meta.get("tenant_id"), str):
            return True
        got = self._cache.get(self.default)
        return got is not None and got[1] is not None and got[1].max_concurrency is not None

    async def refresh_default(self) -> None:
        """Keep the default tenant's record fresh (once a second at most)."""
        if self.store is not None:
            await self.config(self.default)

    # -- enqueue --------------------------------------------------------------------------

    def prepare(self, jobs: list[Job]) -> list[Job]:
        """Check the tenant ids of new jobs (400 naming the field, 422 when required and
        absent); jobs of one workflow must agree (spec §15.2)."""
        many = len(jobs) > 1
        for i, job in enumerate(jobs):
            tid = job.meta.get("tenant_id")
            if tid is None:
                if self.require:
                    raise TenantRequiredError(
                        "meta.tenant_id is required (multi-tenancy is enabled)",
                        details={
                            "field": f"jobs[{i}].meta.tenant_id" if many else "meta.tenant_id"
                        },
                    )
                continue
            parse_tenant_id(tid, f"jobs[{i}].meta.tenant_id" if many else "meta.tenant_id")
        return jobs

    async def boost(self, jobs: list[Job]) -> list[Job]:
        """Jobs with their tenant's ``priority_boost`` added (clamped to -100..100)."""
        if self.store is None or not any(shard_of(j) for j in jobs):
            return jobs
        out: list[Job] = []
        for job in jobs:
            tid = job.meta.get("tenant_id")
            cfg = await self.config(tid) if isinstance(tid, str) else None
            if cfg is not None and cfg.priority_boost:
                priority = max(-100, min(100, job.priority + cfg.priority_boost))
                job = attrs.evolve(job, priority=priority)
            out.append(job)
        return out

    def unify_workflow(self, jobs: list[Job], tenant: str | None) -> list[Job]:
        """Every job of a workflow in one tenant: the request's (header), or the one its
        steps name; 400 when steps name two (spec §15.2)."""
        named = {j.meta["tenant_id"] for j in jobs if j.meta.get("tenant_id") is not None}
        if tenant is not None:
            named.add(tenant)
        if len(named) > 1:
            raise ValidationError(
                "every step of a workflow must belong to one tenant", path="meta.tenant_id"
            )
        if not named:
            return jobs
        tid = next(iter(named))
        return [
            j
            if j.meta.get("tenant_id") == tid
            else attrs.evolve(j, meta={**j.meta, "tenant_id": tid})
            for j in jobs
        ]

    async def admit(self, jobs: Sequence[Job]) -> Counter[str]:
        """Check the enqueue limits of the tenants of ``jobs`` and reserve their room; the
        reservation (to :meth:`release` once stored). Raises :class:`TenantLimitError`."""
        if self.store is None:
            return Counter()
        # Only tagged jobs: untagged ones (the default tenant's) pass without a lookup.
        wanted = Counter(shard_of(j) for j in jobs)
        wanted.pop("", None)
        if not wanted:
            return Counter()
        scheduled = Counter(shard_of(j) for j in jobs if j.state is JobState.SCHEDULED)
        reserved: Counter[str] = Counter()
        try:
            for tenant in sorted(wanted):
                cfg = await self.config(tenant)
                if cfg is None:
                    continue
                await self._check(cfg, wanted[tenant], scheduled[tenant], reserved)
        except BaseException:
            self.release(reserved)
            raise
        return reserved

    async def _check(
        self, cfg: TenantConfig, n: int, n_scheduled: int, reserved: Counter[str]
    ) -> None:
        tenant = cfg.tenant_id
        if cfg.max_queue_depth is not None or (cfg.max_scheduled is not None and n_scheduled):
            lock = self._locks.setdefault(tenant, asyncio.Lock())
            async with lock:
                counts = await self.stats_counts(tenant)
                inflight = self._admitting[tenant]
                if cfg.max_queue_depth is not None:
                    depth = sum(counts.get(s, 0) for s in DEPTH_STATES) + inflight
                    if depth + n > cfg.max_queue_depth:
                        await self._refuse(tenant, "max_queue_depth", depth, cfg.max_queue_depth, 5)
                if cfg.max_scheduled is not None and n_scheduled:
                    current = counts.get(JobState.SCHEDULED, 0)
                    if current + n_scheduled > cfg.max_scheduled:
                        await self._refuse(tenant, "max_scheduled", current, cfg.max_scheduled, 5)
                self._admitting[tenant] += n
                reserved[tenant] += n
        rate = cfg.max_enqueue_rate
        if rate is not None:
            await self._admit_rate(tenant, rate, n)

    async def _admit_rate(self, tenant: str, rate: Window, n: int) -> None:
        key = f"tenant-enqueue:{tenant}"
        now_ms = int(self._now().timestamp() * 1000)
        policy = RateLimit(rate=rate)
        requests = [(policy, f"enqueue-{i}", 0) for i in range(n)]
        out: list[Any] = []

        def change(state: KeyState | None) -> KeyState:
            new, decisions = admit(state, key, requests, now_ms)
            out[:] = decisions
            if not all(d.admitted for d in decisions):
                return state or KeyState(key=key)  # all or nothing: nothing counted
            return new

        store = self._limits_store
        if store is None:
            raise UnsupportedError("max_enqueue_rate needs a backend with a rate-limit store")
        await store.change_rate_limit(key, change)
        refused = next((d for d in out if not d.admitted), None)
        if refused is not None:
            retry = 1
            if refused.retry_ms is not None:
                retry = max(1, -(-(refused.retry_ms - now_ms) // 1000))
            await self._refuse(
                tenant, "max_enqueue_rate", refused.current or rate.limit, rate.limit, retry
            )

    async def _refuse(
        self, tenant: str, limit: str, current: int, maximum: int, retry_after_s: int
    ) -> None:
        await self.limit_event(tenant, limit, current, maximum)
        raise TenantLimitError(tenant, limit, current, maximum, retry_after_s)

    async def limit_event(
        self, tenant: str, limit: str, current: int | None, maximum: int | None
    ) -> None:
        """``tenant.limit_exceeded``, at most once per tenant, limit and second."""
        clock = time.monotonic()
        mark = (tenant, limit)
        if clock - self._exceeded_at.get(mark, -_EXCEEDED_EVERY_S) < _EXCEEDED_EVERY_S:
            return
        self._exceeded_at[mark] = clock
        data = {"tenant_id": tenant, "limit": limit, "current": current, "maximum": maximum}
        await self._emit([make_event("tenant.limit_exceeded", self._now(), data, subject=tenant)])

    def untouched(self, jobs: Sequence[Job]) -> bool:
        """Whether :meth:`admitting` would leave ``jobs`` as they are and reserve nothing: no
        job names a tenant and none has to (the common case, decided without its cost)."""
        return not self.require and all(job.meta.get("tenant_id") is None for job in jobs)

    @contextlib.asynccontextmanager
    async def admitting(self, jobs: list[Job]) -> AsyncIterator[list[Job]]:
        """New jobs checked (:meth:`prepare`), boosted, and admitted by their tenants' limits
        for the duration of the block (which stores them)."""
        jobs = await self.boost(self.prepare(jobs))
        reserved = await self.admit(jobs)
        try:
            yield jobs
        finally:
            self.release(reserved)

    def forget(self) -> None:
        """Forget cached records and credits (a reset)."""
        self._cache.clear()
        self.fair.forget()
        self._exceeded_at.clear()

    def release(self, reserved: Counter[str]) -> None:
        """End a reservation of :meth:`admit` (the jobs are stored, and counted, or not)."""
        for tenant, n in reserved.items():
            self._admitting[tenant] -= n
            if self._admitting[tenant] <= 0:
                del self._admitting[tenant]

    # -- statistics -----------------------------------------------------------------------

    async def stats_counts(self, tenant: str, queue: str | None = None) -> dict[JobState, int]:
        """Per-state counts of a tenant's jobs (all queues, or one)."""
        if self.counts is None:
            raise UnsupportedError(f"the {self.backend.name} backend does not count per tenant")
        shards = self.shards(tenant)
        total: Counter[JobState] = Counter()
        for shard in shards:
            if shard == "":
                continue  # the default tenant's untagged jobs are not counted per tenant
            total.update(await self.counts.tenant_counts(shard, queue))
        return dict(total)

    # -- admin API (spec §10) -------------------------------------------------------------

    def _store(self) -> TenantStore:
        if self.store is None:
            raise UnsupportedError(
                f"the {self.backend.name} backend does not store tenant configurations"
            )
        return self.store

    async def configs(self) -> list[TenantConfig]:
        """Every configured tenant, by id."""
        return sorted(await self._store().list_tenants(), key=lambda c: c.tenant_id)

    async def get(self, tenant: str) -> TenantConfig:
        """A tenant's configuration; 404 when none was stored."""
        cfg = await self._store().get_tenant(tenant)
        if cfg is None:
            raise NotFoundError("tenant", tenant)
        return cfg

    async def put(
        self, tenant: str, body: Any, *, limits_only: bool = False
    ) -> tuple[TenantConfig, bool]:
        """Create or update a tenant (``limits_only``: the ``/limits`` route, which keeps the
        other fields); the stored record and whether it is new."""
        if tenant != self.default:
            parse_tenant_id(tenant, "tenant_id")
        if limits_only:
            if not isinstance(body, Mapping):
                raise ValidationError("must be an object", path="")
            changes = {**parse_limits(body), **_reason(body)}
        else:
            changes = parse_config(body)
        now = format_ts(self._now())

        def change(old: TenantConfig | None) -> TenantConfig:
            if old is None:
                return TenantConfig(tenant_id=tenant, created_at=now, updated_at=now, **changes)
            if limits_only:
                return attrs.evolve(old, updated_at=now, **changes)
            fresh = TenantConfig(tenant_id=tenant, created_at=old.created_at, updated_at=now)
            return attrs.evolve(fresh, **changes)

        before, after = await self._store().change_tenant(tenant, change)
        self._cache[tenant] = (time.monotonic(), after)
        if before is None:
            event = make_event(
                "tenant.created", self._now(), {"tenant_id": tenant, **after.to_wire()}, tenant
            )
            await self._emit([event])
        return after, before is None

    async def delete(self, tenant: str) -> TenantConfig:
        """Deregister a tenant (its jobs stay); 404 when unknown."""
        cfg = await self._store().delete_tenant(tenant)
        self._cache.pop(tenant, None)
        if cfg is None:
            raise NotFoundError("tenant", tenant)
        return cfg

    async def stats(self, tenant: str) -> dict[str, Any]:
        """``GET /ojs/v1/admin/tenants/{id}/stats`` (spec §10.2): counts per state, limits with
        their current use, fairness weight."""
        counts = await self.stats_counts(tenant)
        cfg = await self._store().get_tenant(tenant)
        jobs = {s.value: counts.get(s, 0) for s in JobState}
        out: dict[str, Any] = {"tenant_id": tenant, "jobs": jobs, "limits": {}}
        if cfg is not None:
            limits: dict[str, Any] = {}
            if cfg.max_concurrency is not None:
                limits["max_concurrency"] = {
                    "limit": cfg.max_concurrency,
                    "current": counts.get(JobState.ACTIVE, 0),
                }
            if cfg.max_queue_depth is not None:
                limits["max_queue_depth"] = {
                    "limit": cfg.max_queue_depth,
                    "current": sum(counts.get(s, 0) for s in DEPTH_STATES),
                }
            if cfg.max_scheduled is not None:
                limits["max_scheduled"] = {
                    "limit": cfg.max_scheduled,
                    "current": counts.get(JobState.SCHEDULED, 0),
                }
            out["limits"] = limits
        out["fairness"] = {"weight": cfg.fairness_weight if cfg is not None else 1.0}
        return out

    async def jobs(
        self, tenant: str, flt: JobFilter, scan_max: int = 10_000
    ) -> tuple[list[Job], bool]:
        """A page of the tenant's jobs (``GET /ojs/v1/admin/tenants/{id}/jobs``), newest
        first: the listing of ``flt`` read page by page and filtered by tenant, at most
        ``scan_max`` jobs read; whether the scan was cut short there."""
        want = flt.offset + flt.limit
        found: list[Job] = []
        offset = 0
        page_size = 500
        while offset < scan_max:
            page = await self.backend.list_jobs(attrs.evolve(flt, limit=page_size, offset=offset))
            found.extend(j for j in page.items if self.tenant_of(j) == tenant)
            offset += len(page.items)
            if len(found) >= want or len(page.items) < page_size:
                return found[flt.offset : want], False
        return found[flt.offset : want], True
