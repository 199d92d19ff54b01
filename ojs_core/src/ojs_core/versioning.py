"""Job versioning (``ojs-job-versioning.md``, experimental 0.1.0): the rules, in one place.

* **A job's version** (§5) is its ``version`` field, ``major.minor`` (a third, patch part is
  accepted for the schema registry's SemVer names and ignored by routing), or the ``@version``
  suffix of its ``type`` (``invoice.generate@2.0``: the suffix is taken off the type, and the
  ``version`` field wins when both are given). It is kept in the job's ``extra`` (an envelope
  field returned as sent), so the record format does not change.
* **A worker's declaration** (§8.1) maps job types to version ranges: ``"*"`` (any), ``"2.0"``
  (exactly 2.0), ``">=1.0 <3.0"`` / ``">=1.0, <3.0"`` (every clause holds; operators ``>=``,
  ``>``, ``<=``, ``<``, ``=``). A worker declares at fetch, or in its heartbeats (kept on its
  record and used by the fetches that do not declare).
* **Routing** (§8.2): a versioned job is handed only to a fetch whose declaration accepts its
  version for its type; a type the declaration does not name is accepted at any version, and a
  fetch without a declaration takes every job. An **unversioned job is routable to every
  worker** (§5.2, §15.4). A job no fetch accepts stays ``available`` (VER-005).

Backends route without reading the jobs they cannot hand out through **lanes**: every
versioned job belongs to the lane ``type@major.minor`` (:func:`lane_of`), and
:class:`Declaration.accepts_lane` says which lanes a fetch may look at (the ``lanes``
attribute of the claim's ``activate`` function, see :data:`ojs_core.backend.ActivateFn`).
The claim's ``activate`` refuses incompatible jobs as well, so a backend that knows nothing of
lanes still routes correctly, at the cost of skipping them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import ValidationError

__all__ = [
    "MAX_DECLARED_TYPES",
    "SPEC_VERSION",
    "URI",
    "Declaration",
    "VersionRange",
    "declaration_of",
    "job_version",
    "lane_of",
    "manifest_entry",
    "parse_declaration",
    "parse_version",
    "split_type",
    "stored_declaration",
    "version_key",
]

URI = "urn:ojs:ext:experimental:job-versioning"
SPEC_VERSION = "0.1.0"
#: Types one declaration may name, and the longest range text.
MAX_DECLARED_TYPES = 1000
MAX_RANGE_CHARS = 200
_NUM = r"(0|[1-9]\d{0,8})"
VERSION_RE = re.compile(rf"^{_NUM}\.{_NUM}(?:\.{_NUM})?\Z")
_CLAUSE = re.compile(r"^(>=|<=|==|=|>|<)?\s*(\S+)\Z")
_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "=": lambda a, b: a == b,
}

Key = tuple[int, int]


def version_key(version: str) -> Key:
    """``(major, minor)`` of a valid version (the patch part, if any, is ignored)."""
    match = VERSION_RE.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a job version")
    return int(match.group(1)), int(match.group(2))


def parse_version(raw: Any, path: str) -> str:
    """A job version as sent, checked: ``major.minor`` (or ``major.minor.patch``)."""
    if not isinstance(raw, str) or VERSION_RE.match(raw) is None:
        raise ValidationError("must be a version major.minor such as 2.0", path=path)
    return raw


def split_type(raw_type: str) -> tuple[str, str | None]:
    """``("invoice.generate", "2.0")`` for ``"invoice.generate@2.0"``; the type alone
    otherwise. The version is not checked here (see :func:`parse_version`)."""
    base, sep, version = raw_type.partition("@")
    return (base, version) if sep else (raw_type, None)


def job_version(job: Any) -> str | None:
    """The job's version (``None``: unversioned)."""
    version = job.extra.get("version")
    return version if isinstance(version, str) and VERSION_RE.match(version) else None


def lane_of(job: Any) -> str | None:
    """The lane of a versioned job, ``type@major.minor``; ``None`` for an unversioned one."""
    version = job_version(job)
    if version is None:
        return None
    major, minor = version_key(version)
    return f"{job.type}@{major}.{minor}"


