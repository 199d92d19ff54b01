"""The rate-limiting extension's rules (``ojs_core.rate_limit_rules``): properties over random
sequences of starts and releases, and the documented edges."""

from __future__ import annotations

import itertools

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core.model import RateLimit, Window
from ojs_core.rate_limit_rules import (
    EXACT_LOG_LIMIT,
    REPAIR_GRACE_MS,
    KeyState,
    Override,
    admit,
    hold,
    release,
    release_attempts,
    release_exact,
    repair,
    view,
)

SETTINGS = settings(max_examples=200, deadline=None)

# A step: (ms since the previous step, "start" a new job or "release" the oldest holder).
steps = st.lists(
    st.tuples(st.integers(0, 400), st.sampled_from(["start", "start", "release"])),
    max_size=80,
)


def _run(policy: RateLimit, plan: list[tuple[int, str]]) -> tuple[list[int], int]:
    """Apply ``plan``; the admitted start times and the most holders seen at once."""
    state: KeyState | None = None
    now, n, peak = 1_000_000, 0, 0
    started: list[int] = []
    for gap, action in plan:
        now += gap
        if action == "release" and state is not None and state.holders:
            state = release(state, [next(iter(state.holders))])
            continue
        n += 1
        state, (decision,) = admit(state, "k", [(policy, f"j{n}", 1)], now)
        if decision.admitted:
            started.append(now)
        peak = max(peak, len(state.holders))
    return started, peak


@SETTINGS
@given(st.integers(0, 5), steps)
def test_concurrency_is_never_exceeded(limit: int, plan: list[tuple[int, str]]) -> None:
    _, peak = _run(RateLimit(key="k", concurrency=limit), plan)
    assert peak <= limit


@SETTINGS
@given(st.integers(1, EXACT_LOG_LIMIT), st.integers(1, 2000), steps)
def test_an_exact_window_never_holds_more_than_its_limit(
    limit: int, period: int, plan: list[tuple[int, str]]
) -> None:
    started, _ = _run(RateLimit(key="k", rate=Window(limit=limit, period_ms=period)), plan)
    for i, t in enumerate(started):
        assert sum(1 for s in started[i:] if s < t + period) <= limit


