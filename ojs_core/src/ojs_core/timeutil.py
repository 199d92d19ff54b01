"""RFC 3339 timestamps and ISO 8601 durations as the OJS wire format uses them."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

__all__ = [
    "format_duration",
    "format_ts",
    "ms_between",
    "parse_duration_ms",
    "parse_ts",
    "utc_ms",
]

_ISO_DURATION = re.compile(
    r"^P(?!$)(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_SIMPLE_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<u>ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def utc_ms(dt: datetime) -> datetime:
    """Truncate a timestamp to whole milliseconds (the precision OJS emits)."""
    return dt.replace(microsecond=dt.microsecond - dt.microsecond % 1000)


def parse_duration_ms(text: str) -> int:
    """Parse ``PT1.5S``/``P1D`` (ISO 8601) or ``1500ms``/``2s`` into milliseconds.

    Raises ``ValueError`` for anything malformed; years and months are refused because their
    length is not fixed.
    """
    t = text.strip()
    m = _ISO_DURATION.match(t)
    if m:
        total = 0.0
        for key, factor in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000)):
            if m.group(key):
                total += float(m.group(key)) * factor
        if m.group("m"):
            total += float(m.group("m")) * 60_000
        if m.group("s"):
            total += float(m.group("s")) * 1000
        return round(total)
    m = _SIMPLE_DURATION.match(t)
    if m:
        return round(float(m.group("n")) * _UNIT_MS[m.group("u")])
    raise ValueError(f"invalid duration {text!r}: expected ISO 8601 such as 'PT30S'")


def format_duration(ms: int) -> str:
    """Format milliseconds as an ISO 8601 duration (``PT1.5S``)."""
    seconds, frac = divmod(ms, 1000)
    if frac == 0:
        return f"PT{seconds}S"
    # Exact decimal: a float with ``:g`` keeps only 6 significant digits (PT1000.001S -> PT1000S).
    return f"PT{seconds}.{frac:03d}".rstrip("0") + "S"


def parse_ts(text: str, now: datetime | None = None) -> datetime:
    """Parse an RFC 3339 timestamp with a zone, or a relative ``+PT5S`` against ``now``.

    The offset the client gave is kept so the value round-trips unchanged.
    """
    t = text.strip()
    if t.startswith("+P"):
        if now is None:
            raise ValueError("relative time needs a reference time")
        try:
            return utc_ms(now + timedelta(milliseconds=parse_duration_ms(t[1:])))
        except OverflowError:
            raise ValueError(f"relative time {text!r} is out of range") from None
    return _parse_absolute(t)


@functools.lru_cache(maxsize=8192)
def _parse_absolute(t: str) -> datetime:
    # Stored jobs carry the same timestamps through every read: remember recent ones.
    # (datetimes are immutable, so sharing one between jobs is safe.)
    if not _RFC3339.match(t):
        raise ValueError(f"invalid timestamp {t!r}: expected RFC 3339 with a time zone")
    norm = t.replace("z", "Z").replace("t", "T")
    if norm.endswith("Z"):
        norm = norm[:-1] + "+00:00"
    # Python accepts at most 6 fractional digits.
    m = re.match(r"^(.*\.\d{6})\d+(.*)$", norm)
    if m:
        norm = m.group(1) + m.group(2)
    dt = datetime.fromisoformat(norm.replace(" ", "T"))
    if dt.tzinfo is None:  # pragma: no cover - the regex demands a zone
        raise ValueError(f"timestamp {t!r} has no time zone")
    return dt


def format_ts(dt: datetime) -> str:
    """Format as RFC 3339: ``Z`` for UTC, the original offset otherwise, ms only when present."""
    # Equal instants in different zones compare (and hash) equal: the offset is part of the key.
    return _format_ts_cached(dt, dt.utcoffset())


@functools.lru_cache(maxsize=8192)
def _format_ts_cached(dt: datetime, offset: timedelta | None) -> str:
    # A job's timestamps are formatted again at every write and response: remember recent ones.
    return _format_ts(dt)


def _format_ts(dt: datetime) -> str:
    us = dt.microsecond
    spec = "seconds" if not us else ("milliseconds" if us % 1000 == 0 else "microseconds")
    # isoformat is C code, pads the year to four digits and prints the offset as +HH:MM.
    text = dt.replace(tzinfo=None).isoformat(timespec=spec)
    off = dt.utcoffset()
    if off is None or not off:
        return text + "Z"
    total = int(off.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{text}{sign}{total // 3600:02d}:{total % 3600 // 60:02d}"


def ms_between(start: datetime, end: datetime) -> int:
    """Whole milliseconds from ``start`` to ``end`` (negative if ``end`` is earlier)."""
    return int((end - start) / timedelta(milliseconds=1))


def from_epoch_ms(ms: int) -> datetime:
    """UTC datetime for a Unix epoch in milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
