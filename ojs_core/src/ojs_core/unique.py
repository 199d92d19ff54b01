"""Unique-job keys (OJS unique-jobs spec §4): a SHA-256 over a canonical JSON of the dimensions."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from .model import Job, UniquePolicy

__all__ = ["is_conflict", "unique_key"]


def _nfc(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, list):
        return [_nfc(v) for v in value]
    if isinstance(value, dict):
        return {unicodedata.normalize("NFC", str(k)): _nfc(v) for k, v in value.items()}
    return value


def _filter_args(args: list[Any], keys: tuple[str, ...]) -> list[Any]:
    # OJS args are an array; args_keys selects keys inside its object elements.
    return [{k: a[k] for k in keys if k in a} if isinstance(a, dict) else a for a in args]


def unique_key(job: Job, policy: UniquePolicy) -> str:
    """The job's uniqueness fingerprint under ``policy`` (lowercase hex SHA-256)."""
    dims: dict[str, Any] = {"type": job.type}
    if "queue" in policy.keys:
        dims["queue"] = job.queue
    if "args" in policy.keys:
        dims["args"] = _filter_args(job.args, policy.args_keys) if policy.args_keys else job.args
    if "meta" in policy.keys:
        meta = job.meta
        if policy.meta_keys:
            meta = {k: meta[k] for k in policy.meta_keys if k in meta}
        dims["meta"] = meta
    canonical = json.dumps(
        _nfc(dims), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_conflict(existing: Job, policy: UniquePolicy, now: datetime) -> bool:
    """Whether ``existing`` blocks a new job with the same key: in ``states`` and within period."""
    if existing.state not in policy.states:
        return False
    if policy.period_ms is not None and existing.created_at is not None:
        try:
            return now < existing.created_at + timedelta(milliseconds=policy.period_ms)
        except OverflowError:
            return True  # the period reaches past the largest representable time
    return True