@SETTINGS
@given(st.integers(EXACT_LOG_LIMIT + 1, 200), st.integers(1, 2000), steps)
def test_a_counted_window_never_exceeds_its_limit_per_fixed_window(
    limit: int, period: int, plan: list[tuple[int, str]]
) -> None:
    started, _ = _run(RateLimit(key="k", rate=Window(limit=limit, period_ms=period)), plan)
    per_window: dict[int, int] = {}
    for t in started:
        per_window[t // period] = per_window.get(t // period, 0) + 1
    assert all(count <= limit for count in per_window.values())


@SETTINGS
@given(st.integers(1, 20), st.integers(1, 2000), steps)
def test_a_throttle_spaces_every_start(
    limit: int, period: int, plan: list[tuple[int, str]]
) -> None:
    started, _ = _run(RateLimit(key="k", throttle=Window(limit=limit, period_ms=period)), plan)
    gap = max(1, period // limit)
    assert all(b - a >= gap for a, b in itertools.pairwise(started))


def test_a_holder_is_admitted_again_without_counting_twice() -> None:
    policy = RateLimit(key="k", concurrency=1, rate=Window(limit=5, period_ms=1000))
    state, (first,) = admit(None, "k", [(policy, "a", 1)], 0)
    again, (second,) = admit(state, "k", [(policy, "a", 1)], 1)
    assert first.admitted
    assert second.admitted
    assert again == state
    _, (other,) = admit(again, "k", [(policy, "b", 1)], 2)
    assert (other.admitted, other.strategy) == (False, "concurrency")


def test_a_refusal_changes_nothing() -> None:
    """A refused start leaves the stored state alone (no write per refused poll)."""
    policy = RateLimit(key="k", concurrency=0)
    state, _ = admit(None, "k", [(policy, "a", 1)], 0)
    again, (decision,) = admit(state, "k", [(policy, "b", 1)], 5)
    assert not decision.admitted
    assert again is state


def test_refusals_say_when_to_come_back() -> None:
    rate = RateLimit(key="k", rate=Window(limit=2, period_ms=1000))
    state, _ = admit(None, "k", [(rate, "a", 1), (rate, "b", 1)], 100)
    _, (d,) = admit(state, "k", [(rate, "c", 1)], 300)
    assert (d.strategy, d.retry_ms) == ("rate", 1100)
    throttle = RateLimit(key="k", throttle=Window(limit=4, period_ms=1000))
    state, _ = admit(None, "k", [(throttle, "a", 1)], 100)
    _, (d,) = admit(state, "k", [(throttle, "b", 1)], 200)
    assert (d.strategy, d.retry_ms) == ("throttle", 350)


def test_an_override_replaces_limits_until_it_expires() -> None:
    policy = RateLimit(key="k", concurrency=5)
    state = KeyState(key="k", override=Override(concurrency=0, expires_ms=1000))
    state, (d,) = admit(state, "k", [(policy, "a", 1)], 500)
    assert (d.admitted, d.strategy) == (False, "concurrency")
    state, (d,) = admit(state, "k", [(policy, "a", 1)], 1000)
    assert d.admitted
    assert state.override is None  # expired overrides are dropped when next written


def test_a_hold_refuses_until_its_time_and_only_extends() -> None:
    policy = RateLimit(key="k", concurrency=5)
    state = hold(None, "k", 2000, "429")
    assert hold(state, "k", 1000, "earlier") is state
    _, (d,) = admit(state, "k", [(policy, "a", 1)], 1999)
    assert (d.strategy, d.retry_ms) == ("dynamic", 2000)
    after, (d,) = admit(state, "k", [(policy, "a", 1)], 2000)
    assert d.admitted
    assert after.hold_until_ms is None


def test_repair_keeps_only_live_holders() -> None:
    state = KeyState(key="k", holders={"a": (1, 0), "b": (2, 0), "c": (1, 0)})
    now = REPAIR_GRACE_MS + 1
    repaired = repair(state, {"a": 1, "b": 3}, now)
    assert repaired is not None
    assert dict(repaired.holders) == {"a": (1, 0)}
    assert repair(repaired, {"a": 1}, now) is repaired


def test_repair_spares_a_holder_whose_claim_may_still_be_on_its_way() -> None:
    """A slot is admitted before the claim that uses it is written: until then its job reads
    ``available``, and dropping it would let a replica admit one start too many."""
    state = KeyState(key="k", holders={"new": (1, 1000), "old": (1, 0)})
    now = REPAIR_GRACE_MS + 500
    repaired = repair(state, {}, now)
    assert repaired is not None
    assert set(repaired.holders) == {"new"}
    assert repair(state, {}, 999) is state


def test_the_state_survives_its_stored_form() -> None:
    state = KeyState(
        key="tenant:acme",
        concurrency=3,
        rate=Window(limit=100, period_ms=60_000),
        throttle=Window(limit=1, period_ms=1000),
        holders={"a": (1, 5)},
        starts=(5, 6),
        window_ms=60_000,
        count=7,
        previous=9,
        last_start_ms=6,
        override=Override(concurrency=0, rate=Window(limit=1, period_ms=10), expires_ms=99),
        hold_until_ms=50,
        hold_reason="429",
    )
    assert KeyState.from_wire(state.to_wire()) == state


def test_the_view_has_the_extension_shape() -> None:
    policy = RateLimit(key="k", concurrency=5, rate=Window(limit=100, period_ms=60_000))
    state, _ = admit(None, "k", [(policy, "a", 1), (policy, "b", 1)], 60_000)
    shown = view(state, 60_000, waiting=4)
    assert shown["concurrency"] == {"limit": 5, "active": 2, "available": 3}
    assert shown["rate"]["current_count"] == 2
    assert shown["rate"]["period"] == "PT60S"
    assert shown["waiting_count"] == 4


def test_an_exact_release_spares_a_holder_another_admission_relies_on() -> None:
    """Multi-key jobs (a rate-limit key and ``tenant:<id>``): a slot one key gave a job that
    another key refused is given back only if its holder is still the one that admission
    wrote. A second admission of the same job (another replica) stamps it anew (``touch``),
    so its claim in flight keeps the slot."""
    policy = RateLimit(key="k", concurrency=1)
    state, (d,) = admit(None, "k", [(policy, "a", 1)], 100, touch={"a"})
    assert d.admitted
    mine = state.holders["a"]
    assert release_exact(state, {"a": mine}) == attrs.evolve(state, holders={})
    relied, (d2,) = admit(state, "k", [(policy, "a", 1)], 100, touch={"a"})
    assert d2.admitted
    assert relied.holders["a"] == (1, 101)  # stamped anew, even within the same millisecond
    assert release_exact(relied, {"a": mine}) is relied
    # Without ``touch`` a holder admitted again is left as it was (single-key jobs).
    assert admit(state, "k", [(policy, "a", 1)], 200)[0] == state


def test_a_late_release_of_an_earlier_attempt_spares_the_next_attempts_slot() -> None:
    """Attempt 1 left ``active`` (a visibility timeout) and, before the replica that stored it
    released its slot, attempt 2 was admitted under the same key on another replica: the late
    release of attempt 1 must not free attempt 2's slot (the key would admit one too many)."""
    policy = RateLimit(key="k", concurrency=2)
    state, _ = admit(None, "k", [(policy, "a", 1)], 100)
    # Attempt 2 takes the job's holder over (attempt 1's was not released yet).
    state, (d, b) = admit(state, "k", [(policy, "a", 2), (policy, "b", 1)], 200)
    assert d.admitted
    assert b.admitted
    assert state.holders["a"] == (2, 200)
    assert release_attempts(state, {"a": 1}) is state
    _, (c,) = admit(state, "k", [(policy, "c", 1)], 300)
    assert not c.admitted  # a (attempt 2) and b hold both slots
    state = release_attempts(state, {"b": 1})
    assert state is not None
    assert release_attempts(state, {"a": 2}) == attrs.evolve(state, holders={})
    assert release(state, ["a"]) == attrs.evolve(state, holders={})  # what a release by id did
    assert release_attempts(None, {"a": 2}) is None


@SETTINGS
@given(
    st.dictionaries(st.sampled_from("abcdef"), st.tuples(st.integers(1, 4), st.integers(0, 9))),
    st.dictionaries(st.sampled_from("abcdefg"), st.integers(1, 4)),
)
def test_a_release_frees_exactly_the_holders_of_the_attempts_that_left(
    holders: dict[str, tuple[int, int]], left: dict[str, int]
) -> None:
    state = KeyState(key="k", concurrency=9, holders=holders)
    after = release_attempts(state, left)
    assert after is not None
    assert after.holders == {k: v for k, v in holders.items() if left.get(k) != v[0]}
