"""Fair dispatch across tenants on a shared queue (per-tenant fairness of the fair-scheduling
extension, §9, and multi-tenancy §7.1-7.2).

A queue's ``available`` jobs are kept by the backend in *shards*, one per tenant (the shard
``""`` holds the jobs without ``meta.tenant_id``: the default tenant's). A fetch that may take
jobs of several tenants asks a :class:`Dispatch` which shards to serve, *within* a priority
level (fair-scheduling §9.3: a higher priority is always served first). The order is smooth
weighted round-robin: every turn, each shard with jobs gains its weight in credit, the shard
with the most credit is served and pays the total of the weights. With equal weights this is
plain round-robin; with weights 2 and 1 the turns go A, B, A, A, B, A, ... A shard found empty
loses its credit (an idle tenant does not bank turns). The credit is kept per process: each
replica's fetches are fair on their own, so their sum is too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Dispatch", "FairShare", "Level"]

#: (queue, priority): the credit of shards is kept per level.
Level = tuple[str, int]


class FairShare:
    """The per-process credit of every shard of every level (one per service)."""

    def __init__(self, weight: Callable[[str], float]) -> None:
        #: The weight of a shard (its tenant's ``fairness_weight``); at least a small positive.
        self.weight = weight
        self._credit: dict[Level, dict[str, float]] = {}

    def grants(self, level: Level, shards: Sequence[str], count: int) -> list[tuple[str, int]]:
        """How many of ``count`` jobs to take from each shard of ``level``, in the order
        they are served (a shard appears once, with its total)."""
        if not shards or count <= 0:
            return []
        if len(shards) == 1:
            return [(shards[0], count)]
        credit = self._credit.setdefault(level, {})
        weights = {s: max(1e-6, float(self.weight(s))) for s in shards}
        total = sum(weights.values())
        out: dict[str, int] = {}
        for _ in range(count):
            best = ""
            best_credit = -float("inf")
            for shard in shards:
                c = credit.get(shard, 0.0) + weights[shard]
                credit[shard] = c
                if c > best_credit:
                    best, best_credit = shard, c
            credit[best] -= total
            out[best] = out.get(best, 0) + 1
        return list(out.items())

    def idle(self, level: Level, shard: str) -> None:
        """``shard`` had no job when served: it loses its credit."""
        credit = self._credit.get(level)
        if credit is not None:
            credit.pop(shard, None)

    def forget(self) -> None:
        """Drop every credit (a reset)."""
        self._credit.clear()


class Dispatch:
    """What one fetch may take and in which order: the ``dispatch`` attribute of the
    ``activate`` function given to :meth:`~ojs_core.backend.Backend.claim_jobs`.

    ``scope`` is the set of shards the fetch may take from (``None``: every shard; a
    request with ``X-OJS-Tenant`` only its tenant's)."""

    __slots__ = ("fair", "scope")

    def __init__(self, fair: FairShare, scope: frozenset[str] | None = None) -> None:
        self.fair = fair
        self.scope = scope

    def allows(self, shard: str) -> bool:
        """Whether the fetch may take jobs of ``shard``."""
        return self.scope is None or shard in self.scope

    def shards(self, present: Any) -> list[str]:
        """The shards of ``present`` (an iterable of shard names) this fetch may take from,
        in a stable order."""
        if self.scope is None:
            return sorted(present)
        return sorted(s for s in present if s in self.scope)

    def grants(self, level: Level, shards: Sequence[str], count: int) -> list[tuple[str, int]]:
        """See :meth:`FairShare.grants`."""
        return self.fair.grants(level, shards, count)

    def idle(self, level: Level, shard: str) -> None:
        """See :meth:`FairShare.idle`."""
        self.fair.idle(level, shard)
