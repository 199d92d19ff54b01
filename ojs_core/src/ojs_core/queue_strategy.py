"""Which queue a multi-queue fetch serves (fair-scheduling extension §5.2, §7 and §8).

A :class:`QueuePlan` names a strategy (``strict``, ``round-robin``, ``weighted`` or
``least-loaded``), the weights of the ``weighted`` one and the starvation prevention. A
:class:`Rotation` is the per-process state of one plan over one list of queues: the
round-robin position, the weighted credit and the recent dispatches the starvation
prevention looks at. It answers :meth:`Rotation.picks`: for the next ``count`` dispatches,
which queue should serve each. The caller claims from those queues (falling back to the
others when one is empty, §7.1: "skip it and move to the next") and reports what was served
with :meth:`Rotation.settle`.

The state is per process, on purpose: which queue is served *first* is a matter of
fairness, not of correctness. Every claim is still the backend's atomic claim (at most once,
FS-001), so two replicas rotating independently can only make the sum of their dispatches
slightly less even, never hand a job out twice.

Weighted is *smooth* weighted round-robin: each turn every queue gains its weight in credit,
the queue with the most credit is served and pays the sum of the weights; a queue found empty
loses its credit (an idle queue does not bank turns). Over any ``sum(weights)`` consecutive
turns where every queue has jobs, each queue is served exactly its weight.

Starvation prevention (§8), when enabled, runs before the strategy: a queue that got no
dispatch for ``rotation_interval`` is served first (§8.1), and so is a queue whose share of the
dispatches within the last ``rotation_interval`` would fall below ``min_dispatch_ratio`` (§8.2:
it is served when ``count_q < ceil(ratio * (total + 1))``, so a queue with jobs keeps at least
that share of the window's dispatches, the first few of a window going round the queues; one
queue is forced per dispatch, so ratios that add up to more than 1 degrade to rotation). A
queue found empty is not forced again for a second (or the rotation interval, if shorter):
an empty queue cannot be starved, and forcing it would only cost a look at every fetch. The
rotation interval is at most an hour (:data:`MAX_ROTATION_MS`).

A fetch's plan comes from its body (worker role), so what it may carry is bounded: weights
only of the fetch's own queues (:func:`fetch_plan`, as a pool's), so at most
``max_fetch_queues`` of them, looked up through a mapping (:attr:`QueuePlan.weight_of`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from .errors import ValidationError
from .timeutil import format_duration, parse_duration_ms

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_ROTATION_MS",
    "STRATEGIES",
    "QueuePlan",
    "Rotation",
    "Starvation",
    "check_weights",
    "fetch_plan",
    "parse_starvation",
    "parse_strategy",
    "parse_weights",
]

STRATEGIES = ("strict", "round-robin", "weighted", "least-loaded")
#: A fetch that names no strategy and no pool: list order, as before the extension (the core
#: specification and the conformance suite expect the queues of a fetch served left to right).
DEFAULT_STRATEGY = "strict"
#: A weight is a positive integer (§6.1), at most this.
MAX_WEIGHT = 1_000_000
#: ``rotation_interval`` (starvation prevention), at most: an hour.
MAX_ROTATION_MS = 3_600_000
#: Dispatches remembered per rotation for the starvation window, at most.
_MAX_WINDOW = 100_000
#: A queue found empty is not forced again for this long (or the rotation interval).
_EMPTY_BACKOFF_MS = 1000


@attrs.frozen
class Starvation:
    """Starvation prevention (§8.1): ``rotation_ms`` is ``rotation_interval``."""

    enabled: bool = False
    rotation_ms: int = 30_000
    min_ratio: float = 0.05

    def to_wire(self) -> dict[str, Any]:
        """The §8.1 object."""
        return {
            "enabled": self.enabled,
            "rotation_interval": format_duration(self.rotation_ms),
            "min_dispatch_ratio": self.min_ratio,
        }


@attrs.frozen
class QueuePlan:
    """How one fetch chooses among its queues."""

    strategy: str = DEFAULT_STRATEGY
    #: Weights of the ``weighted`` strategy, ``(queue, weight)`` pairs (hashable: the plan is
    #: part of a rotation's key).
    weights: tuple[tuple[str, int], ...] = ()
    starvation: Starvation | None = None
    #: ``weights`` as a mapping, for lookups (derived: not compared, hashed or shown).
    weight_of: Mapping[str, int] = attrs.field(
        init=False, eq=False, hash=False, repr=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "weight_of", dict(self.weights))

    def weight(self, queue: str) -> int:
        """The queue's weight (1 when not given)."""
        return self.weight_of.get(queue, 1)

    @property
    def trivial(self) -> bool:
        """Whether the plan is today's list order with nothing to track."""
        return self.strategy == "strict" and (
            self.starvation is None or not self.starvation.enabled
        )


