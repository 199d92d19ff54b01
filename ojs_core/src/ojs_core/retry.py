"""Retry policy arithmetic and the FAIL decision (OJS retry spec §3-§7), as pure functions."""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs

from .model import JobError, RetryPolicy

__all__ = [
    "BACKOFF_STRATEGIES",
    "FailDecision",
    "backoff_ms",
    "decide_failure",
    "matches_non_retryable",
]

BACKOFF_STRATEGIES = ("exponential", "linear", "constant", "polynomial")


def backoff_ms(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> int:
    """Delay before the retry that follows failed attempt number ``attempt`` (1-based).

    ``constant``: I; ``linear``: I*n; ``exponential``: I*C^(n-1); ``polynomial``: I*n^C; capped
    at ``max_interval``; with jitter multiplied by U[0.5, 1.5) and capped again.
    """
    n = max(attempt, 1)
    i = policy.initial_interval_ms
    c = policy.backoff_coefficient
    strategy = policy.backoff_strategy
    try:
        if strategy == "constant":
            raw = float(i)
        elif strategy == "linear":
            raw = float(i) * n
        elif strategy == "polynomial":
            raw = i * float(n) ** c
        else:
            raw = i * c ** (n - 1)
    except OverflowError:
        # The power overflowed a float: the delay is past any cap (or 0 with I = 0).
        raw = float(policy.max_interval_ms) if i > 0 else 0.0
    delay = min(raw, float(policy.max_interval_ms))
    if policy.jitter:
        delay *= (rng or random).uniform(0.5, 1.5)
        delay = min(delay, float(policy.max_interval_ms))
    return max(0, round(delay))


def matches_non_retryable(patterns: Iterable[str], names: Iterable[str | None]) -> bool:
    """Whether any error name matches a pattern exactly, or by ``prefix.*`` (dot included)."""
    candidates = [n for n in names if n]
    for pattern in patterns:
        if pattern.endswith(".*"):
            prefix = pattern[:-1]
            if any(n.startswith(prefix) for n in candidates):
                return True
        elif pattern in candidates:
            return True
    return False


@attrs.frozen
class FailDecision:
    """Outcome of a failed attempt: retry after ``delay_ms``, or discard (to the DLQ or not)."""

    retry: bool
    delay_ms: int = 0
    dead_letter: bool = False
    reason: str = ""


def decide_failure(
    policy: RetryPolicy,
    attempt: int,
    error: JobError,
    rng: random.Random | None = None,
) -> FailDecision:
    """The FAIL decision order: handler directive, non-retryable match, exhaustion, else retry.

    A ``retryable: false`` error is final. ``non_retryable_errors`` is matched against the error's
    ``type``, its ``code`` and ``details.error_class``.
    """
    dead = policy.on_exhaustion == "dead_letter"
    directive = (error.code or "").upper()
    if directive in ("DISCARD", "FAIL"):
        return FailDecision(retry=False, dead_letter=False, reason="directive")
    if directive == "DEAD_LETTER":
        return FailDecision(retry=False, dead_letter=True, reason="directive")
    details = error.details or {}
    error_class = details.get("error_class") if isinstance(details, dict) else None
    names = [error.type, error.code, error_class if isinstance(error_class, str) else None]
    if error.retryable is False or matches_non_retryable(policy.non_retryable_errors, names):
        return FailDecision(retry=False, dead_letter=dead, reason="non_retryable")
    if attempt >= policy.max_attempts:
        return FailDecision(retry=False, dead_letter=dead, reason="exhausted")
    return FailDecision(retry=True, delay_ms=backoff_ms(policy, attempt, rng), reason="retry")
