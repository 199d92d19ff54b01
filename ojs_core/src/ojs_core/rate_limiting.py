"""The rate-limiting extension (``urn:ojs:ext:rate-limiting``) around a fetch: admission,
release, handler feedback, inspection and overrides.

The rules are :mod:`ojs_core.rate_limit_rules`; this module applies them to a store. A
backend with :class:`~ojs_core.backend.RateLimitStore` keeps every key in one record shared
by every process (the limits hold across replicas); any other backend gets
:class:`LocalRateLimits`, counted in this process.

A fetch opens an :class:`Admission`: the backend awaits ``admission.admit(candidates)``
before claiming rate-limited candidates (one compare-and-swap per key), and the service's
``activate`` asks ``admission.decide(job)``. A start admitted for a job this claim stored in
another state (it expired) is released at once; one whose claim lost a race is left to the
repair (another replica may hold the same slot for the same job); a job that leaves ``active``
releases its slot when its transition is stored; a release lost to a crash is repaired the
next time the key is full (its holder is found not ``active``, and admitted more than
:data:`~ojs_core.rate_limit_rules.REPAIR_GRACE_MS` ago: its claim may still be on its way).

A job may count against several keys: its own policy's, and those of the extra
:class:`AdmissionKeys` providers (its tenant's ``tenant:<id>``, multi-tenancy; the fetching
worker's pool's ``pool:<name>``, fair scheduling). A slot one key gave a job that another
key refused is given back at once, by an exact compare-and-swap: only if the holder is still
the one this admission wrote. Another admission of the same job that relies on the holder
stamps it anew (``touch``), so the slot of a claim in flight is never given back under it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .backend import Backend, RateLimitFn, RateLimitStore
from .envelope import parse_rate_limit, parse_rate_limit_key
from .errors import NotFoundError, ValidationError
from .events import make_event
from .model import Event, Job, JobError, RateLimit
from .rate_limit_ledger import Ledger
from .rate_limit_rules import (
    ADMITTED,
    REPAIR_GRACE_MS,
    Decision,
    KeyState,
    Override,
    admit,
    hold,
    key_of,
    release,
    release_attempts,
    release_exact,
    repair,
    stale_holders,
    view,
)
from .states import JobState
from .timeutil import from_epoch_ms, parse_ts

__all__ = ["Admission", "AdmissionKeys", "HeldBack", "LocalRateLimits", "RateLimiting"]

S = JobState
EmitFn = Callable[[Sequence[Event]], Awaitable[None]]

#: A full key's holders are checked (repair) at most once per key and this many seconds.
_REPAIR_EVERY_S = 1.0


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class LocalRateLimits:
    """Rate-limit keys kept in this process (the memory backend's store, and the service's
    for a backend without :class:`~ojs_core.backend.RateLimitStore`)."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyState] = {}

    def change(self, key: str, fn: RateLimitFn) -> KeyState | None:
        """Apply ``fn`` to ``key``'s state (synchronously: nothing interleaves)."""
        current = self._keys.get(key)
        new = fn(current)
        if new is None or new is current:
            return current
        self._keys[key] = new
        return new

    async def change_rate_limit(self, key: str, fn: RateLimitFn) -> KeyState | None:
        """:meth:`change`, for the store protocol."""
        return self.change(key, fn)

    async def get_rate_limit(self, key: str) -> KeyState | None:
        """``key``'s state, or ``None``."""
        return self._keys.get(key)

    async def list_rate_limits(self) -> list[KeyState]:
        """Every key's state."""
        return list(self._keys.values())

    def reset(self) -> None:
        """Forget every key."""
        self._keys.clear()


@attrs.define
class _Refusal:
    key: str
    decision: Decision