def parse_strategy(value: Any, path: str) -> str:
    """A strategy name, or a 400 naming ``path``."""
    if value not in STRATEGIES:
        raise ValidationError(f"must be one of {', '.join(STRATEGIES)}", path=path)
    assert isinstance(value, str)
    return value


def parse_weights(
    value: Any, path: str, queues: Collection[str] | None = None
) -> tuple[tuple[str, int], ...]:
    """``{queue: positive integer}`` as sorted pairs, or a 400 naming the bad entry.

    ``queues``: the queues the weights may name (a fetch's or a pool's); a key outside them is
    400 at ``<path>.<key>``, found before the rest is looked at, so the entries kept are at
    most as many as those queues."""
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object of queue names to positive integers", path=path)
    out: list[tuple[str, int]] = []
    for queue, weight in value.items():
        if not isinstance(queue, str) or not queue:
            raise ValidationError("keys must be queue names", path=path)
        if queues is not None and queue not in queues:
            raise ValidationError(
                "names a queue the fetch or pool does not list", path=f"{path}.{queue}"
            )
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= MAX_WEIGHT:
            raise ValidationError(
                f"must be an integer from 1 to {MAX_WEIGHT}", path=f"{path}.{queue}"
            )
        out.append((queue, weight))
    return tuple(sorted(out))


def check_weights(plan: QueuePlan | None, queues: Sequence[str], path: str = "weights") -> None:
    """A 400 at ``<path>.<queue>`` when ``plan`` weighs a queue not among ``queues`` (a
    fetch's plan built in process, which :func:`fetch_plan` did not check)."""
    if plan is None or not plan.weights:
        return
    listed = frozenset(queues)
    for queue, _ in plan.weights:
        if queue not in listed:
            raise ValidationError(
                "names a queue the fetch or pool does not list", path=f"{path}.{queue}"
            )


