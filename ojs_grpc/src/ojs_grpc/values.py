"""JSON values, timestamps and durations between protobuf's well-known types and Python.

Protobuf's ``google.protobuf.Value`` holds every number as a double: a number that is a whole
value within ±2^53 comes back as a Python ``int`` (so ``[1, 2]`` sent over gRPC reads back as
``[1, 2]`` over HTTP, not ``[1.0, 2.0]``), any other as a ``float``. A NaN or infinity has no
JSON form and is refused with the field's path, as a client's mistake.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from ojs_core.envelope import MAX_DURATION_MS
from ojs_core.errors import ValidationError
from ojs_core.timeutil import format_ts

__all__ = [
    "dict_to_struct",
    "duration_ms",
    "fill_value",
    "ms_to_duration",
    "struct_to_dict",
    "to_datetime",
    "to_timestamp",
    "value_to_python",
    "values_to_list",
]

_EXACT = 2**53


def value_to_python(value: struct_pb2.Value, path: str) -> Any:
    """The JSON value ``value`` holds (an unset ``Value`` is ``null``)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise ValidationError(
                "must be a finite number (JSON has no NaN or infinity)", path=path
            )
        return int(number) if number.is_integer() and abs(number) <= _EXACT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value, path)
    if kind == "list_value":
        return values_to_list(value.list_value.values, path)
    return None  # null_value, or no kind set


def values_to_list(values: Iterable[struct_pb2.Value], path: str) -> list[Any]:
    """A repeated ``Value`` field as a list; ``path`` names the field (``args``)."""
    return [value_to_python(v, f"{path}[{i}]") for i, v in enumerate(values)]


def struct_to_dict(struct: struct_pb2.Struct, path: str) -> dict[str, Any]:
    """A ``Struct`` as a dict."""
    return {k: value_to_python(v, f"{path}.{k}") for k, v in struct.fields.items()}


def fill_value(target: struct_pb2.Value, value: Any) -> None:
    """Set ``target`` to the JSON value ``value`` (nested objects and arrays included)."""
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int | float):
        target.number_value = float(value)
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, Mapping):
        target.struct_value.update(_jsonable(value))
    elif isinstance(value, list | tuple):
        target.list_value.extend(_jsonable(list(value)))
    else:  # a value a store kept in another type: its text
        target.string_value = str(value)


def dict_to_struct(target: struct_pb2.Struct, data: Mapping[str, Any]) -> None:
    """Copy ``data`` into ``target``."""
    target.update(_jsonable(data))


def _jsonable(value: Any) -> Any:
    """``value`` with anything protobuf's ``Struct.update`` cannot take turned into text."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):  # an in-process caller's value, as the codec writes it
        return format_ts(value)
    return str(value)


def to_timestamp(target: timestamp_pb2.Timestamp, when: datetime) -> None:
    """Set ``target`` to ``when`` (an aware datetime)."""
    target.FromDatetime(when.astimezone(UTC))


def to_datetime(ts: timestamp_pb2.Timestamp, path: str) -> datetime:
    """``ts`` as an aware UTC datetime; one outside protobuf's range (years 1-9999, nanos
    below 10^9) is refused naming ``path``."""
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise ValidationError(
            "must be a valid timestamp (years 1 to 9999, nanos 0 to 999999999)", path=path
        ) from None


def duration_ms(
    duration: duration_pb2.Duration, path: str, *, maximum: int = MAX_DURATION_MS
) -> int:
    """``duration`` in whole milliseconds; a negative one, or one over ``maximum``
    milliseconds (by default the core's bound on every duration, 100 years), is refused
    naming ``path``."""
    if duration.seconds < 0 or duration.nanos < 0:
        raise ValidationError("must not be negative", path=path)
    try:
        ms = int(duration.ToMilliseconds())
    except (ValueError, OverflowError):
        ms = maximum + 1
    if ms > maximum:
        raise ValidationError(f"must be at most {maximum} ms", path=path)
    return ms


def ms_to_duration(target: duration_pb2.Duration, ms: int) -> None:
    """Set ``target`` to ``ms`` milliseconds."""
    target.FromMilliseconds(ms)
