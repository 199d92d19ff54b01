"""Retry arithmetic and the FAIL decision (digest §5)."""

from __future__ import annotations

import random
from fractions import Fraction

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ojs_core.model import JobError, RetryPolicy
from ojs_core.retry import (
    BACKOFF_STRATEGIES,
    FailDecision,
    backoff_ms,
    decide_failure,
    matches_non_retryable,
)

SETTINGS = settings(max_examples=200, deadline=None)


@st.composite
def policies(draw, *, jitter: bool | None = None, strategy: str | None = None) -> RetryPolicy:
    initial = draw(st.integers(min_value=0, max_value=600_000))
    maximum = draw(st.integers(min_value=initial, max_value=3_600_000))
    return RetryPolicy(
        max_attempts=draw(st.integers(min_value=0, max_value=50)),
        initial_interval_ms=initial,
        max_interval_ms=maximum,
        backoff_coefficient=draw(st.floats(min_value=1.0, max_value=10.0)),
        jitter=draw(st.booleans()) if jitter is None else jitter,
        backoff_strategy=strategy or draw(st.sampled_from(BACKOFF_STRATEGIES)),
        on_exhaustion=draw(st.sampled_from(["discard", "dead_letter"])),
    )


def _exact_raw(policy: RetryPolicy, n: int) -> Fraction:
    i = Fraction(policy.initial_interval_ms)
    c = Fraction(policy.backoff_coefficient)
    strategy = policy.backoff_strategy
    if strategy == "constant":
        return i
    if strategy == "linear":
        return i * n
    if strategy == "polynomial":
        return (
            i * Fraction(n) ** c
            if c.denominator == 1
            else i * Fraction(n**policy.backoff_coefficient)
        )
    return i * c ** (n - 1)


attempts = st.integers(min_value=1, max_value=30)


# --- formulas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "coefficient", "expected"),
    [
        ("exponential", 2.0, [1000, 2000, 4000, 8000, 16000]),
        ("exponential", 3.0, [1000, 3000, 9000, 27000, 81000]),
        ("exponential", 1.0, [1000, 1000, 1000, 1000, 1000]),
        ("linear", 2.0, [1000, 2000, 3000, 4000, 5000]),
        ("constant", 2.0, [1000, 1000, 1000, 1000, 1000]),
        ("polynomial", 2.0, [1000, 4000, 9000, 16000, 25000]),
        ("polynomial", 3.0, [1000, 8000, 27000, 64000, 125000]),
    ],
)
def test_backoff_examples(strategy: str, coefficient: float, expected: list[int]) -> None:
    policy = RetryPolicy(
        initial_interval_ms=1000,
        backoff_coefficient=coefficient,
        max_interval_ms=10_000_000,
        jitter=False,
        backoff_strategy=strategy,
    )
    assert [backoff_ms(policy, n) for n in range(1, 6)] == expected


def test_backoff_default_policy_is_exponential_1s_2x_capped_at_5m() -> None:
    policy = attrs.evolve(RetryPolicy(), jitter=False)
    assert [backoff_ms(policy, n) for n in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]
    assert backoff_ms(policy, 9) == 256_000
    assert backoff_ms(policy, 10) == 300_000
    assert backoff_ms(policy, 50) == 300_000


def test_backoff_attempt_zero_is_treated_as_first() -> None:
    policy = RetryPolicy(jitter=False)
    assert backoff_ms(policy, 0) == backoff_ms(policy, 1) == 1000


@SETTINGS
@given(policies(jitter=False), attempts)
def test_backoff_formula_without_jitter(policy: RetryPolicy, n: int) -> None:
    expected = min(_exact_raw(policy, n), Fraction(policy.max_interval_ms))
    got = backoff_ms(policy, n)
    # Floating point may be off by a hair before rounding; allow one ms of slack.
    assert abs(got - expected) <= 1
    assert 0 <= got <= policy.max_interval_ms


@SETTINGS
@given(policies(jitter=False), st.integers(min_value=1, max_value=10**6))
def test_backoff_is_capped_at_max_interval(policy: RetryPolicy, n: int) -> None:
    assert 0 <= backoff_ms(policy, n) <= policy.max_interval_ms


@SETTINGS
@given(
    st.sampled_from(BACKOFF_STRATEGIES),
    st.floats(min_value=1.0, max_value=1000.0),
    st.integers(min_value=1, max_value=10**9),
    st.booleans(),
)
def test_backoff_never_overflows(strategy: str, coefficient: float, n: int, jitter: bool) -> None:
    policy = RetryPolicy(backoff_strategy=strategy, backoff_coefficient=coefficient, jitter=jitter)
    assert 0 <= backoff_ms(policy, n, random.Random(0)) <= policy.max_interval_ms


