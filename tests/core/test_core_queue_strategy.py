"""The strategies across the queues of one fetch (``ojs_core.queue_strategy``): pure
rotations, with the weighted proportions checked as properties."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core.errors import ValidationError
from ojs_core.queue_strategy import (
    MAX_ROTATION_MS,
    QueuePlan,
    Rotation,
    Starvation,
    fetch_plan,
    parse_starvation,
)

Q = ("critical", "default", "low")


def _serve(
    rotation: Rotation, turns: int, now_ms: int = 0, empty: frozenset[str] = frozenset()
) -> list[str]:
    """``turns`` single-job fetches where every queue but ``empty`` has jobs."""
    out: list[str] = []
    for _ in range(turns):
        (pick,) = rotation.picks(1, now_ms)
        served = next(q for q in rotation.order(pick) if q not in empty)
        rotation.settle([pick], {served: 1}, now_ms)
        out.append(served)
    return out


def test_strict_is_list_order() -> None:
    r = Rotation(QueuePlan("strict"), Q, 0)
    assert _serve(r, 3) == ["critical"] * 3
    assert _serve(r, 2, empty=frozenset({"critical"})) == ["default"] * 2


def test_round_robin_cycles_and_skips_empty_queues() -> None:
    r = Rotation(QueuePlan("round-robin"), Q, 0)
    assert _serve(r, 6) == ["critical", "default", "low"] * 2
    # An empty queue's turn goes to the next one (§7.1).
    assert _serve(r, 3, empty=frozenset({"default"})) == ["critical", "low", "low"]


def test_weighted_follows_the_example() -> None:
    plan = QueuePlan("weighted", (("critical", 5), ("default", 3), ("low", 1)))
    r = Rotation(plan, Q, 0)
    got = Counter(_serve(r, 9))
    assert got == {"critical": 5, "default": 3, "low": 1}


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=1, max_value=20), min_size=2, max_size=6),
    cycles=st.integers(min_value=1, max_value=5),
)
def test_weighted_proportions_are_exact_per_cycle(weights: list[int], cycles: int) -> None:
    """Over any whole number of cycles of ``sum(weights)`` turns, each queue is served
    exactly its weight per cycle (smooth weighted round-robin)."""
    queues = tuple(f"q{i}" for i in range(len(weights)))
    plan = QueuePlan("weighted", tuple(zip(queues, weights, strict=True)))
    r = Rotation(plan, queues, 0)
    got = Counter(r.picks(sum(weights) * cycles, 0))
    assert got == {q: w * cycles for q, w in zip(queues, weights, strict=True)}


@settings(max_examples=100, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=1, max_value=10), min_size=2, max_size=5),
    turns=st.integers(min_value=1, max_value=200),
)
def test_weighted_never_strays_far_from_its_share(weights: list[int], turns: int) -> None:
    """At any prefix, a queue's dispatches stay within one turn per queue of its share, and a
    queue with weight > 0 is served within one cycle (§7.3: bounded time)."""
    queues = tuple(f"q{i}" for i in range(len(weights)))
    plan = QueuePlan("weighted", tuple(zip(queues, weights, strict=True)))
    picks = Rotation(plan, queues, 0).picks(turns, 0)
    total = sum(weights)
    got = Counter(picks)
    for q, w in zip(queues, weights, strict=True):
        assert abs(got[q] - turns * w / total) <= len(queues)
        if turns >= total:
            assert q in picks[:total]


def test_weighted_picks_in_one_fetch_are_served_in_proportion() -> None:
    plan = QueuePlan("weighted", (("a", 2), ("b", 1)))
    r = Rotation(plan, ("a", "b"), 0)
    assert Counter(r.picks(6, 0)) == {"a": 4, "b": 2}


def test_least_loaded_serves_the_deepest_queue() -> None:
    r = Rotation(QueuePlan("least-loaded"), Q, 0)
    assert r.picks(1, 0, {"critical": 1, "default": 7, "low": 3}) == ["default"]
    # Within a fetch, the depths go down as turns are handed out.
    assert Counter(r.picks(4, 0, {"critical": 0, "default": 3, "low": 3})) == {
        "default": 2,
        "low": 2,
    }


def test_starvation_rotation_serves_a_waiting_queue() -> None:
    sp = Starvation(enabled=True, rotation_ms=30_000, min_ratio=0.0)
    r = Rotation(QueuePlan("strict", starvation=sp), Q, 0)
    assert _serve(r, 5, now_ms=1000) == ["critical"] * 5
    # 30 s later, the two queues that waited that long are served first, longest first.
    (pick,) = r.picks(1, 31_000)
    assert pick == "default"
    assert r.settle([pick], {"default": 1}, 31_000) == [("default", 31_000)]
    assert _serve(r, 2, now_ms=31_001) == ["low", "critical"]


def test_min_dispatch_ratio_holds_over_the_window() -> None:
    sp = Starvation(enabled=True, rotation_ms=60_000, min_ratio=0.1)
    r = Rotation(QueuePlan("strict", starvation=sp), Q, 0)
    got = Counter(_serve(r, 100, now_ms=1))
    assert got["default"] >= 10
    assert got["low"] >= 10
    assert got["critical"] >= 80


def test_min_dispatch_ratio_with_weights() -> None:
    sp = Starvation(enabled=True, rotation_ms=60_000, min_ratio=0.2)
    plan = QueuePlan("weighted", (("critical", 100), ("default", 1), ("low", 1)), sp)
    got = Counter(_serve(Rotation(plan, Q, 0), 100, now_ms=1))
    assert got["default"] >= 20
    assert got["low"] >= 20


def test_an_empty_queue_is_not_forced_at_every_fetch() -> None:
    sp = Starvation(enabled=True, rotation_ms=1000, min_ratio=0.5)
    r = Rotation(QueuePlan("strict", starvation=sp), ("a", "b"), 0)
    picks = []
    for _ in range(4):
        (pick,) = r.picks(1, 10)
        picks.append(pick)
        r.settle([pick], {"a": 1}, 10)  # b never has a job
    assert picks.count("b") == 1


def test_window_forgets_old_dispatches() -> None:
    sp = Starvation(enabled=True, rotation_ms=1000, min_ratio=0.5)
    r = Rotation(QueuePlan("strict", starvation=sp), ("a", "b"), 0)
    _serve(r, 10, now_ms=1)
    # Much later the window is empty again: the first turn is list order.
    assert r.picks(1, 5_000)[0] in ("a", "b")


def test_fetch_plan_parsing() -> None:
    assert fetch_plan({"queues": ["a"]}) is None
    assert fetch_plan({"weights": {"a": 2}}) == QueuePlan("weighted", (("a", 2),))
    assert fetch_plan({"strategy": "round-robin"}) == QueuePlan("round-robin")
    with pytest.raises(ValidationError) as e:
        fetch_plan({"strategy": "random"})
    assert e.value.path == "strategy"
    with pytest.raises(ValidationError) as e:
        fetch_plan({"strategy": "weighted", "weights": {"a": 0}})
    assert e.value.path == "weights.a"
    with pytest.raises(ValidationError) as e:
        fetch_plan({"weights": ["a"]})
    assert e.value.path == "weights"


def test_fetch_weights_are_bounded_by_the_fetch_queues() -> None:
    """Weights may only name the fetch's queues (so at most ``max_fetch_queues`` of them),
    and are looked up by queue, not scanned."""
    assert fetch_plan({"weights": {"a": 2}}, ["a", "b"]) == QueuePlan("weighted", (("a", 2),))
    with pytest.raises(ValidationError) as e:
        fetch_plan({"weights": {"a": 2, "zz": 1}}, ["a", "b"])
    assert e.value.path == "weights.zz"
    with pytest.raises(ValidationError) as e:
        fetch_plan({"weights": {"a": 2}}, [])
    assert e.value.path == "weights.a"
    plan = QueuePlan("weighted", (("a", 2), ("b", 7)))
    assert (plan.weight("a"), plan.weight("b"), plan.weight("c")) == (2, 7, 1)
    assert plan.weight_of == {"a": 2, "b": 7}
    assert hash(plan) == hash(QueuePlan("weighted", (("a", 2), ("b", 7))))


def test_rotation_interval_is_at_most_an_hour() -> None:
    sp = parse_starvation({"enabled": True, "rotation_interval": "PT1H"}, "s")
    assert sp is not None
    assert sp.rotation_ms == MAX_ROTATION_MS == 3_600_000
    with pytest.raises(ValidationError) as e:
        parse_starvation({"enabled": True, "rotation_interval": "PT1H0.001S"}, "s")
    assert e.value.path == "s.rotation_interval"
    # A definition stored before the bound still loads, at the bound.
    stored = parse_starvation({"enabled": True, "rotation_interval": "P1D"}, "s", stored=True)
    assert stored is not None
    assert stored.rotation_ms == MAX_ROTATION_MS


def test_starvation_parsing() -> None:
    assert parse_starvation(None, "s") is None
    sp = parse_starvation({"enabled": True, "rotation_interval": "PT10S"}, "s")
    assert sp == Starvation(True, 10_000, 0.05)
    assert sp.to_wire() == {
        "enabled": True,
        "rotation_interval": "PT10S",
        "min_dispatch_ratio": 0.05,
    }
    for bad, path in (
        ({"enabled": "yes"}, "s.enabled"),
        ({"rotation_interval": "soon"}, "s.rotation_interval"),
        ({"rotation_interval": "PT0S"}, "s.rotation_interval"),
        ({"min_dispatch_ratio": 1.5}, "s.min_dispatch_ratio"),
        ({"min_dispatch_ratio": True}, "s.min_dispatch_ratio"),
    ):
        with pytest.raises(ValidationError) as e:
            parse_starvation(bad, "s")
        assert e.value.path == path
