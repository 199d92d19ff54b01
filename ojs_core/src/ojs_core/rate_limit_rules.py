"""The rate-limiting extension's rules (``urn:ojs:ext:rate-limiting``), as pure functions on
one key's state.

Every job sharing a rate-limit key shares one :class:`KeyState`; a backend stores it as one
record and changes it by compare-and-swap (:class:`~ojs_core.backend.RateLimitStore`), so
the limits hold across every process sharing the store. The functions here never do I/O and
take the time as an argument.

Algorithms (the extension asks that they be documented, §5.2):

- **concurrency**: the key's holders (job id, attempt, when admitted) are kept in the record;
  a start is admitted while fewer than ``concurrency`` hold it. A holder whose job is no longer
  ``active`` in that attempt (its release was lost to a crash) is dropped when the key is full
  (:func:`repair`), so counts never drift for good; only holders admitted more than
  :data:`REPAIR_GRACE_MS` ago, because a holder is admitted before its claim is written (until
  then its job still reads ``available``).
- **rate**: a sliding window. Up to :data:`EXACT_LOG_LIMIT` starts per window the start
  times themselves are kept (exact); above that, two fixed windows are kept and the previous
  one is weighted by how much of it the sliding window still covers (within a few percent,
  and constant in size).
- **throttle**: one start per ``period / limit``, measured from the last start.
- **override** (``PUT /ojs/v1/rate-limits/{key}``): its limits replace the jobs' until it
  expires. **hold** (a failed job's ``rate_limit_until``): no start before that time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from .model import RateLimit, Window
from .timeutil import format_duration, format_ts, from_epoch_ms

__all__ = [
    "EXACT_LOG_LIMIT",
    "REPAIR_GRACE_MS",
    "Decision",
    "KeyState",
    "Override",
    "admit",
    "hold",
    "key_of",
    "release",
    "release_attempts",
    "release_exact",
    "repair",
    "stale_holders",
    "view",
]

#: Rate windows of up to this many starts keep every start time (an exact sliding window).
EXACT_LOG_LIMIT = 64
#: A holder younger than this is never repaired away: its claim may still be on its way.
REPAIR_GRACE_MS = 30_000


def key_of(policy: RateLimit, queue: str) -> str:
    """The key a job's policy counts against: its own, or its queue's."""
    return policy.key or f"queue:{queue}"


@attrs.frozen(kw_only=True)
class Override:
    """Limits set by an operator for a key, replacing the jobs' own until ``expires_ms``."""

    concurrency: int | None = None
    rate: Window | None = None
    throttle: Window | None = None
    expires_ms: int | None = None

    def live(self, now_ms: int) -> bool:
        """Whether the override still applies at ``now_ms``."""
        return self.expires_ms is None or now_ms < self.expires_ms


