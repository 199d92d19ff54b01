"""Checks of request fields shared by the unary and the streaming RPCs."""

from __future__ import annotations

from ojs_core.errors import ValidationError
from ojs_core.limits import MAX_ID_LENGTH

__all__ = ["bounded_id", "required"]


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
