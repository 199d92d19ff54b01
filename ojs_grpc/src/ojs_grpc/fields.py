"""Checks of request fields shared by the unary and the streaming RPCs."""

from __future__ import annotations

from ojs_core.errors import ValidationError
from ojs_core.limits import MAX_ID_LENGTH

__all__ = ["bounded_id", "required", "worker_id_of"]


def bounded_id(value: str, path: str) -> str:
    """An optional id or name (``""``: none), at most ``MAX_ID_LENGTH`` characters: a longer
    one could not be echoed back in an error's trailers."""
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"must be at most {MAX_ID_LENGTH} characters", path=path)
    return value


def required(value: str, path: str) -> str:
    """A required id or name, at most ``MAX_ID_LENGTH`` characters."""
    if not value:
        raise ValidationError("is required", path=path)
    return bounded_id(value, path)


def worker_id_of(value: str) -> str | None:
    """A request's ``worker_id`` (empty: none), at most ``MAX_ID_LENGTH`` (256) characters
    as over HTTP."""
    return bounded_id(value, "worker_id") or None
