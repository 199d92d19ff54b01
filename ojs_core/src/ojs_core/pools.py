"""Worker pools (fair-scheduling extension §6, §10.1; FS-004, FS-R001, FS-R006).

A pool is a named group of workers with a queue assignment, a concurrency limit across all its
workers, a strategy across its queues and an isolation flag. Definitions are kept by a backend
with the optional :class:`~ojs_core.backend.PoolStore` capability, so every replica sees the
same pools; :class:`Pools` keeps a snapshot of them in the process, refreshed in the background
at most once a second (:data:`SNAPSHOT_TTL_S`): a fetch never waits for the store, except the
first one of a process. A change made through this process applies here at once, through
another replica within about a second.

A change made through a process that never read the pools reads them all first (its snapshot
must not hold that one pool only: the isolated queues of the others would go to outsiders).
Every change made through this process bumps a generation; a read of the store applies only if
no change was made here since it started, so a background refresh that read the store before
a change cannot put back what the change replaced.

A worker belongs to one pool: the ``pool`` of its heartbeats (stored with its record) or of
its fetch. A fetch of a worker in a defined pool serves the pool's queues with the pool's
strategy (server-side configuration takes precedence, §5.2); a worker naming a pool nobody
defined keeps its own queues and strategy. A queue assigned to an *isolated* pool is left
out of the fetches of every worker outside that pool (§6.3).

The pool's ``concurrency`` (jobs active at once across all its workers, on every replica) is
enforced by the rate-limit admission: each claim of a pool's worker must also be admitted by
the key ``pool:<name>`` with that concurrency limit (see :mod:`ojs_core.rate_limiting`), and
the claimed job records its pool (``Job.pool``), so the job's ack, failure or timeout frees
the slot on whichever replica it happens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .backend import Backend, PoolStore, RateLimitStore
from .envelope import POOL_NAME, validate_queue
from .errors import ConflictError, NotFoundError, UnsupportedError, ValidationError
from .events import make_event
from .model import Event, RateLimit, WorkerInfo
from .queue_strategy import (
    QueuePlan,
    Starvation,
    parse_starvation,
    parse_strategy,
    parse_weights,
)
from .rate_limiting import AdmissionKeys
from .timeutil import format_ts

__all__ = [
    "SNAPSHOT_TTL_S",
    "PoolConfig",
    "Pools",
    "Route",
    "parse_pool",
    "parse_pool_name",
    "pool_key",
]

log = logging.getLogger("ojs.pools")
EmitFn = Callable[[Sequence[Event]], Awaitable[None]]
#: A replica's snapshot of the pools is refreshed when older than this.
SNAPSHOT_TTL_S = 1.0
#: A pool lists at most this many queues (every fetch of its workers names them all).
MAX_POOL_QUEUES = 100
#: A pool's concurrency, at most (every active job is a holder of its rate-limit key).
MAX_POOL_CONCURRENCY = 10_000
#: Workers seen within this long count as the pool's ``active_workers``.
ACTIVE_WORKER_S = 60.0
_NAME = POOL_NAME


def pool_key(name: str) -> str:
    """The rate-limit key that counts the pool's active jobs."""
    return f"pool:{name}"


