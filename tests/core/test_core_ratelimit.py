"""The sliding-window fetch rate limiter (digest §11, options.rate_limit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core.ratelimit import RateLimiter

SETTINGS = settings(max_examples=200, deadline=None)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def test_admits_up_to_limit_then_refuses() -> None:
    rl = RateLimiter()
    assert [rl.try_acquire("q", 3, 1000, NOW) for _ in range(5)] == [True, True, True, False, False]


def test_window_slides() -> None:
    rl = RateLimiter()
    assert rl.try_acquire("q", 2, 1000, NOW)
    assert rl.try_acquire("q", 2, 1000, NOW + 400 * MS)
    assert not rl.try_acquire("q", 2, 1000, NOW + 999 * MS)
    # The first admission leaves the window exactly one period later.
    assert rl.try_acquire("q", 2, 1000, NOW + 1000 * MS)
    assert not rl.try_acquire("q", 2, 1000, NOW + 1399 * MS)
    assert rl.try_acquire("q", 2, 1000, NOW + 1400 * MS)


def test_refusals_do_not_use_up_the_window() -> None:
    rl = RateLimiter()
    assert rl.try_acquire("q", 1, 1000, NOW)
    for i in range(1, 10):
        assert not rl.try_acquire("q", 1, 1000, NOW + i * 100 * MS)
    assert rl.try_acquire("q", 1, 1000, NOW + 1000 * MS)


def test_keys_are_independent() -> None:
    rl = RateLimiter()
    assert rl.try_acquire("a", 1, 1000, NOW)
    assert not rl.try_acquire("a", 1, 1000, NOW)
    assert rl.try_acquire("b", 1, 1000, NOW)


def test_reset_forgets_windows() -> None:
    rl = RateLimiter()
    assert rl.try_acquire("a", 1, 1000, NOW)
    rl.reset()
    assert rl.try_acquire("a", 1, 1000, NOW)


@SETTINGS
@given(
    st.integers(1, 10),
    st.integers(1, 5000),
    st.lists(st.integers(0, 500), min_size=1, max_size=60),
)
def test_never_more_than_limit_in_any_window(limit: int, period_ms: int, gaps: list[int]) -> None:
    rl = RateLimiter()
    t = NOW
    admitted: list[datetime] = []
    for gap in gaps:
        t += gap * MS
        in_window = [a for a in admitted if a > t - period_ms * MS]
        ok = rl.try_acquire("k", limit, period_ms, t)
        # Admitted exactly when fewer than `limit` admissions fall in the last period.
        assert ok == (len(in_window) < limit)
        if ok:
            admitted.append(t)
