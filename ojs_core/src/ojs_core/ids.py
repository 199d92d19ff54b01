"""UUIDv7 identifiers (RFC 9562), lowercase, as OJS requires for job and workflow ids."""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time

__all__ = ["UUIDV7_RE", "deterministic_uuid7", "is_uuid7", "uuid7"]

UUIDV7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")

_lock = threading.Lock()
# Seeded from the OS once: the ids need uniqueness, not secrecy, and a syscall per id costs more
# than the rest of making one. A fork re-seeds (below), so children never repeat the parent.
_rng = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))
_last_ms = 0
_seq = 0


def _fmt(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7(now_ms: int | None = None) -> str:
    """A new UUIDv7; ids made in one process sort in creation order (12-bit counter per ms)."""
    global _last_ms, _seq
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            _seq += 1
            if _seq > 0xFFF:
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _seq = _rng.getrandbits(10)
        seq = _seq
        rand = _rng.getrandbits(62)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    return _fmt(value)


def deterministic_uuid7(ms: int, *parts: str) -> str:
    """A UUIDv7 with timestamp ``ms`` whose random bits derive from ``parts``.

    Used where several server replicas must agree on one id for the same logical event (a cron
    tick), so that a second insert is recognised as a duplicate.
    """
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    r = int.from_bytes(digest[:10], "big")
    seq = r >> 68 & 0xFFF
    rand = r & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    return _fmt(value)


def is_uuid7(value: str) -> bool:
    """True for a lowercase, canonical UUIDv7 string."""
    return bool(UUIDV7_RE.match(value))