@attrs.frozen
class PoolConfig:
    """One pool's definition (§6.1, plus ``isolated`` §6.3 and ``starvation_prevention`` §8)."""

    name: str
    queues: tuple[str, ...]
    concurrency: int | None = None
    #: §6.1: round-robin unless the definition says otherwise.
    strategy: str = "round-robin"
    weights: tuple[tuple[str, int], ...] = ()
    isolated: bool = False
    starvation: Starvation | None = None
    created_at: str = ""
    updated_at: str = ""

    @property
    def plan(self) -> QueuePlan:
        """The strategy across the pool's queues."""
        return QueuePlan(self.strategy, self.weights, self.starvation)

    def to_wire(self) -> dict[str, Any]:
        """The pool as the admin API shows it."""
        out: dict[str, Any] = {
            "name": self.name,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "strategy": self.strategy,
            "isolated": self.isolated,
        }
        if self.weights:
            out["weights"] = dict(self.weights)
        if self.starvation is not None:
            out["starvation_prevention"] = self.starvation.to_wire()
        out["created_at"] = self.created_at
        out["updated_at"] = self.updated_at
        return out

    def to_store(self) -> dict[str, Any]:
        """The stored form (JSON), read back by :meth:`from_store`."""
        return self.to_wire()

    @classmethod
    def from_store(cls, data: Mapping[str, Any]) -> PoolConfig:
        """Read back :meth:`to_store`."""
        sp = data.get("starvation_prevention")
        return cls(
            name=data["name"],
            queues=tuple(data["queues"]),
            concurrency=data.get("concurrency"),
            strategy=data.get("strategy", "round-robin"),
            weights=tuple(sorted((data.get("weights") or {}).items())),
            isolated=bool(data.get("isolated", False)),
            starvation=None
            if sp is None
            else parse_starvation(sp, "starvation_prevention", stored=True),
            created_at=data.get("created_at", ""),
            updated_at=data.get("updated_at", ""),
        )