@pytest.mark.parametrize("strategy", BACKOFF_STRATEGIES)
def test_backoff_zero_initial_interval_stays_zero(strategy: str) -> None:
    policy = RetryPolicy(initial_interval_ms=0, jitter=False, backoff_strategy=strategy)
    for n in (1, 2, 10, 100, 5000, 10**6):
        assert backoff_ms(policy, n) == 0


@SETTINGS
@given(
    policies(jitter=False, strategy="exponential") | policies(jitter=False, strategy="linear"),
    st.integers(min_value=1, max_value=200),
)
def test_backoff_non_decreasing_without_jitter(policy: RetryPolicy, n: int) -> None:
    assert backoff_ms(policy, n) <= backoff_ms(policy, n + 1)


@SETTINGS
@given(policies(jitter=False, strategy="polynomial"), st.integers(min_value=1, max_value=200))
def test_polynomial_non_decreasing_without_jitter(policy: RetryPolicy, n: int) -> None:
    assert backoff_ms(policy, n) <= backoff_ms(policy, n + 1)


@SETTINGS
@given(policies(jitter=True), attempts, st.randoms(use_true_random=False))
def test_backoff_jitter_bounds(policy: RetryPolicy, n: int, rng: random.Random) -> None:
    capped = min(float(_exact_raw(policy, n)), float(policy.max_interval_ms))
    got = backoff_ms(policy, n, rng)
    # U[0.5, 1.5) times the capped delay, capped again, then rounded to whole ms.
    assert 0.5 * capped - 1 <= got <= 1.5 * capped + 1
    assert 0 <= got <= policy.max_interval_ms


class _FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return self.value


def test_jitter_draws_from_half_to_one_and_a_half() -> None:
    policy = RetryPolicy(initial_interval_ms=1000, jitter=True)
    low = _FixedRandom(0.5)
    assert backoff_ms(policy, 1, low) == 500
    assert low.calls == [(0.5, 1.5)]
    assert backoff_ms(policy, 1, _FixedRandom(1.25)) == 1250


def test_jitter_is_capped_again() -> None:
    policy = RetryPolicy(initial_interval_ms=1000, max_interval_ms=1200, jitter=True)
    assert backoff_ms(policy, 1, _FixedRandom(1.49)) == 1200
    # Already at the cap before jitter: jitter may only lower it.
    assert backoff_ms(policy, 10, _FixedRandom(1.49)) == 1200
    assert backoff_ms(policy, 10, _FixedRandom(0.5)) == 600


def test_jitter_off_ignores_rng() -> None:
    rng = _FixedRandom(0.5)
    assert backoff_ms(RetryPolicy(jitter=False), 1, rng) == 1000
    assert rng.calls == []


# --- non-retryable matching -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "names", "expected"),
    [
        (["Auth.*"], ["Auth.TokenExpired"], True),
        (["Auth.*"], ["Auth"], False),
        (["Auth.*"], ["AuthX.TokenExpired"], False),
        (["Auth.*"], ["auth.TokenExpired"], False),
        (["Auth.*"], ["Auth.Token.Expired"], True),
        (["FatalError"], ["FatalError"], True),
        (["FatalError"], ["FatalErrorX"], False),
        (["FatalError"], ["Fatal"], False),
        (["a", "b.*"], [None, "b.c"], True),
        ([], ["anything"], False),
        (["x"], [None, None], False),
        (["validation.*"], [None, "validation.bad", None], True),
    ],
)
def test_matches_non_retryable(patterns, names, expected) -> None:
    assert matches_non_retryable(patterns, names) is expected


segment = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)


@SETTINGS
@given(segment, st.lists(segment, min_size=1, max_size=3))
def test_prefix_pattern_matches_descendants_only(prefix: str, rest: list[str]) -> None:
    pattern = prefix + ".*"
    assert matches_non_retryable([pattern], [prefix + "." + ".".join(rest)])
    assert not matches_non_retryable([pattern], [prefix])
    assert not matches_non_retryable([pattern], [prefix + rest[0]])


# --- decide_failure ---------------------------------------------------------------------------

error_names = st.sampled_from(["handler_error", "timeout", "Auth.TokenExpired", "boom", "E1"])


@st.composite
def errors(draw) -> JobError:
    details = draw(
        st.none() | st.fixed_dictionaries({"error_class": st.sampled_from(["FatalError", "X"])})
    )
    return JobError(
        code=draw(error_names),
        type=draw(st.none() | error_names),
        retryable=draw(st.sampled_from([None, True, False])),
        details=details,
    )