@attrs.define
class HeldBack:
    """What held a fetch's candidates back, for the response's ``X-RateLimit-*`` and
    ``Retry-After`` headers (§10.4): of the refusals, the one that lifts first (one whose
    time is known before one that waits for another job to finish)."""

    key: str | None = None
    strategy: str | None = None
    limit: int | None = None
    current: int | None = None
    retry_ms: int | None = None

    def consider(self, refusal: _Refusal) -> None:
        """Keep ``refusal`` if it lifts before the one kept."""
        d = refusal.decision
        if self.key is not None and (
            d.retry_ms is None or (self.retry_ms is not None and self.retry_ms <= d.retry_ms)
        ):
            return
        self.key, self.strategy, self.limit = refusal.key, d.strategy, d.limit
        self.current, self.retry_ms = d.current, d.retry_ms

    def headers(self, now_ms: int, *, empty: bool) -> dict[str, str]:
        """The headers this says: the limit, what remains of it, when it lifts, and (for a
        fetch that got nothing) ``Retry-After`` in decimal seconds."""
        if self.key is None:
            return {}
        out = {"X-RateLimit-Key": self.key}
        if self.limit is not None:
            out["X-RateLimit-Limit"] = str(self.limit)
            out["X-RateLimit-Remaining"] = str(max(0, self.limit - (self.current or 0)))
        if self.retry_ms is not None:
            out["X-RateLimit-Reset"] = str(-(-self.retry_ms // 1000))
            if empty:
                out["Retry-After"] = f"{max(0, self.retry_ms - now_ms) / 1000:.3f}"
        return out


@attrs.frozen
class AdmissionKeys:
    """A source of extra admission keys beyond a job's own ``rate_limit``: the multi-tenancy
    extension's ``tenant:<id>`` (a tenant's ``max_concurrency``), fair scheduling's
    ``pool:<name>`` (a worker pool's ``concurrency``)."""

    #: The key and policy a candidate counts against, or ``None``.
    policy: Callable[[Job], tuple[str, RateLimit] | None]
    #: Whether a candidate may count against one (cheap: asked of every candidate).
    limited: Callable[[Job], bool]
    #: Loads what :attr:`policy` reads, before an admission of these candidates.
    load: Callable[[Sequence[Job]], Awaitable[None]] | None = None
    #: The key whose slot a job leaving ``active`` frees, or ``None``.
    held: Callable[[Job], str | None] | None = None


class Admission:
    """One fetch's rate-limit decisions (see the module docstring).

    A candidate may count against several keys: its own policy's, and those of the
    :class:`AdmissionKeys` providers (the service's, plus any of this fetch's). It is
    admitted when every key admits it; a key that admitted a job another key refused is released in
    :meth:`finish` if its holder is still the one this admission wrote (a rate window's
    start, once counted, stays counted)."""

    def __init__(
        self,
        limits: RateLimiting,
        now: datetime,
        startable: Callable[[Job], bool] | None = None,
        extra: Sequence[AdmissionKeys] = (),
    ) -> None:
        self._limits = limits
        self._providers = (*limits.providers, *extra)
        #: Which candidates this fetch would start, limits aside: only those are admitted
        #: (a slot taken for a job the claim then skips would sit unused until repaired).
        self._startable = startable
        self.now = now
        self.now_ms = _ms(now)
        #: job id -> decision, for every rate-limited candidate seen.
        self.decisions: dict[str, Decision] = {}
        #: job id -> the keys that admitted it.
        self.admitted: dict[str, list[str]] = {}
        #: (job id, key) -> the holder this admission wrote, for jobs of several keys.
        self.written: dict[tuple[str, str], tuple[int, int]] = {}
        #: job id -> refusal, for candidates refused.
        self.refused: dict[str, _Refusal] = {}
        #: The hook a backend with a shared store awaits (``activate.admit``).
        self.admit: Callable[[Sequence[Job]], Awaitable[None]] | None = (
            self._admit if limits.shared else None
        )

    def needs(self, job: Job) -> bool:
        """Whether ``job`` must be admitted before it is claimed (``activate.limited``)."""
        if job.rate_limit is not None:
            return True
        return any(p.limited(job) for p in self._providers)

    def keys(self, job: Job) -> list[tuple[str, RateLimit]]:
        """The keys ``job`` counts against, with the policy of each."""
        out: list[tuple[str, RateLimit]] = []
        if job.rate_limit is not None:
            out.append((key_of(job.rate_limit, job.queue), job.rate_limit))
        for provider in self._providers:
            extra = provider.policy(job)
            if extra is not None:
                out.append(extra)
        return out

    def _record(self, job: Job, key: str, decision: Decision) -> None:
        if decision.admitted:
            keys = self.admitted.setdefault(job.id, [])
            if key not in keys:
                keys.append(key)
            self.decisions.setdefault(job.id, decision)
        elif job.id not in self.refused:
            self.refused[job.id] = _Refusal(key, decision)
            self.decisions[job.id] = decision

    async def _admit(self, jobs: Sequence[Job]) -> None:
        startable = self._startable
        jobs = [j for j in jobs if startable is None or startable(j)]
        if jobs:
            for provider in self._providers:
                if provider.load is not None:
                    await provider.load(jobs)
        by_key: dict[str, list[tuple[Job, RateLimit]]] = {}
        for job in jobs:
            self.decisions.pop(job.id, None)
            self.refused.pop(job.id, None)
            for key, policy in self.keys(job):
                by_key.setdefault(key, []).append((job, policy))
        if len(by_key) == 1:
            # Awaited in place: a store that never suspends (the memory backend's) then
            # admits without yielding to the event loop in the middle of its claim.
            for key, group in by_key.items():
                await self._admit_key(key, group)
        else:
            await asyncio.gather(*(self._admit_key(k, g) for k, g in by_key.items()))

    async def _admit_key(self, key: str, items: Sequence[tuple[Job, RateLimit]]) -> None:
        several = {job.id for job, _ in items if len(self.keys(job)) > 1}
        decisions, written = await self._limits.admit_shared(key, items, self.now_ms, several)
        for (job, _), decision in zip(items, decisions, strict=True):
            self._record(job, key, decision)
            if job.id in written:
                self.written[(job.id, key)] = written[job.id]

    def decide(self, job: Job) -> Decision:
        """The decision for a candidate: the shared store's, or (when the backend did not
        ask the store) one counted in this process."""
        decision = self.decisions.get(job.id)
        if decision is not None:
            return decision
        keys = self.keys(job)
        if not keys:
            return ADMITTED
        several = len(keys) > 1
        for key, policy in keys:
            decision, written = self._limits.admit_local(key, job, policy, self.now_ms, several)
            self._record(job, key, decision)
            if written is not None:
                self.written[(job.id, key)] = written
            if not decision.admitted:
                break  # the keys after it are not asked (nothing to give back)
        return self.decisions[job.id]

    def until(self, job: Job) -> datetime | None:
        """When a refused job's limit should allow it (``None``: unknown)."""
        refusal = self.refused.get(job.id)
        if refusal is None or refusal.decision.retry_ms is None:
            return None
        return from_epoch_ms(refusal.decision.retry_ms)

    async def finish(self, stored: Sequence[Job], held: HeldBack | None = None) -> None:
        """After the claim: release starts admitted but not claimed, note waiting jobs (and
        in ``held`` what held them), and emit the extension's events."""
        if not self.decisions:
            return
        if held is not None:
            for refusal in self.refused.values():
                held.consider(refusal)
        active = {job.id for job in stored if job.state is S.ACTIVE}
        dropped = [job for job in stored if job.id in self.refused and job.state is S.DISCARDED]
        # Given back only where this claim stored the job in another state (it expired): a
        # job whose claim lost a race may be active under another replica holding the same
        # slot (same job, same attempt); such a slot is left to the repair.
        settled = {job.id for job in stored if job.state is not S.ACTIVE}
        unused: dict[str, list[str]] = {}
        # A job one key admitted and another refused was not claimed by this fetch: the slots
        # it got are given back if they are still exactly the ones this admission wrote.
        partial: dict[str, dict[str, tuple[int, int]]] = {}
        for job_id, keys in self.admitted.items():
            for key in keys:
                if job_id in settled:
                    unused.setdefault(key, []).append(job_id)
                elif job_id in self.refused and job_id not in active:
                    written = self.written.get((job_id, key))
                    if written is not None:
                        partial.setdefault(key, {})[job_id] = written
        await asyncio.gather(
            *(self._limits.release_ids(key, ids) for key, ids in unused.items()),
            *(self._limits.release_exact(key, held) for key, held in partial.items()),
        )
        events = self._limits.ledger.note(self.now, self.admitted, self.refused, active, dropped)
        await self._limits.emit(events)


class RateLimiting:
    """The extension for one :class:`~ojs_core.service.JobService`."""

    def __init__(self, backend: Backend, now: Callable[[], datetime], emit: EmitFn) -> None:
        self.shared = isinstance(backend, RateLimitStore)
        self.local = LocalRateLimits()
        self.store: RateLimitStore = backend if isinstance(backend, RateLimitStore) else self.local
        self._backend = backend
        self._now = now
        self.emit = emit
        #: Waiting jobs, event throttling and refusal observers (this process).
        self.ledger = Ledger(lambda: now().timestamp())
        self._repaired_at: dict[str, float] = {}
        #: Extra admission keys of every fetch (the multi-tenancy extension's tenant limits;
        #: fair scheduling's pool release), see :class:`AdmissionKeys`.
        self.providers: list[AdmissionKeys] = []

    def admission(
        self,
        now: datetime,
        startable: Callable[[Job], bool] | None = None,
        extra: Sequence[AdmissionKeys] = (),
    ) -> Admission:
        """The decisions of one fetch at ``now`` (of the candidates ``startable`` accepts),
        with this fetch's ``extra`` keys (a worker pool's) beside the service's."""
        return Admission(self, now, startable, extra)

    # -- admission ------------------------------------------------------------------------

    def admit_local(
        self, key: str, job: Job, policy: RateLimit, now_ms: int, several: bool = False
    ) -> tuple[Decision, tuple[int, int] | None]:
        """Admit one start in this process's store: the decision, and (for a job of
        ``several`` keys) the holder written."""
        out: list[Decision] = []
        written: list[tuple[int, int] | None] = [None]
        request = [(policy, job.id, job.attempt + 1)]
        touch = (job.id,) if several else ()

        def change(state: KeyState | None) -> KeyState:
            new, decisions = admit(state, key, request, now_ms, touch)
            out[:] = decisions
            written[0] = new.holders.get(job.id) if several else None
            return new

        self.local.change(key, change)
        return out[0], written[0]

    async def admit_shared(
        self,
        key: str,
        items: Sequence[tuple[Job, RateLimit]],
        now_ms: int,
        several: Collection[str] = (),
    ) -> tuple[list[Decision], dict[str, tuple[int, int]]]:
        """Admit starts of one key in the shared store (one compare-and-swap); a key found
        full is repaired first if a holder is not ``active`` any more. The decisions, and
        the holders written for the jobs of ``several`` keys (stamped anew if they held the
        key already, see :func:`~ojs_core.rate_limit_rules.admit`)."""
        requests = [(policy, j.id, j.attempt + 1) for j, policy in items]
        out: list[Decision] = []
        written: dict[str, tuple[int, int]] = {}

        def change(state: KeyState | None) -> KeyState:
            new, decisions = admit(state, key, requests, now_ms, several)
            out[:] = decisions
            written.clear()
            written.update((k, v) for k in several if (v := new.holders.get(k)) is not None)
            return new

        state = await self.store.change_rate_limit(key, change)
        if any(d.strategy == "concurrency" for d in out) and await self._repair(key, state, now_ms):
            state = await self.store.change_rate_limit(key, change)
        return out, written

    async def _repair(self, key: str, state: KeyState | None, now_ms: int) -> bool:
        """Drop holders whose job is not ``active`` in their attempt (and that are not just
        admitted); whether any was."""
        if state is None or not state.holders:
            return False
        clock = time.monotonic()
        if clock - self._repaired_at.get(key, -_REPAIR_EVERY_S) < _REPAIR_EVERY_S:
            return False
        self._repaired_at[key] = clock
        # A holder admitted within the grace may be a claim in flight (on another replica,
        # perhaps: its job still reads available until the claim is written): it is kept.
        horizon = now_ms - REPAIR_GRACE_MS
        old = [k for k, (_, since) in state.holders.items() if since < horizon]
        if not old:
            return False
        jobs = await self._backend.get_jobs(old)
        live = {j.id: j.attempt for j in jobs if j is not None and j.state is S.ACTIVE}
        if not stale_holders(state, live, now_ms):
            return False
        await self.store.change_rate_limit(key, lambda st: repair(st, live, now_ms))
        return True

    async def release_ids(self, key: str, job_ids: Sequence[str]) -> None:
        """Free the concurrency slots ``job_ids`` hold in ``key``."""
        await self.store.change_rate_limit(key, lambda st: release(st, job_ids))

    async def release_attempt(self, key: str, job: Job) -> None:
        """Free the slot ``job`` holds in ``key`` in its attempt (``job.attempt``, the one
        leaving ``active``) only: a later attempt's holder is kept (see
        :func:`~ojs_core.rate_limit_rules.release_attempts`)."""
        attempts = {job.id: job.attempt}
        await self.store.change_rate_limit(key, lambda st: release_attempts(st, attempts))

    async def release_exact(self, key: str, held: Mapping[str, tuple[int, int]]) -> None:
        """Free the slots of ``held`` (job id -> holder) that no admission stamped since."""
        await self.store.change_rate_limit(key, lambda st: release_exact(st, held))

    async def left_active(self, before: Job, after: Job) -> None:
        """Follow-up of a stored transition: a job leaving ``active`` frees its slot, and a
        failure reporting ``rate_limit_until`` holds its key until then (§9).

        Each slot (the job's own key, and the providers': tenant, pool, queue-level) is freed
        only if the attempt that left (``before.attempt``) still holds it: this release may
        come after another replica claimed the next attempt under the same key."""
        if before.state is not S.ACTIVE or after.state is S.ACTIVE:
            return
        for provider in self.providers:
            held = provider.held(before) if provider.held is not None else None
            if held is not None:
                await self.release_attempt(held, before)
        policy = before.rate_limit
        if policy is None:
            return
        key = key_of(policy, before.queue)
        if policy.concurrency is not None:
            await self.release_attempt(key, before)
        until = _rate_limit_until(after.error) if after.error is not before.error else None
        if until is not None and until > self._now():
            reason = after.error.message if after.error is not None else None
            await self.store.change_rate_limit(
                key, lambda st: hold(st, key, _ms(until), reason or None)
            )
            event = make_event(
                "rate_limit.dynamic_adjusted",
                self._now(),
                {"key": key, "until": after.error.details["rate_limit_until"], "reason": reason}
                if after.error is not None and after.error.details
                else {"key": key},
            )
            await self.emit([event])

    # -- inspection and overrides (HTTP §10) ------------------------------------------------

    async def get(self, key: str) -> dict[str, Any]:
        """``GET /ojs/v1/rate-limits/{key}``: the key's state, 404 when it has none."""
        parse_rate_limit_key(key, "key")
        state = await self.store.get_rate_limit(key)
        if state is None:
            raise NotFoundError("rate limit", key)
        return view(state, _ms(self._now()), self.ledger.waiting_count(key))

    async def list(self) -> list[dict[str, Any]]:
        """``GET /ojs/v1/rate-limits``: every key, by key."""
        now_ms = _ms(self._now())
        states = await self.store.list_rate_limits()
        return [
            view(s, now_ms, self.ledger.waiting_count(s.key))
            for s in sorted(states, key=lambda s: s.key)
        ]

    async def override(self, key: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /ojs/v1/rate-limits/{key}``: limits replacing the jobs' own until
        ``expires_at`` (a body with none of them removes the override)."""
        parse_rate_limit_key(key, "key")
        new = parse_override(body, self._now())
        now_ms = _ms(self._now())

        def change(state: KeyState | None) -> KeyState:
            return attrs.evolve(state or KeyState(key=key), override=new)

        state = await self.store.change_rate_limit(key, change)
        assert state is not None
        return view(state, now_ms, self.ledger.waiting_count(key))

    def reset(self) -> None:
        """Forget this process's keys and bookkeeping (tests)."""
        self.local.reset()
        self.ledger.reset()
        self._repaired_at.clear()


def _rate_limit_until(error: JobError | None) -> datetime | None:
    if error is None or not error.details:
        return None
    raw = error.details.get("rate_limit_until")
    if not isinstance(raw, str):
        return None
    try:
        return parse_ts(raw)
    except ValueError:
        return None


def parse_override(body: Mapping[str, Any], now: datetime) -> Override | None:
    """A ``PUT /ojs/v1/rate-limits/{key}`` body: ``concurrency``, ``rate``, ``throttle``
    (the job policy's shapes) and ``expires_at``; ``None`` when it sets no limit."""
    if not isinstance(body, Mapping):
        raise ValidationError("must be an object", path="")
    expires = body.get("expires_at")
    expires_ms: int | None = None
    if expires is not None:
        if not isinstance(expires, str):
            raise ValidationError("must be an RFC 3339 timestamp", path="expires_at")
        try:
            at = parse_ts(expires)
        except ValueError:
            raise ValidationError("must be an RFC 3339 timestamp", path="expires_at") from None
        if at <= now:
            raise ValidationError("must be in the future", path="expires_at")
        expires_ms = _ms(at)
    limits = {k: body[k] for k in ("concurrency", "rate", "throttle") if body.get(k) is not None}
    if not limits:
        return None
    policy: RateLimit = parse_rate_limit(limits, "")
    return Override(
        concurrency=policy.concurrency,
        rate=policy.rate,
        throttle=policy.throttle,
        expires_ms=expires_ms,
    )
