"""How a webhook delivery is made and judged: signing, headers, the retry schedule, outcomes.

* Signing (spec §8.1): ``X-OJS-Signature: sha256=<hex HMAC-SHA256(secret, f"{ts}.{body}")>``
  with ``X-OJS-Timestamp: <ts>`` (Unix seconds); during a secret rotation one signature per
  secret, comma-separated, the current secret's first.
* The schedule (spec §7.2): eight attempts, the first at once, then 30 s, 2 min, 10 min, 1 h,
  4 h, 12 h and 24 h after the previous one failed (about 41 hours in all).
* Outcomes (spec §7.1): 2xx delivered; 4xx other than 429 dead at once; 429 retried after its
  ``Retry-After`` when given; 5xx, 3xx left over after the redirects, timeouts and connection
  errors retried on the schedule; dead once the schedule is exhausted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import attrs

from .webhooks import Delivery

__all__ = [
    "DEFAULT_SCHEDULE",
    "MAX_RETRY_AFTER_S",
    "TIMEOUT_S",
    "Outcome",
    "after_attempt",
    "classify",
    "delivery_headers",
    "retry_after_seconds",
    "sign",
    "signature_header",
    "verify",
]

#: Seconds before each attempt, counted from the previous attempt's failure (spec §7.2).
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 30, 120, 600, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
#: The request timeout (spec §7.3).
TIMEOUT_S = 30.0
#: A ``Retry-After`` is honoured up to this (a day, the schedule's longest step).
MAX_RETRY_AFTER_S = 86_400.0
#: Error texts kept with a delivery are cut to this many characters.
_ERROR_CHARS = 500


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed by ``secret``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The ``X-OJS-Signature`` value: one signature per secret, comma-separated."""
    return ",".join(sign(s, timestamp, body) for s in secrets)


def verify(
    secret: str, timestamp: str, body: bytes, header: str, *, now: float, tolerance_s: float = 300
) -> bool:
    """What a receiver checks (spec §8.2): one of the header's signatures is ``secret``'s and
    the timestamp is within ``tolerance_s`` of ``now``."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in header.split(","))


def delivery_headers(
    *,
    delivery_id: str,
    subscription_id: str,
    event_type: str,
    secrets: Sequence[str],
    timestamp: int,
    body: bytes,
    user_agent: str,
) -> dict[str, str]:
    """Every header of a delivery request (spec §5.3)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        "X-OJS-Event-Type": event_type,
        "X-OJS-Delivery-ID": delivery_id,
        "X-OJS-Subscription-ID": subscription_id,
        "X-OJS-Timestamp": str(timestamp),
        "X-OJS-Signature": signature_header(secrets, timestamp, body),
    }


@attrs.frozen(kw_only=True)
class Outcome:
    """How an attempt ended: ``delivered``, ``retry`` or ``dead``, with what was seen."""

    kind: str
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) in seconds from ``now``, capped at
    :data:`MAX_RETRY_AFTER_S`; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def classify(
    status_code: int | None,
    *,
    error: str | None = None,
    headers: Mapping[str, str] | None = None,
    now: datetime,
) -> Outcome:
    """The outcome of one attempt: an HTTP status (after redirects), or ``error`` when no
    response came (timeout, connection error, refused address)."""
    if status_code is None:
        return Outcome(kind="retry", error=(error or "no response")[:_ERROR_CHARS])
    if 200 <= status_code < 300:
        return Outcome(kind="delivered", status_code=status_code)
    if status_code == 429:
        after = retry_after_seconds((headers or {}).get("retry-after"), now)
        return Outcome(
            kind="retry", status_code=429, error="HTTP 429 (rate limited)", retry_after_s=after
        )
    if 400 <= status_code < 500:
        return Outcome(kind="dead", status_code=status_code, error=f"HTTP {status_code}")
    return Outcome(kind="retry", status_code=status_code, error=f"HTTP {status_code}")


def after_attempt(
    delivery: Delivery, outcome: Outcome, now: datetime, schedule: Sequence[float]
) -> Delivery:
    """The delivery once its attempt ``delivery.attempt + 1`` ended with ``outcome``: delivered,
    dead (a client error, or no attempt left in ``schedule``) or pending until the next step."""
    attempt = delivery.attempt + 1
    base = attrs.evolve(
        delivery,
        attempt=attempt,
        last_status_code=outcome.status_code,
        last_error=outcome.error,
        updated_at=now,
    )
    if outcome.kind == "delivered":
        return attrs.evolve(base, status="delivered", next_at=now)
    if outcome.kind == "dead" or attempt >= len(schedule):
        return attrs.evolve(base, status="dead", next_at=now)
    delay = schedule[attempt]
    if outcome.retry_after_s is not None:
        delay = outcome.retry_after_s
    return attrs.evolve(base, status="pending", next_at=now + timedelta(seconds=delay))