def parse_starvation(value: Any, path: str, *, stored: bool = False) -> Starvation | None:
    """The §8.1 object (``null``: none), or a 400 naming the bad field.

    ``rotation_interval`` is at most :data:`MAX_ROTATION_MS`; ``stored`` (a definition read
    back from a store, perhaps written before that bound) caps a longer one instead."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object", path=path)
    enabled = value.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ValidationError("must be a boolean", path=f"{path}.enabled")
    interval = value.get("rotation_interval", "PT30S")
    try:
        rotation_ms = parse_duration_ms(interval) if isinstance(interval, str) else -1
    except (ValueError, ValidationError):
        rotation_ms = -1
    if rotation_ms < 1:
        raise ValidationError(
            "must be a positive ISO 8601 duration", path=f"{path}.rotation_interval"
        )
    if rotation_ms > MAX_ROTATION_MS:
        if not stored:
            raise ValidationError(
                f"must be at most {format_duration(MAX_ROTATION_MS)}",
                path=f"{path}.rotation_interval",
            )
        rotation_ms = MAX_ROTATION_MS
    ratio = value.get("min_dispatch_ratio", 0.05)
    if (
        not isinstance(ratio, int | float)
        or isinstance(ratio, bool)
        or not math.isfinite(ratio)
        or not 0.0 <= ratio <= 1.0
    ):
        raise ValidationError("must be a number from 0 to 1", path=f"{path}.min_dispatch_ratio")
    return Starvation(enabled=enabled, rotation_ms=rotation_ms, min_ratio=float(ratio))


def fetch_plan(body: Mapping[str, Any], queues: Sequence[str] | None = None) -> QueuePlan | None:
    """The plan a fetch body asks for (§5.2: ``strategy``, ``weights``, and
    ``starvation_prevention``), ``None`` when it names none. Server-side configuration (a
    worker's pool) takes precedence over it.

    ``queues``: the fetch's queues, the only ones ``weights`` may name (400 at
    ``weights.<key>`` otherwise; a fetch of a pool that names no queue may carry none)."""
    strategy = body.get("strategy")
    weights = body.get("weights")
    starvation = body.get("starvation_prevention")
    if strategy is None and weights is None and starvation is None:
        return None
    return QueuePlan(
        strategy=DEFAULT_STRATEGY
        if strategy is None and weights is None
        else parse_strategy("weighted" if strategy is None else strategy, "strategy"),
        weights=()
        if weights is None
        else parse_weights(weights, "weights", None if queues is None else frozenset(queues)),
        starvation=parse_starvation(starvation, "starvation_prevention"),
    )


class Rotation:
    """The per-process state of one plan over one list of queues (see the module docstring)."""

    def __init__(self, plan: QueuePlan, queues: Sequence[str], now_ms: int) -> None:
        self.plan = plan
        self.queues = tuple(queues)
        #: Each queue's weight, in queue order (``weighted``).
        self._weights = tuple(plan.weight(q) for q in self.queues)
        self._next = 0
        self._credit: dict[str, float] = {}
        #: (time, queue) of the dispatches within the rotation interval (starvation only).
        self._window: deque[tuple[int, str]] = deque()
        self._counts: dict[str, int] = {}
        #: The last dispatch of each queue (the rotation's start for one never served).
        self._last: dict[str, int] = dict.fromkeys(self.queues, now_ms)
        self._empty_until: dict[str, int] = {}

    # -- choosing -----------------------------------------------------------------------

    def picks(self, count: int, now_ms: int, depth: Mapping[str, int] | None = None) -> list[str]:
        """The queue that should serve each of the next ``count`` dispatches, in order
        (assuming each has a job). ``depth`` (``least-loaded``): available jobs per queue."""
        queues = self.queues
        if count <= 0 or not queues:
            return []
        self._trim(now_ms)
        sim_counts = dict(self._counts)
        sim_total = len(self._window)
        sim_last = dict(self._last)
        sim_depth = dict(depth or {})
        out: list[str] = []
        for _ in range(count):
            queue = self._forced(now_ms, sim_counts, sim_total, sim_last)
            if queue is None:
                queue = self._strategy_pick(sim_depth)
            elif self.plan.strategy == "weighted":
                self._credit.pop(queue, None)  # a forced turn is not paid for with credit
            out.append(queue)
            sim_counts[queue] = sim_counts.get(queue, 0) + 1
            sim_total += 1
            sim_last[queue] = now_ms
            if queue in sim_depth:
                sim_depth[queue] -= 1
        return out

    def order(self, first: str) -> list[str]:
        """Every queue, ``first`` first, then the others in the strategy's order: where a
        fetch goes on when ``first`` has no job."""
        rest = [q for q in self.queues if q != first]
        if self.plan.strategy == "round-robin":
            i = self.queues.index(first) if first in self.queues else -1
            rest = [self.queues[(i + k) % len(self.queues)] for k in range(1, len(self.queues))]
        elif self.plan.strategy == "weighted":
            rest.sort(key=lambda q: -self.plan.weight(q))
        return [first, *rest]

    def _strategy_pick(self, depth: dict[str, int]) -> str:
        queues = self.queues
        strategy = self.plan.strategy
        if strategy == "round-robin":
            queue = queues[self._next % len(queues)]
            self._next = (self._next + 1) % len(queues)
            return queue
        if strategy == "weighted":
            credit = self._credit
            total = 0
            best, best_credit = queues[0], -math.inf
            for q, w in zip(queues, self._weights, strict=True):
                total += w
                c = credit[q] = credit.get(q, 0.0) + w
                if c > best_credit:
                    best, best_credit = q, c
            credit[best] -= total
            return best
        if strategy == "least-loaded":
            # §7.2: among the eligible queues, the one with the deepest backlog (list order
            # breaks ties, so an all-empty view degrades to strict).
            return max(queues, key=lambda q: (depth.get(q, 0), -queues.index(q)))
        return queues[0]

    def _forced(
        self, now_ms: int, counts: Mapping[str, int], total: int, last: Mapping[str, int]
    ) -> str | None:
        sp = self.plan.starvation
        if sp is None or not sp.enabled or len(self.queues) < 2:
            return None
        eligible = [q for q in self.queues if self._empty_until.get(q, 0) <= now_ms]
        # §8.1 rotation: the queue waiting longest past the interval.
        waited = [(now_ms - last[q], q) for q in eligible if now_ms - last[q] >= sp.rotation_ms]
        if waited:
            return max(waited, key=lambda t: (t[0], -self.queues.index(t[1])))[1]
        # §8.2 minimum share: the most under-served queue whose share would fall short.
        # ceil: the share must hold after this dispatch too (the epsilon absorbs float error,
        # 0.1 * 30 being 3.0000000000000004).
        share = math.ceil(sp.min_ratio * (total + 1) - 1e-9)
        short = [q for q in eligible if counts.get(q, 0) < share]
        if short:
            return min(short, key=lambda q: (counts.get(q, 0), self.queues.index(q)))
        return None

    # -- learning -----------------------------------------------------------------------

    def settle(
        self, picked: Sequence[str], served: Mapping[str, int], now_ms: int
    ) -> list[tuple[str, int]]:
        """Record what a fetch served (queue -> jobs); ``picked`` is what :meth:`picks`
        asked for. The queues served after going ``rotation_interval`` without a dispatch,
        with how long they waited (``scheduling.queue_starved``)."""
        starved: list[tuple[str, int]] = []
        sp = self.plan.starvation
        tracking = sp is not None and sp.enabled
        for queue, n in served.items():
            if n <= 0:
                continue
            waited = now_ms - self._last.get(queue, now_ms)
            if tracking and sp is not None and waited >= sp.rotation_ms:
                starved.append((queue, waited))
            self._last[queue] = now_ms
            self._empty_until.pop(queue, None)
            if tracking:
                for _ in range(min(n, _MAX_WINDOW)):
                    self._window.append((now_ms, queue))
                self._counts[queue] = self._counts.get(queue, 0) + n
        wanted: dict[str, int] = {}
        for queue in picked:
            wanted[queue] = wanted.get(queue, 0) + 1
        backoff = _EMPTY_BACKOFF_MS if sp is None else min(_EMPTY_BACKOFF_MS, sp.rotation_ms)
        for queue, n in wanted.items():
            if served.get(queue, 0) < n:
                # It had fewer jobs than its turns: empty for now. It loses its credit and
                # is not forced again for a moment.
                self._credit.pop(queue, None)
                self._empty_until[queue] = now_ms + backoff
                if served.get(queue, 0) == 0:
                    # Looked at and empty, so not starved: its rotation interval restarts.
                    self._last[queue] = now_ms
        if tracking:
            self._trim(now_ms)
        return starved

    def _trim(self, now_ms: int) -> None:
        sp = self.plan.starvation
        if sp is None:
            return
        horizon = now_ms - sp.rotation_ms
        window = self._window
        while window and (window[0][0] <= horizon or len(window) > _MAX_WINDOW):
            _, queue = window.popleft()
            left = self._counts[queue] - 1
            if left:
                self._counts[queue] = left
            else:
                del self._counts[queue]