def parse_pool_name(value: Any, path: str) -> str:
    """A pool name (1-128 letters, digits and ``._-``, starting with a letter or digit)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValidationError(
            "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
            path=path,
        )
    return value


def parse_pool(name: str, body: Any, now: str) -> PoolConfig:
    """The body of ``PUT /ojs/v1/admin/pools/{name}`` as a pool, or a 400 naming the field."""
    parse_pool_name(name, "name")
    if not isinstance(body, Mapping):
        raise ValidationError("must be a JSON object", path="body")
    if "name" in body and body["name"] != name:
        raise ValidationError("must match the pool name in the path", path="name")
    queues = body.get("queues")
    if not isinstance(queues, list) or not queues:
        raise ValidationError("must be a non-empty array of queue names", path="queues")
    if len(queues) > MAX_POOL_QUEUES:
        raise ValidationError(f"must list at most {MAX_POOL_QUEUES} queues", path="queues")
    for i, q in enumerate(queues):
        if not isinstance(q, str):
            raise ValidationError("must be a queue name", path=f"queues[{i}]")
        validate_queue(q, f"queues[{i}]")
    if len(set(queues)) != len(queues):
        raise ValidationError("must not name a queue twice", path="queues")
    concurrency = body.get("concurrency")
    if concurrency is not None and (
        not isinstance(concurrency, int)
        or isinstance(concurrency, bool)
        or not 1 <= concurrency <= MAX_POOL_CONCURRENCY
    ):
        raise ValidationError(
            f"must be an integer from 1 to {MAX_POOL_CONCURRENCY}", path="concurrency"
        )
    strategy = parse_strategy(body.get("strategy", "round-robin"), "strategy")
    weights = (
        ()
        if body.get("weights") is None
        else parse_weights(body["weights"], "weights", frozenset(queues))
    )
    isolated = body.get("isolated", False)
    if not isinstance(isolated, bool):
        raise ValidationError("must be a boolean", path="isolated")
    return PoolConfig(
        name=name,
        queues=tuple(queues),
        concurrency=concurrency,
        strategy=strategy,
        weights=weights,
        isolated=isolated,
        starvation=parse_starvation(body.get("starvation_prevention"), "starvation_prevention"),
        created_at=now,
        updated_at=now,
    )


@attrs.frozen
class Route:
    """Where one fetch goes: its queues, its plan, the schedule it shares, its pool."""

    queues: tuple[str, ...]
    plan: QueuePlan | None
    pool: PoolConfig | None = None
    pool_name: str | None = None

    @property
    def key(self) -> Any:
        """The schedule whose per-process rotation the fetch shares (a pool's, by name)."""
        return None if self.pool is None else ("pool", self.pool.name)


class Pools:
    """The pools of one :class:`~ojs_core.service.JobService` (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        now: Callable[[], datetime],
        emit: EmitFn,
        *,
        ttl_s: float = SNAPSHOT_TTL_S,
    ) -> None:
        self.store: PoolStore | None = backend if isinstance(backend, PoolStore) else None
        self._backend = backend
        self._now = now
        self._emit = emit
        self._ttl_s = ttl_s
        self._snapshot: dict[str, PoolConfig] = {}
        #: queue -> the isolated pool it is assigned to (the first by name, if several).
        self._isolated: dict[str, str] = {}
        self._loaded_at: float | None = None
        self._refresh: asyncio.Task[None] | None = None
        #: Bumped by every change made through this process (and by :meth:`forget`): a read of
        #: the store started under an older generation is stale and is not applied.
        self._generation = 0

    # -- the snapshot ---------------------------------------------------------------------

    async def current(self) -> Mapping[str, PoolConfig]:
        """The pools as this process knows them; refreshed in the background when stale
        (only a process's first call waits for the store)."""
        if self.store is None:
            return self._snapshot
        if self._loaded_at is None:
            await self.reload()
        elif time.monotonic() - self._loaded_at > self._ttl_s and self._refresh is None:
            self._refresh = asyncio.ensure_future(self._background())
        return self._snapshot

    async def _background(self) -> None:
        try:
            await self.reload()
        except Exception:  # the store is unreachable: keep the snapshot, try again later
            log.warning("pool definitions could not be refreshed", exc_info=True)
            self._loaded_at = time.monotonic()
        finally:
            self._refresh = None

    async def reload(self) -> None:
        """Read every pool from the store now (not applied if a change was made through
        this process while the read was under way: the snapshot already has it, the read
        may not)."""
        if self.store is None:
            return
        generation = self._generation
        pools = await self.store.list_pools()
        if generation == self._generation:
            self._set({p.name: p for p in pools})

    async def _change(self, name: str, pool: PoolConfig | None) -> None:
        """Apply a change made through this process (``pool``: the new definition, ``None``:
        deleted) to the snapshot, reading every other pool first if it never did."""
        while self._loaded_at is None:
            await self.reload()
        pools = {k: v for k, v in self._snapshot.items() if k != name}
        if pool is not None:
            pools[name] = pool
        self._generation += 1
        self._set(pools)

    def _set(self, pools: dict[str, PoolConfig]) -> None:
        self._snapshot = pools
        isolated: dict[str, str] = {}
        for name in sorted(pools):
            pool = pools[name]
            if pool.isolated:
                for q in pool.queues:
                    isolated.setdefault(q, name)
        self._isolated = isolated
        self._loaded_at = time.monotonic()

    # -- routing a fetch ------------------------------------------------------------------

    def route(
        self,
        queues: Sequence[str],
        plan: QueuePlan | None,
        pool: str | None,
        worker: WorkerInfo | None,
    ) -> Route:
        """Where a fetch goes (call after :meth:`current`): a defined pool's queues and plan
        replace the fetch's own; queues of isolated pools the worker is not in are left out."""
        name = pool
        recorded = worker.pool if worker is not None else None
        if name is not None and recorded is not None and recorded != name:
            raise ConflictError(
                f"worker '{worker.worker_id if worker else ''}' belongs to pool '{recorded}'",
                details={"pool": name, "worker_pool": recorded},
            )
        name = name or recorded
        config = self._snapshot.get(name) if name is not None else None
        if config is not None:
            queues, plan = config.queues, config.plan
        isolated = self._isolated
        if isolated:
            queues = [q for q in queues if isolated.get(q, name) == name]
        return Route(tuple(queues), plan, config, name)

    def admission_keys(self, route: Route) -> list[AdmissionKeys]:
        """The extra admission key of a fetch in a pool with a concurrency limit."""
        pool = route.pool
        if pool is None or pool.concurrency is None:
            return []
        key, policy = pool_key(pool.name), RateLimit(concurrency=pool.concurrency)
        return [AdmissionKeys(policy=lambda _job: (key, policy), limited=lambda _job: True)]

    @staticmethod
    def limiting(route: Route | None) -> str | None:
        """The pool whose concurrency a claim of this fetch takes a slot of: recorded on the
        claimed job (``Job.pool``), so that whichever replica sees it leave ``active`` frees
        the slot without knowing the pools."""
        pool = route.pool if route is not None else None
        return pool.name if pool is not None and pool.concurrency is not None else None

    #: The provider that frees a job's pool slot when it leaves ``active``.
    release_keys = AdmissionKeys(
        policy=lambda _job: None,
        limited=lambda _job: False,
        held=lambda job: None if job.pool is None else pool_key(job.pool),
    )

    # -- admin API (§10.1) ----------------------------------------------------------------

    def _need_store(self) -> PoolStore:
        if self.store is None:
            raise UnsupportedError("this backend does not store worker pools")
        return self.store

    async def get(self, name: str) -> PoolConfig:
        """A pool's definition; 404 when none is stored."""
        parse_pool_name(name, "name")
        pool = await self._need_store().get_pool(name)
        if pool is None:
            raise NotFoundError("pool", name)
        return pool

    async def put(self, name: str, body: Any) -> tuple[PoolConfig, bool]:
        """Create or replace a pool; whether it is new. A changed strategy or weights emit
        ``scheduling.rebalanced``."""
        store = self._need_store()
        now = self._now()
        stamp = format_ts(now)
        pool = parse_pool(name, body, stamp)
        before = await store.get_pool(name)
        if before is not None:
            pool = attrs.evolve(pool, created_at=before.created_at or stamp)
        await store.put_pool(pool)
        await self._change(name, pool)
        if before is not None and before.plan != pool.plan:
            await self._emit(
                [
                    make_event(
                        "scheduling.rebalanced",
                        now,
                        {
                            "pool": name,
                            "previous_strategy": before.strategy,
                            "new_strategy": pool.strategy,
                        },
                    )
                ]
            )
        return pool, before is None

    async def delete(self, name: str) -> PoolConfig:
        """Remove a pool (its workers keep their ``pool`` and fetch as if undefined)."""
        parse_pool_name(name, "name")
        pool = await self._need_store().delete_pool(name)
        if pool is None:
            raise NotFoundError("pool", name)
        await self._change(name, None)
        return pool

    async def listing(self) -> list[dict[str, Any]]:
        """Every pool with ``active_workers`` (workers of the pool seen in the last minute,
        not gone) and ``active_jobs`` (the holders of its concurrency key when it has one,
        else what its workers' heartbeats report)."""
        store = self._need_store()
        generation = self._generation
        pools = sorted(await store.list_pools(), key=lambda p: p.name)
        if generation == self._generation:
            self._set({p.name: p for p in pools})
        workers = await self._backend.list_workers()
        now = self._now()
        limits = await asyncio.gather(*(self._holders(p) for p in pools))
        items: list[dict[str, Any]] = []
        for pool, holders in zip(pools, limits, strict=True):
            mine = [
                w
                for w in workers
                if w.pool == pool.name
                and w.state != "terminate"
                and (now - w.last_seen).total_seconds() <= ACTIVE_WORKER_S
            ]
            active = holders if holders is not None else sum(len(w.active_jobs) for w in mine)
            items.append(pool.to_wire() | {"active_workers": len(mine), "active_jobs": active})
        return items

    async def _holders(self, pool: PoolConfig) -> int | None:
        if pool.concurrency is None:
            return None
        store = self._backend
        if not isinstance(store, RateLimitStore):
            return None
        state = await store.get_rate_limit(pool_key(pool.name))
        return 0 if state is None else len(state.holders)

    def forget(self) -> None:
        """Drop the snapshot (a reset): the next fetch reads the store again."""
        self._snapshot = {}
        self._isolated = {}
        self._loaded_at = None
        self._generation += 1  # a read under way from before the reset is not applied