@attrs.frozen
class VersionRange:
    """A version constraint: every clause must hold; no clause means any version."""

    source: str
    clauses: tuple[tuple[str, Key], ...] = ()

    @classmethod
    def parse(cls, text: Any, path: str) -> VersionRange:
        """``"*"``, ``"2.0"``, ``">=1.0 <3.0"`` or ``">=1.0, <3.0"``; 400 naming ``path``."""
        if not isinstance(text, str) or len(text) > MAX_RANGE_CHARS:
            raise ValidationError(
                f"must be a version range such as '>=1.0 <2.0' (at most {MAX_RANGE_CHARS} "
                "characters)",
                path=path,
            )
        stripped = text.strip()
        if stripped in ("", "*"):
            return cls("*")
        # ">= 1.0" is one clause: glue an operator to the version that follows it.
        glued = re.sub(r"(>=|<=|==|=|>|<)\s+", r"\1", stripped)
        clauses: list[tuple[str, Key]] = []
        for part in re.split(r"[\s,]+", glued):
            if not part:
                continue
            match = _CLAUSE.match(part)
            version = match.group(2) if match else ""
            if match is None or VERSION_RE.match(version) is None:
                raise ValidationError(
                    f"{part!r} is not a version clause (>=, >, <=, <, = and major.minor)",
                    path=path,
                )
            op = match.group(1) or "="
            clauses.append(("=" if op == "==" else op, version_key(version)))
        return cls(stripped, tuple(clauses))

    def contains(self, key: Key) -> bool:
        """Whether version ``key`` satisfies every clause."""
        return all(_OPS[op](key, bound) for op, bound in self.clauses)


@attrs.frozen
class Declaration:
    """The versions a worker handles, by job type (types not named: any version)."""

    ranges: Mapping[str, VersionRange]

    def accepts(self, job: Any) -> bool:
        """Whether a fetch with this declaration may be handed ``job``."""
        version = job_version(job)
        if version is None:
            return True  # unversioned: routable to every worker (§15.4)
        rng = self.ranges.get(job.type)
        return rng is None or rng.contains(version_key(version))

    def accepts_lane(self, lane: str) -> bool:
        """Whether the jobs of ``lane`` (``type@major.minor``) may be handed out."""
        job_type, _, version = lane.rpartition("@")
        rng = self.ranges.get(job_type)
        if rng is None:
            return True
        try:
            return rng.contains(version_key(version))
        except ValueError:
            return False

    def to_wire(self) -> dict[str, str]:
        """``{type: range}`` as declared."""
        return {t: r.source for t, r in self.ranges.items()}


def parse_declaration(raw: Any, path: str) -> Declaration:
    """A declaration in either form: the spec's ``[{"type", "versions"}, ...]`` (``handlers``)
    or ``{"type": "range", ...}``. An entry without ``versions`` means ``"*"``."""
    pairs: list[tuple[Any, Any, str]] = []
    if isinstance(raw, Mapping):
        pairs = [(t, v, f"{path}.{t}") for t, v in raw.items()]
    elif isinstance(raw, list):
        for i, entry in enumerate(raw):
            if isinstance(entry, str):
                pairs.append((entry, "*", f"{path}[{i}]"))
                continue
            if not isinstance(entry, Mapping):
                raise ValidationError("must be an object {type, versions}", path=f"{path}[{i}]")
            pairs.append((entry.get("type"), entry.get("versions", "*"), f"{path}[{i}].versions"))
    else:
        raise ValidationError("must be an object {type: range} or an array", path=path)
    if len(pairs) > MAX_DECLARED_TYPES:
        raise ValidationError(f"must name at most {MAX_DECLARED_TYPES} job types", path=path)
    ranges: dict[str, VersionRange] = {}
    for job_type, versions, where in pairs:
        if not isinstance(job_type, str) or not 0 < len(job_type) <= 255:
            raise ValidationError("must name a job type", path=where.removesuffix(".versions"))
        ranges[job_type] = VersionRange.parse(versions, where)
    return Declaration(ranges)


def declaration_of(body: Mapping[str, Any]) -> Declaration | None:
    """The declaration a fetch or heartbeat body carries (``versions``, else ``handlers``),
    or ``None`` when it carries none."""
    for name in ("versions", "handlers"):
        raw = body.get(name)
        if raw is not None:
            return parse_declaration(raw, name)
    return None


def manifest_entry() -> dict[str, Any]:
    """The manifest's ``experimental`` entry: what is implemented of the extension."""
    return {
        "name": "job-versioning",
        "uri": URI,
        "version": SPEC_VERSION,
        "endpoint": "POST /ojs/v1/workers/fetch",
        "declared_at": ["fetch", "heartbeat"],
        "range_operators": [">=", ">", "<=", "<", "="],
        "unversioned_jobs": "any_worker",
        "canary_routing": False,
    }


def stored_declaration(versions: Mapping[str, str] | None) -> Declaration | None:
    """The declaration kept on a worker's record (``WorkerInfo.versions``)."""
    if not versions:
        return None
    try:
        return parse_declaration(dict(versions), "versions")
    except ValidationError:
        return None