@SETTINGS
@given(
    policies(),
    st.integers(min_value=1, max_value=60),
    errors(),
    st.lists(st.sampled_from(["Auth.*", "FatalError", "boom", "timeout"]), max_size=2),
)
def test_decide_failure_order(policy, attempt, error, non_retryable) -> None:
    policy = attrs.evolve(policy, non_retryable_errors=tuple(non_retryable))
    decision = decide_failure(policy, attempt, error, random.Random(1))
    assert isinstance(decision, FailDecision)
    names = [error.type, error.code, (error.details or {}).get("error_class")]
    non_retryable_hit = error.retryable is False or matches_non_retryable(non_retryable, names)
    exhausted = attempt >= policy.max_attempts
    dead = policy.on_exhaustion == "dead_letter"
    if non_retryable_hit:
        assert decision == FailDecision(retry=False, dead_letter=dead, reason="non_retryable")
    elif exhausted:
        assert decision == FailDecision(retry=False, dead_letter=dead, reason="exhausted")
    else:
        assert decision.retry
        assert not decision.dead_letter
        assert decision.reason == "retry"
        assert 0 <= decision.delay_ms <= policy.max_interval_ms
        expected = backoff_ms(policy, attempt, random.Random(1))
        assert decision.delay_ms == expected


def test_retryable_false_is_final_even_with_attempts_left() -> None:
    d = decide_failure(RetryPolicy(max_attempts=10), 1, JobError(retryable=False))
    assert not d.retry
    assert d.reason == "non_retryable"
    assert not d.dead_letter


def test_non_retryable_match_via_error_class_detail() -> None:
    policy = RetryPolicy(
        max_attempts=10, non_retryable_errors=("Auth.*",), on_exhaustion="dead_letter"
    )
    err = JobError(code="handler_error", details={"error_class": "Auth.TokenExpired"})
    d = decide_failure(policy, 1, err)
    assert d == FailDecision(retry=False, dead_letter=True, reason="non_retryable")
    bare = JobError(code="handler_error", details={"error_class": "Auth"})
    assert decide_failure(policy, 1, bare, random.Random(0)).retry


def test_non_retryable_match_via_type_and_code() -> None:
    policy = RetryPolicy(max_attempts=10, non_retryable_errors=("validation.bad_input",))
    assert not decide_failure(policy, 1, JobError(type="validation.bad_input")).retry
    assert not decide_failure(policy, 1, JobError(code="validation.bad_input")).retry
    assert decide_failure(policy, 1, JobError(code="other"), random.Random(0)).retry


@pytest.mark.parametrize(
    ("max_attempts", "attempt", "retry"),
    [(3, 1, True), (3, 2, True), (3, 3, False), (3, 4, False), (1, 1, False), (0, 1, False)],
)
def test_exhaustion(max_attempts: int, attempt: int, retry: bool) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, jitter=False)
    d = decide_failure(policy, attempt, JobError())
    assert d.retry is retry
    if retry:
        assert d.delay_ms == backoff_ms(policy, attempt)
    else:
        assert d.reason == "exhausted"


@pytest.mark.parametrize(("on_exhaustion", "dead"), [("discard", False), ("dead_letter", True)])
def test_dead_letter_flag_follows_on_exhaustion(on_exhaustion: str, dead: bool) -> None:
    policy = RetryPolicy(max_attempts=1, on_exhaustion=on_exhaustion)
    assert decide_failure(policy, 1, JobError()).dead_letter is dead
    assert decide_failure(policy, 1, JobError(retryable=False)).dead_letter is dead


@pytest.mark.parametrize(
    ("code", "dead"),
    [("DISCARD", False), ("discard", False), ("FAIL", False), ("DEAD_LETTER", True)],
)
def test_handler_directives_win(code: str, dead: bool) -> None:
    # Directives override the policy: attempts left, on_exhaustion ignored.
    policy = RetryPolicy(max_attempts=10, on_exhaustion="dead_letter" if not dead else "discard")
    d = decide_failure(policy, 1, JobError(code=code, retryable=True))
    assert d == FailDecision(retry=False, dead_letter=dead, reason="directive")


def test_retry_decision_uses_rng() -> None:
    policy = RetryPolicy(max_attempts=5)
    d = decide_failure(policy, 2, JobError(), _FixedRandom(0.5))
    assert d == FailDecision(retry=True, delay_ms=1000, reason="retry")


@SETTINGS
@given(policies(), st.integers(min_value=1, max_value=60))
def test_no_retry_once_attempts_reach_max(policy: RetryPolicy, attempt: int) -> None:
    assume(attempt >= policy.max_attempts)
    assert not decide_failure(policy, attempt, JobError(retryable=True)).retry
