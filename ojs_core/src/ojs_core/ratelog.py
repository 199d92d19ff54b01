"""Logging that a failure repeating every few milliseconds cannot flood.

A poison job whose timer fails, or a store that is down while every timer pass tries it, would
otherwise write a traceback per job per pass (every 20 ms). :class:`RateLimitedLog` writes each
key's failure at most once per interval, and at most ``burst`` lines per interval in all,
counting what it held back so the next line says how many were suppressed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import datetime, timedelta

from .clock import Clock

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Rate-limited ``logger.warning`` by key (a job id, say), on an injectable clock."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Clock,
        *,
        interval: timedelta = timedelta(seconds=60),
        burst: int = 20,
        max_keys: int = 10_000,
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.interval = interval
        self.burst = burst
        self.max_keys = max_keys
        self._last: OrderedDict[str, datetime] = OrderedDict()
        self._window_start: datetime | None = None
        self._in_window = 0
        self.suppressed = 0

    def warning(self, key: str, msg: str, *args: object, exc: BaseException | None = None) -> bool:
        """Log unless ``key`` was logged within the interval or the burst is spent; whether
        it was written."""
        now = self.clock.now()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed += 1
            return False
        if self._window_start is None or now - self._window_start >= self.interval:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            return False
        self._in_window += 1
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        held, self.suppressed = self.suppressed, 0
        suffix = f" ({held} similar messages suppressed)" if held else ""
        self.logger.warning(msg + suffix, *args, exc_info=exc)
        return True