@attrs.frozen(kw_only=True)
class KeyState:
    """One key's counters and settings, as stored."""

    key: str
    #: The limits of the last job admitted or refused (what the key is configured as).
    concurrency: int | None = None
    rate: Window | None = None
    throttle: Window | None = None
    #: Jobs holding a concurrency slot: job id -> (the attempt that holds it, when it was
    #: admitted, epoch ms).
    holders: Mapping[str, tuple[int, int]] = attrs.field(factory=dict)
    #: Exact window: start times (epoch ms), oldest first.
    starts: tuple[int, ...] = ()
    #: Weighted window: the current fixed window's start, its count, the previous count.
    window_ms: int = 0
    count: int = 0
    previous: int = 0
    last_start_ms: int | None = None
    override: Override | None = None
    hold_until_ms: int | None = None
    hold_reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The stored form (compact JSON)."""
        return {
            "k": self.key,
            "c": self.concurrency,
            "r": _window_wire(self.rate),
            "t": _window_wire(self.throttle),
            "h": {k: list(v) for k, v in self.holders.items()},
            "s": list(self.starts),
            "w": [self.window_ms, self.count, self.previous],
            "l": self.last_start_ms,
            "o": None
            if self.override is None
            else {
                "c": self.override.concurrency,
                "r": _window_wire(self.override.rate),
                "t": _window_wire(self.override.throttle),
                "x": self.override.expires_ms,
            },
            "u": self.hold_until_ms,
            "ur": self.hold_reason,
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> KeyState:
        """The state stored by :meth:`to_wire`."""
        o = raw.get("o")
        w = raw.get("w") or [0, 0, 0]
        return cls(
            key=raw["k"],
            concurrency=raw.get("c"),
            rate=_window_of(raw.get("r")),
            throttle=_window_of(raw.get("t")),
            holders={k: (v[0], v[1]) for k, v in (raw.get("h") or {}).items()},
            starts=tuple(raw.get("s") or ()),
            window_ms=w[0],
            count=w[1],
            previous=w[2],
            last_start_ms=raw.get("l"),
            override=None
            if o is None
            else Override(
                concurrency=o.get("c"),
                rate=_window_of(o.get("r")),
                throttle=_window_of(o.get("t")),
                expires_ms=o.get("x"),
            ),
            hold_until_ms=raw.get("u"),
            hold_reason=raw.get("ur"),
        )


def _window_wire(w: Window | None) -> list[int] | None:
    return None if w is None else [w.limit, w.period_ms]


def _window_of(raw: Any) -> Window | None:
    return None if raw is None else Window(limit=raw[0], period_ms=raw[1])


@attrs.frozen
class Decision:
    """Whether one start was admitted; if not, which limit refused it and when it may pass
    (``retry_ms``: ``None`` when that depends on another job finishing)."""

    admitted: bool
    strategy: str | None = None
    limit: int | None = None
    current: int | None = None
    retry_ms: int | None = None


ADMITTED = Decision(True)


@attrs.frozen
class _Limits:
    concurrency: int | None
    rate: Window | None
    throttle: Window | None


def _effective(state: KeyState, now_ms: int) -> _Limits:
    o = state.override
    if o is not None and o.live(now_ms):
        return _Limits(
            state.concurrency if o.concurrency is None else o.concurrency,
            o.rate or state.rate,
            o.throttle or state.throttle,
        )
    return _Limits(state.concurrency, state.rate, state.throttle)


def _roll(state: KeyState, w: Window, now_ms: int) -> KeyState:
    """The state with its rate counters moved to ``now_ms``."""
    if w.limit <= EXACT_LOG_LIMIT:
        horizon = now_ms - w.period_ms
        if state.starts and state.starts[0] <= horizon:
            return attrs.evolve(state, starts=tuple(s for s in state.starts if s > horizon))
        return state
    start = now_ms - now_ms % w.period_ms
    if start == state.window_ms:
        return state
    previous = state.count if start - state.window_ms == w.period_ms else 0
    return attrs.evolve(state, window_ms=start, count=0, previous=previous, starts=())


def _rate_used(state: KeyState, w: Window, now_ms: int) -> int:
    if w.limit <= EXACT_LOG_LIMIT:
        return len(state.starts)
    covered = w.period_ms - (now_ms - state.window_ms)
    return state.previous * covered // w.period_ms + state.count


def _rate_retry(state: KeyState, w: Window, now_ms: int) -> int:
    if w.limit <= EXACT_LOG_LIMIT and state.starts:
        return state.starts[max(0, len(state.starts) - w.limit)] + w.period_ms
    return now_ms + max(1, w.period_ms // w.limit)


def _refusal(state: KeyState, limits: _Limits, now_ms: int) -> Decision | None:
    if state.hold_until_ms is not None and now_ms < state.hold_until_ms:
        return Decision(False, "dynamic", None, None, state.hold_until_ms)
    if limits.concurrency is not None and len(state.holders) >= limits.concurrency:
        return Decision(False, "concurrency", limits.concurrency, len(state.holders))
    if limits.rate is not None:
        used = _rate_used(state, limits.rate, now_ms)
        if used >= limits.rate.limit:
            retry = _rate_retry(state, limits.rate, now_ms)
            return Decision(False, "rate", limits.rate.limit, used, retry)
    t = limits.throttle
    if t is not None and state.last_start_ms is not None:
        next_ms = state.last_start_ms + max(1, t.period_ms // t.limit)
        if now_ms < next_ms:
            return Decision(False, "throttle", t.limit, 1, next_ms)
    return None


def admit(
    state: KeyState | None,
    key: str,
    requests: Sequence[tuple[RateLimit, str, int]],
    now_ms: int,
    touch: Collection[str] = (),
) -> tuple[KeyState, list[Decision]]:
    """Admit or refuse starts of one key, in order: each request is ``(policy, job id,
    attempt)``. A job that already holds the key in that attempt is admitted again without
    counting twice; if it is in ``touch`` (a job that counts against several keys), its
    holder is stamped anew, so that a :func:`release_exact` by the admission that created
    the holder (and then saw another key refuse the job) leaves it to this one. Returns the
    new state and a decision per request."""
    st = state or KeyState(key=key)
    decisions: list[Decision] = []
    for policy, job_id, attempt in requests:
        st = attrs.evolve(
            st, concurrency=policy.concurrency, rate=policy.rate, throttle=policy.throttle
        )
        held = st.holders.get(job_id)
        if held is not None and held[0] == attempt:
            if job_id in touch:
                stamp = (attempt, max(now_ms, held[1] + 1))
                st = attrs.evolve(st, holders={**st.holders, job_id: stamp})
            decisions.append(ADMITTED)
            continue
        limits = _effective(st, now_ms)
        if limits.rate is not None:
            st = _roll(st, limits.rate, now_ms)
        refused = _refusal(st, limits, now_ms)
        if refused is not None:
            decisions.append(refused)
            continue
        changes: dict[str, Any] = {}
        if limits.concurrency is not None:
            changes["holders"] = {**st.holders, job_id: (attempt, now_ms)}
        if limits.rate is not None:
            if limits.rate.limit <= EXACT_LOG_LIMIT:
                changes["starts"] = (*st.starts, now_ms)
            else:
                changes["count"] = st.count + 1
        if limits.throttle is not None:
            changes["last_start_ms"] = now_ms
        st = attrs.evolve(st, **changes)
        decisions.append(ADMITTED)
    if st.hold_until_ms is not None and now_ms >= st.hold_until_ms:
        st = attrs.evolve(st, hold_until_ms=None, hold_reason=None)
    if st.override is not None and not st.override.live(now_ms):
        st = attrs.evolve(st, override=None)
    if state is not None and st == state:
        return state, decisions  # unchanged: the store writes nothing (a refused poll)
    return st, decisions


def release(state: KeyState | None, job_ids: Sequence[str]) -> KeyState | None:
    """The state with ``job_ids`` no longer holding the key (``state`` itself: no change)."""
    if state is None or not any(j in state.holders for j in job_ids):
        return state
    return attrs.evolve(state, holders={k: v for k, v in state.holders.items() if k not in job_ids})


def release_attempts(state: KeyState | None, attempts: Mapping[str, int]) -> KeyState | None:
    """The state without the holders of ``attempts`` (job id -> the attempt that left
    ``active``) whose slot that very attempt holds (``state`` itself: no change).

    A job's holder is keyed by its id only, so a later attempt of the job admitted since (a
    visibility timeout, then a claim on another replica before this release) overwrote it:
    that holder is the later attempt's, and a late release of the earlier one keeps it."""
    if state is None or not any(
        (held := state.holders.get(k)) is not None and held[0] == a for k, a in attempts.items()
    ):
        return state
    return attrs.evolve(
        state,
        holders={k: v for k, v in state.holders.items() if attempts.get(k) != v[0]},
    )


