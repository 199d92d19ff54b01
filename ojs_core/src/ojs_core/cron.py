"""Cron: expression validation and next-fire computation (via croniter), and request parsing.

Expressions have 5 fields, or 6 with seconds first; ``@yearly``/``@annually``, ``@monthly``,
``@weekly``, ``@daily``/``@midnight``, ``@hourly`` and ``@every <duration>`` are accepted. Time
zones are IANA names only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .envelope import parse_enqueue
from .errors import ValidationError
from .model import CronJob

__all__ = ["next_fire", "parse_cron_request", "validate_expression", "validate_timezone"]

_SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_GO_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9\-._]*\Z")
OVERLAP_POLICIES = {
    "skip": "skip",
    "allow": "allow",
    "cancel": "cancel_previous",
    "cancel_previous": "cancel_previous",
    "enqueue": "enqueue",
}


def _every_seconds(expr: str) -> float | None:
    if not expr.startswith("@every"):
        return None
    spec = expr[len("@every") :].strip()
    if not _GO_DURATION.match(spec):
        raise ValueError(f"invalid @every duration {spec!r}")
    seconds = sum(float(n) * _GO_UNIT_S[u] for n, u in _GO_PART.findall(spec))
    if seconds <= 0:
        raise ValueError("@every needs a positive duration")
    return seconds


def _normalise(expr: str) -> tuple[str, bool]:
    text = expr.strip()
    lowered = text.lower()
    if lowered in _SHORTCUTS:
        return _SHORTCUTS[lowered], False
    fields = text.split()
    if len(fields) == 5:
        return text, False
    if len(fields) == 6:
        return text, True
    raise ValueError(f"expected 5 or 6 fields, got {len(fields)}")


def validate_expression(expr: Any, path: str = "expression") -> str:
    """Return ``expr`` if it is a valid OJS cron expression, else raise a 400."""
    if not isinstance(expr, str) or not expr.strip():
        raise ValidationError("must be a non-empty cron expression", path=path)
    try:
        if _every_seconds(expr.strip()) is None:
            norm, seconds = _normalise(expr)
            croniter(norm, datetime(2026, 1, 1, tzinfo=UTC), second_at_beginning=seconds)
            for step in re.findall(r"/(\d+)", norm):
                if int(step) == 0:
                    raise ValueError("step of 0")
        next_fire(expr, "UTC", datetime(2026, 1, 1, tzinfo=UTC))  # never fires / out of range
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"invalid cron expression {expr!r}: {exc}", path=path) from None
    except Exception as exc:  # croniter's own error classes
        raise ValidationError(f"invalid cron expression {expr!r}: {exc}", path=path) from None
    return expr.strip()


def validate_timezone(tz: Any, path: str = "timezone") -> str:
    """Accept IANA zone names only (``Asia/Tokyo``, ``UTC``); refuse offsets and abbreviations."""
    if not isinstance(tz, str) or not tz:
        raise ValidationError("must be an IANA time zone name", path=path)
    if tz != "UTC" and ("/" not in tz or re.search(r"[+-]\d", tz)):
        raise ValidationError(f"{tz!r} is not an IANA time zone name", path=path)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {tz!r}", path=path) from None
    return tz


def next_fire(
    expr: str, timezone: str, after: datetime, anchor: datetime | None = None
) -> datetime:
    """The first fire time strictly after ``after``, in UTC.

    ``@every`` schedules are anchored on ``anchor`` (registration or last fire).
    """
    every = _every_seconds(expr.strip())
    if every is not None:
        base = anchor or after
        step = timedelta(seconds=every)
        n = max(1, int((after - base) / step) + 1)
        fire = base + n * step
        while fire <= after:
            fire += step
        return fire.astimezone(UTC)
    norm, seconds = _normalise(expr)
    tz = ZoneInfo(timezone)
    # Walk wall-clock times so that DST is handled as the cron spec asks: a time skipped at
    # spring-forward does not fire, a time repeated at fall-back fires once (the first).
    wall = after.astimezone(tz).replace(tzinfo=None)
    it = croniter(norm, wall, second_at_beginning=seconds)
    for _ in range(10_000):
        candidate: datetime = it.get_next(datetime)
        aware = candidate.replace(tzinfo=tz)
        if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != candidate:
            continue  # does not exist on this day (spring-forward gap)
        fire = aware.astimezone(UTC).replace(microsecond=0)
        if fire > after:
            return fire
    raise ValueError(f"cron expression {expr!r} never fires")


def parse_cron_request(body: Any, now: datetime) -> CronJob:
    """Parse a registration in the openapi shape (``expression``, ``job_template``) or the cron
    spec/SDK shape (``cron``, top-level ``type``/``args``/``options``)."""
    if not isinstance(body, Mapping):
        raise ValidationError("cron job must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > 255 or not NAME_RE.match(name):
        raise ValidationError("must match [a-z0-9][a-z0-9-._]* (at most 255)", path="name")
    expr_key = next((k for k in ("expression", "cron", "schedule") if k in body), "expression")
    expression = validate_expression(body.get(expr_key), expr_key)
    timezone = validate_timezone(body.get("timezone") or "UTC")
    overlap = body.get("overlap_policy", "skip")
    if not isinstance(overlap, str) or overlap not in OVERLAP_POLICIES:
        raise ValidationError("must be skip, allow, cancel or enqueue", path="overlap_policy")
    template_raw = body.get("job_template")
    if template_raw is None:
        template_raw = {
            "type": body.get("type"),
            "args": body.get("args", []),
            **({"options": body["options"]} if body.get("options") is not None else {}),
            **({"meta": body["meta"]} if body.get("meta") is not None else {}),
        }
        tpath = ""
    else:
        tpath = "job_template"
    if not isinstance(template_raw, Mapping):
        raise ValidationError("must be an object", path="job_template")
    template = dict(template_raw)
    template.setdefault("args", [])
    template.pop("id", None)
    parse_enqueue(template, now=now, path=tpath)  # validate now, not at the first tick
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValidationError("must be a boolean", path="enabled")
    description = body.get("description")
    return CronJob(
        name=name,
        expression=expression,
        timezone=timezone,
        overlap_policy=OVERLAP_POLICIES[overlap],
        enabled=enabled,
        description=description if isinstance(description, str) else None,
        job_template=template,
        created_at=now,
        updated_at=now,
        next_run_at=next_fire(expression, timezone, now, anchor=now) if enabled else None,
    )
