"""The schema registry extension (``spec/ojs-schema-registry.md``): JSON Schemas of job ``args``
by job type and SemVer version, checked when jobs are enqueued.

A schema is registered under a URI (the official SDK names schemas by URI; a registration
without one gets ``urn:ojs:schema:{type}:{version}``) for a job type and version. A job is
checked against the schema its ``schema`` field names (a URI; a URI nobody registered checks
nothing), else the one of its ``version`` (top level or ``meta.version``, job versioning), else
its type's latest version. What a mismatch does is the registry's mode:
``strict`` refuses the job (422 ``validation_error``, each failing path listed), ``warn``
(the spec's default) stores it and answers with ``warnings``, ``off`` only stores schemas.

Registering a version that breaks the previous one (a required field added, a field removed or
retyped, a constraint narrowed, ``additionalProperties`` closed) without a major bump is
refused with the breaking changes listed (§8). Validation uses the ``jsonschema`` library
(draft 2020-12) made safe against hostile schemas (:mod:`ojs_core.json_schema`: no remote
``$ref``, bounded depth, RE2 patterns): ``pip install "ojs-core[schemas]"``.

Schemas are read through a per-process cache that is refreshed at most every
``cache_s`` seconds (2 by default): a schema registered through another replica applies here
within that time; registrations through this process apply at once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from .errors import ConflictError, NotFoundError, OJSError, UnsupportedError, ValidationError
from .json_schema import args_problems, compile_validator, schema_problem
from .model import Job
from .timeutil import format_ts, parse_ts

__all__ = [
    "MODES",
    "ArgsSchemaError",
    "SchemaRecord",
    "SchemaRegistry",
    "SchemaStore",
    "breaking_changes",
    "semver_key",
]

MODES = ("strict", "warn", "off")
#: The largest schema document accepted, in bytes of its JSON text.
MAX_SCHEMA_BYTES = 256 * 1024
#: The longest version string (SemVer sets no bound; huge numbers cost time to compare).
MAX_VERSION_CHARS = 64
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
#: A job version as job versioning writes it: major.minor.
_JOB_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\Z")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]{1,500}$")


@attrs.frozen(kw_only=True)
class SchemaRecord:
    """One registered schema."""

    uri: str
    job_type: str
    version: str
    schema: dict[str, Any]
    created_at: datetime

    def to_wire(self) -> dict[str, Any]:
        """The spec's shape (``job_type``) and the SDK's (``uri``, ``type``) at once."""
        return {
            "uri": self.uri,
            "job_type": self.job_type,
            "type": self.job_type,
            "version": self.version,
            "schema": self.schema,
            "created_at": format_ts(self.created_at),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SchemaRecord:
        """The stored form back (``to_wire``'s output)."""
        return cls(
            uri=data["uri"],
            job_type=data["job_type"],
            version=data["version"],
            schema=dict(data["schema"]),
            created_at=parse_ts(data["created_at"]),
        )


@runtime_checkable
class SchemaStore(Protocol):
    """Optional backend capability: where the registry keeps its schemas (durably, shared by
    every process on the backend). Registries are small: listing returns them all."""

    async def put_schema(self, record: SchemaRecord) -> bool:
        """Store ``record`` unless its URI is taken; ``False`` if it was."""
        ...

    async def list_schemas(self) -> list[SchemaRecord]:
        """Every stored schema."""
        ...

    async def delete_schema(self, uri: str) -> bool:
        """Remove one; ``False`` if unknown."""
        ...


class ArgsSchemaError(OJSError):
    """``args`` do not match the job's registered schema (strict mode)."""

    code = "validation_error"
    status = 422
    error_type = "validation_error"


def semver_key(version: str) -> tuple[Any, ...]:
    """SemVer precedence as a sort key (a pre-release sorts before its release)."""
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a SemVer version")
    major, minor, patch, pre = match.groups()
    if pre is None:
        tail: tuple[Any, ...] = ((1,),)
    else:
        parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        tail = ((0, parts),)
    return (int(major), int(minor), int(patch), *tail)


def breaking_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What ``new`` breaks of ``old`` (§8.2), for the top-level object's properties."""
    changes: list[str] = []
    old_props = old.get("properties") or {}
    new_props = new.get("properties") or {}
    if not isinstance(old_props, Mapping) or not isinstance(new_props, Mapping):
        return changes
    for name in sorted(set(new.get("required") or ()) - set(old.get("required") or ())):
        changes.append(f"Required field '{name}' was added")
    for name in sorted(set(old_props) - set(new_props)):
        changes.append(f"Field '{name}' was removed")
    for name in sorted(set(old_props) & set(new_props)):
        before, after = old_props[name], new_props[name]
        if not isinstance(before, Mapping) or not isinstance(after, Mapping):
            continue
        if "type" in before and before.get("type") != after.get("type"):
            changes.append(
                f"Field '{name}' changed type from {before['type']} to {after.get('type')}"
            )
        for key in ("maxLength", "maximum", "maxItems", "exclusiveMaximum"):
            if _narrower(before.get(key), after.get(key), lower=True):
                changes.append(
                    f"Field '{name}': {key} narrowed from {before.get(key)} to {after.get(key)}"
                )
        for key in ("minLength", "minimum", "minItems", "exclusiveMinimum"):
            if _narrower(before.get(key), after.get(key), lower=False):
                changes.append(
                    f"Field '{name}': {key} narrowed from {before.get(key)} to {after.get(key)}"
                )
        if isinstance(before.get("enum"), list):
            gone = [v for v in before["enum"] if v not in (after.get("enum") or before["enum"])]
            if gone:
                changes.append(f"Field '{name}': enum values {gone} were removed")
    if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
        changes.append("additionalProperties was set to false")
    return changes


def _narrower(before: Any, after: Any, *, lower: bool) -> bool:
    numbers = (int, float)
    if after is None or isinstance(after, bool) or not isinstance(after, numbers):
        return False
    if before is None or isinstance(before, bool) or not isinstance(before, numbers):
        return True  # a bound where there was none
    return after < before if lower else after > before


class SchemaRegistry:
    """Registration, lookup and enqueue-time checks over a :class:`SchemaStore`."""

    def __init__(
        self,
        store: object,
        now: Any,
        *,
        mode: str = "warn",
        cache_s: float = 2.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"schema validation mode must be one of {MODES}")
        self.store = store if isinstance(store, SchemaStore) else None
        self.now = now
        self.mode = mode
        self.cache_s = cache_s
        self._cached: list[SchemaRecord] | None = None
        self._read_at = 0.0
        #: The read refreshing the cache, shared by every caller that finds it stale (else
        #: each enqueue in flight at the expiry would read the store).
        self._reading: asyncio.Future[list[SchemaRecord]] | None = None
        #: Bumped by :meth:`forget`: a read that started before does not fill the cache.
        self._generation = 0
        self._validators: dict[tuple[str, datetime, str], Any] = {}

    @property
    def available(self) -> bool:
        """Whether the backend can store schemas."""
        return self.store is not None

    def _require(self) -> SchemaStore:
        if self.store is None:
            raise UnsupportedError("this backend has no schema registry")
        return self.store

    async def records(self, *, fresh: bool = False) -> list[SchemaRecord]:
        """Every schema, from the cache when it is recent."""
        store = self._require()
        if fresh:  # a read that starts now: one already in flight may predate a change
            return await self._read(store)
        cached = self._cached
        if cached is not None and time.monotonic() - self._read_at <= self.cache_s:
            return cached
        reading = self._reading
        if reading is None or reading.done():
            reading = self._reading = asyncio.ensure_future(self._read(store))
        return await asyncio.shield(reading)

    async def _read(self, store: SchemaStore) -> list[SchemaRecord]:
        generation = self._generation
        records = await store.list_schemas()
        if generation == self._generation:
            self._cached, self._read_at = records, time.monotonic()
        return records

    def forget(self) -> None:
        """Drop the cached records (the next read goes to the store) and validators."""
        self._cached = None
        self._generation += 1
        self._validators.clear()

    # -- registration ----------------------------------------------------------------------

    async def register(self, body: Any) -> SchemaRecord:
        """Validate and store a registration (``{job_type | type, version, schema, uri?}``)."""
        record = self._parse(body)
        records = await self.records(fresh=True)
        if any(r.uri == record.uri for r in records) or any(
            r.job_type == record.job_type and r.version == record.version for r in records
        ):
            raise ConflictError(
                f"schema {record.job_type}@{record.version} is already registered",
                details={"uri": record.uri, "job_type": record.job_type, "version": record.version},
            )
        self._check_compatible(record, records)
        if not await self._require().put_schema(record):
            raise ConflictError(
                f"schema {record.uri} is already registered", details={"uri": record.uri}
            )
        self.forget()
        return record

    def _parse(self, body: Any) -> SchemaRecord:
        if not isinstance(body, Mapping):
            raise ValidationError("request body must be a JSON object")
        job_type = body.get("job_type", body.get("type"))
        if not isinstance(job_type, str) or not 0 < len(job_type) <= 255:
            raise ValidationError("must be a job type (1-255 characters)", path="job_type")
        version = body.get("version")
        if (
            not isinstance(version, str)
            or len(version) > MAX_VERSION_CHARS
            or _SEMVER.match(version) is None
        ):
            raise ValidationError("must be a SemVer version such as 1.0.0", path="version")
        schema = body.get("schema")
        if not isinstance(schema, Mapping):
            raise ValidationError("must be a JSON Schema object", path="schema")
        schema = dict(schema)
        from . import jsonio

        if len(jsonio.dumps(schema)) > MAX_SCHEMA_BYTES:
            raise ValidationError(
                f"must be at most {MAX_SCHEMA_BYTES} bytes of JSON", path="schema"
            )
        problem = schema_problem(schema)
        if problem is not None:
            raise ValidationError(f"is not a valid JSON Schema: {problem}", path="schema")
        uri = body.get("uri") or f"urn:ojs:schema:{job_type}:{version}"
        if not isinstance(uri, str) or _URI.match(uri) is None:
            raise ValidationError("must be a URI (scheme:rest, at most 500 characters)", path="uri")
        return SchemaRecord(
            uri=uri, job_type=job_type, version=version, schema=schema, created_at=self.now()
        )

    def _check_compatible(self, record: SchemaRecord, records: Sequence[SchemaRecord]) -> None:
        key = semver_key(record.version)
        older = [
            r for r in records if r.job_type == record.job_type and semver_key(r.version) < key
        ]
        if not older:
            return
        previous = max(older, key=lambda r: semver_key(r.version))
        if key[0] > semver_key(previous.version)[0]:
            return  # a major bump may break anything
        changes = breaking_changes(previous.schema, record.schema)
        if changes:
            raise ValidationError(
                f"Schema version {record.version} introduces breaking changes compared to "
                f"{previous.version}. Use a major version bump ({key[0] + 1}.0.0).",
                status=422,
                code="validation_error",
                details={"breaking_changes": changes, "previous_version": previous.version},
            )

    # -- lookup ---------------------------------------------------------------------------------

    async def find(self, ref: str) -> SchemaRecord:
        """A schema by URI, or a job type's latest version; 404 otherwise."""
        records = await self.records(fresh=True)
        for record in records:
            if record.uri == ref:
                return record
        latest = _latest([r for r in records if r.job_type == ref])
        if latest is None:
            raise NotFoundError("schema", ref)
        return latest

    async def versions(self, job_type: str) -> list[SchemaRecord]:
        """A job type's versions, newest first; 404 when it has none."""
        found = [r for r in await self.records(fresh=True) if r.job_type == job_type]
        if not found:
            raise NotFoundError("schema", job_type)
        return sorted(found, key=lambda r: semver_key(r.version), reverse=True)

    async def delete(self, ref: str, version: str | None = None) -> SchemaRecord:
        """Remove a schema (by URI, or by job type and version)."""
        if version is None:
            record = next((r for r in await self.records(fresh=True) if r.uri == ref), None)
        else:
            record = next(
                (
                    r
                    for r in await self.records(fresh=True)
                    if r.job_type == ref and r.version == version
                ),
                None,
            )
        if record is None or not await self._require().delete_schema(record.uri):
            raise NotFoundError("schema", ref if version is None else f"{ref}@{version}")
        self.forget()
        return record

    # -- enqueue-time checks ----------------------------------------------------------------

    async def check(self, jobs: Sequence[Job]) -> list[list[str]]:
        """Each job's warnings (``warn`` mode); raises :class:`ArgsSchemaError` in ``strict``
        mode for the first job whose ``args`` do not match. Jobs without a schema pass."""
        if self.mode == "off" or self.store is None:
            return [[] for _ in jobs]
        records = await self.records()
        if not records:
            return [[] for _ in jobs]
        out: list[list[str]] = []
        for index, job in enumerate(jobs):
            record = _schema_for(job, records)
            problems = [] if record is None else self._problems(record, job.args)
            if problems and self.mode == "strict":
                details: dict[str, Any] = {
                    "validation_errors": problems,
                    "schema": {"uri": record.uri, "version": record.version} if record else {},
                }
                if len(jobs) > 1:
                    details["index"] = index
                assert record is not None
                raise ArgsSchemaError(
                    f"Job arguments do not match schema for {record.job_type}@{record.version}.",
                    details=details,
                )
            out.append(
                [f"Schema validation warning: {p['path']}: {p['message']}" for p in problems]
            )
        return out

    def _problems(self, record: SchemaRecord, args: Any) -> list[dict[str, str]]:
        # Keyed by the record's identity, not its URI alone: a URI deleted and registered
        # again with another schema must not be checked against the old one.
        key = (record.uri, record.created_at, record.version)
        validator = self._validators.get(key)
        if validator is None:
            if len(self._validators) > 4 * max(len(self._cached or ()), 64):
                self._validators.clear()  # records deleted elsewhere leave theirs behind
            validator = self._validators[key] = compile_validator(record.schema)
        return args_problems(validator, args)


def _latest(records: Sequence[SchemaRecord]) -> SchemaRecord | None:
    return max(records, key=lambda r: semver_key(r.version), default=None)


def _schema_for(job: Job, records: Sequence[SchemaRecord]) -> SchemaRecord | None:
    if job.schema is not None:
        return next((r for r in records if r.uri == job.schema), None)
    same_type = [r for r in records if r.job_type == job.type]
    version = job.extra.get("version", job.meta.get("version"))
    if isinstance(version, str):
        # A version nobody registered checks nothing: another version's schema would refuse
        # jobs that were never meant for it. A job version major.minor (job versioning) is
        # checked against the latest registered major.minor.patch.
        exact = next((r for r in same_type if r.version == version), None)
        if exact is not None or _JOB_VERSION.match(version) is None:
            return exact
        return _latest([r for r in same_type if r.version.startswith(version + ".")])
    return _latest(same_type)