def release_exact(
    state: KeyState | None, expected: Mapping[str, tuple[int, int]]
) -> KeyState | None:
    """The state without the holders whose value is still exactly the one ``expected`` names
    (attempt and admission time): a holder stamped anew since (another admission of the same
    job relies on it) is kept."""
    if state is None:
        return None
    kept = {k: v for k, v in state.holders.items() if expected.get(k) != v}
    return state if len(kept) == len(state.holders) else attrs.evolve(state, holders=kept)


def stale_holders(state: KeyState, live: Mapping[str, int], now_ms: int) -> list[str]:
    """Holders admitted over :data:`REPAIR_GRACE_MS` ago whose job is not ``active`` in the
    attempt that holds the slot (``live``: job id -> attempt of the jobs that are active)."""
    horizon = now_ms - REPAIR_GRACE_MS
    return [
        k
        for k, (attempt, since) in state.holders.items()
        if since < horizon and live.get(k) != attempt
    ]


def repair(state: KeyState | None, live: Mapping[str, int], now_ms: int) -> KeyState | None:
    """The state without its :func:`stale_holders`."""
    if state is None:
        return None
    stale = set(stale_holders(state, live, now_ms))
    kept = {k: v for k, v in state.holders.items() if k not in stale}
    return state if len(kept) == len(state.holders) else attrs.evolve(state, holders=kept)


