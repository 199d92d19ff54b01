"""JSON Schema checks that hostile schemas cannot turn against the server.

Schemas come from clients (any key allowed to register them), so before one is stored it must
be checkable in bounded time and without side effects:

- **No network.** ``$ref`` must point inside the document (``#...``); the validators are built
  with a registry whose retrieval always fails, so nothing is ever fetched (jsonschema's
  default would ``urlopen`` a remote ``$ref`` on the event loop, with no timeout).
- **Bounded depth.** At most :data:`MAX_DEPTH` levels of nesting (deeper schemas make the
  validator recurse past Python's limit).
- **Linear-time patterns.** ``pattern`` and ``patternProperties`` run on RE2
  (``google-re2``), which has no catastrophic backtracking; a pattern RE2 cannot compile
  (backreferences, look-around) is refused at registration.
- **Evaluable.** The schema is tried on a few values at registration: an unresolvable or
  endlessly recursive ``$ref`` is refused then, not found by the first enqueue.

Needs ``pip install "ojs-core[schemas]"`` (jsonschema and google-re2).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import UnsupportedError

__all__ = ["MAX_DEPTH", "args_problems", "compile_validator", "schema_problem"]

#: The deepest nesting of objects and arrays a schema may have.
MAX_DEPTH = 32
#: At most this many problems are reported for one job.
MAX_PROBLEMS = 20
_PROBES: tuple[Any, ...] = (None, [], {}, "", 0, [None], {"": None})


def _imports() -> Any:
    try:
        import jsonschema
        import re2  # noqa: F401
        import referencing  # noqa: F401
    except ImportError:  # pragma: no cover - the extra is missing
        raise UnsupportedError(
            'the schema registry needs jsonschema and google-re2: pip install "ojs-core[schemas]"'
        ) from None
    return jsonschema


@functools.lru_cache(maxsize=1024)
def _re2(pattern: str) -> Any:
    import re2

    return re2.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and _re2(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _re2(pattern).search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@functools.cache
def _validator_class() -> Any:
    jsonschema = _imports()
    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        {"pattern": _pattern, "patternProperties": _pattern_properties},
    )


def _no_retrieval(uri: str) -> Any:
    raise LookupError(f"remote references are not fetched: {uri}")


def compile_validator(schema: Mapping[str, Any]) -> Any:
    """A draft 2020-12 validator of ``schema`` that fetches nothing and runs RE2 patterns."""
    from referencing import Registry

    registry = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]  # an attrs alias
    return _validator_class()(dict(schema), registry=registry)


def _audit(node: Any, depth: int = 0) -> str | None:
    """The first structural reason to refuse ``node``: depth, a remote ``$ref``, a pattern."""
    if depth > MAX_DEPTH:
        return f"nests deeper than {MAX_DEPTH} levels"
    if isinstance(node, Mapping):
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                return f"{key} {ref!r} points outside the schema (only '#...' references)"
        patterns = []
        if isinstance(node.get("pattern"), str):
            patterns.append(node["pattern"])
        if isinstance(node.get("patternProperties"), Mapping):
            patterns.extend(node["patternProperties"])
        for pattern in patterns:
            try:
                _re2(pattern)
            except Exception as exc:  # re2.error, or TypeError for odd input
                return f"pattern {pattern!r} is not supported (RE2): {exc}"
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        problem = _audit(child, depth + 1)
        if problem is not None:
            return problem
    return None


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` cannot be registered, or ``None`` when it can."""
    jsonschema = _imports()
    problem = _audit(schema)
    if problem is not None:
        return problem
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        return str(exc.message)
    except RecursionError:
        return "is too deeply nested"
    try:
        validator = compile_validator(schema)
        for probe in _PROBES:
            for _ in validator.iter_errors(probe):
                pass
    except RecursionError:
        return "cannot be evaluated: its references recurse without end"
    except Exception as exc:  # unresolvable $ref and the like
        return f"cannot be evaluated: {exc}"
    return None


def args_problems(validator: Any, args: Any) -> list[dict[str, str]]:
    """At most :data:`MAX_PROBLEMS` ``{path, message}`` of ``args`` against ``validator``."""
    try:
        errors = list(itertools.islice(validator.iter_errors(args), 10 * MAX_PROBLEMS))
    except (RecursionError, Exception) as exc:  # a schema that slipped past registration
        return [{"path": "args", "message": f"the schema could not be evaluated: {exc}"}]
    problems = []
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])[:MAX_PROBLEMS]:
        path = "args" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
        )
        problems.append({"path": path, "message": error.message})
    return problems
