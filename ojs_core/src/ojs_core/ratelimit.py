"""A sliding-window rate limiter for fetch-time rate limits (``options.rate_limit``).

The window is kept per server process; with N replicas the effective limit is up to N times the
configured one. See ``docs/architecture.md``.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``limit`` admissions per ``period_ms`` for each key."""

    def __init__(self) -> None:
        self._windows: dict[str, deque[datetime]] = {}

    def try_acquire(self, key: str, limit: int, period_ms: int, now: datetime) -> bool:
        """Admit one event for ``key`` at ``now`` if the window has room."""
        window = self._windows.setdefault(key, deque())
        horizon = now - timedelta(milliseconds=period_ms)
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def reset(self) -> None:
        """Forget every window."""
        self._windows.clear()