def hold(state: KeyState | None, key: str, until_ms: int, reason: str | None) -> KeyState:
    """No start of ``key`` before ``until_ms`` (a later hold extends, an earlier one does not
    shorten it)."""
    st = state or KeyState(key=key)
    if st.hold_until_ms is not None and st.hold_until_ms >= until_ms:
        return st
    return attrs.evolve(st, hold_until_ms=until_ms, hold_reason=reason)


def _window_view(w: Window) -> dict[str, Any]:
    return {"limit": w.limit, "period": format_duration(w.period_ms)}


def view(state: KeyState, now_ms: int, waiting: int | None = None) -> dict[str, Any]:
    """The extension's ``GET /ojs/v1/rate-limits/{key}`` shape (§10.1) of ``state``."""
    limits = _effective(state, now_ms)
    out: dict[str, Any] = {"key": state.key}
    if limits.concurrency is not None:
        active = len(state.holders)
        out["concurrency"] = {
            "limit": limits.concurrency,
            "active": active,
            "available": max(0, limits.concurrency - active),
        }
    if limits.rate is not None:
        rolled = _roll(state, limits.rate, now_ms)
        rate = _window_view(limits.rate)
        rate["current_count"] = _rate_used(rolled, limits.rate, now_ms)
        if limits.rate.limit <= EXACT_LOG_LIMIT:
            resets = rolled.starts[0] + limits.rate.period_ms if rolled.starts else now_ms
        else:
            resets = rolled.window_ms + limits.rate.period_ms
        rate["window_resets_at"] = format_ts(from_epoch_ms(resets))
        out["rate"] = rate
    if limits.throttle is not None:
        t = limits.throttle
        throttle = _window_view(t)
        next_ms = (
            now_ms
            if state.last_start_ms is None
            else max(now_ms, state.last_start_ms + max(1, t.period_ms // t.limit))
        )
        throttle["next_allowed_at"] = format_ts(from_epoch_ms(next_ms))
        out["throttle"] = throttle
    o = state.override
    if o is not None and o.live(now_ms):
        out["override"] = {
            "concurrency": o.concurrency,
            "rate": None if o.rate is None else _window_view(o.rate),
            "throttle": None if o.throttle is None else _window_view(o.throttle),
            "expires_at": None if o.expires_ms is None else format_ts(from_epoch_ms(o.expires_ms)),
        }
    if state.hold_until_ms is not None and now_ms < state.hold_until_ms:
        out["held_until"] = format_ts(from_epoch_ms(state.hold_until_ms))
        out["held_reason"] = state.hold_reason
    if waiting is not None:
        out["waiting_count"] = waiting
    return out
