"""Small helpers shared by the route modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from ojs_core.codec import job_to_wire
from ojs_core.errors import ValidationError
from ojs_core.limits import MAX_ID_LENGTH
from ojs_core.logcontext import bind
from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.timeutil import format_ts

__all__ = [
    "body_object",
    "pages",
    "paginated",
    "pagination",
    "prefixed",
    "query_int",
    "service",
    "wire",
    "worker_id_of",
]


def service(request: Request) -> JobService:
    """The app's :class:`JobService`."""
    svc: JobService = request.app.state.service
    return svc


def prefixed(request: Request, path: str) -> str:
    """``path`` (absolute within this app) as the client must request it: with the mount
    prefix (``scope["root_path"]``) when the app is mounted inside another ASGI app."""
    root = str(request.scope.get("root_path") or "").rstrip("/")
    return root + path


def body_object(body: Any) -> Mapping[str, Any]:
    """Require a JSON object at the top level."""
    if not isinstance(body, Mapping):
        raise ValidationError("request body must be a JSON object")
    return body


def worker_id_of(body: Mapping[str, Any], *, required: bool = False) -> str | None:
    """The request's ``worker_id`` (at most 256 characters), or ``None`` when absent."""
    wid = body.get("worker_id")
    if wid is None:
        if required:
            raise ValidationError("is required", path="worker_id")
        return None
    if not isinstance(wid, str) or not wid or len(wid) > MAX_ID_LENGTH:
        raise ValidationError(
            "must be a non-empty string (at most 256 characters)", path="worker_id"
        )
    bind(worker_id=wid)
    return wid


def query_int(request: Request, name: str, default: int, *, minimum: int, maximum: int) -> int:
    """An integer query parameter within bounds, or a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError("must be an integer", path=name) from None
    if not minimum <= value <= maximum:
        raise ValidationError(f"must be between {minimum} and {maximum}", path=name)
    return value


def pages(request: Request) -> tuple[int, int]:
    """The admin-style ``page`` (from 1) and ``per_page`` (1-100, default 20) of a listing."""
    page = query_int(request, "page", 1, minimum=1, maximum=10**7)
    per_page = query_int(request, "per_page", 20, minimum=1, maximum=100)
    return page, per_page


def paginated(items: list[Any], total: int, page: int, per_page: int) -> dict[str, Any]:
    """An admin-style listing body: ``{items, pagination: {total, page, per_page}}``."""
    return {"items": items, "pagination": {"total": total, "page": page, "per_page": per_page}}


def wire(job: Job, **extra: Any) -> dict[str, Any]:
    """A job's wire form with response-only fields added."""
    out = job_to_wire(job)
    out.update(extra)
    return out


def pagination(total: int, limit: int, offset: int) -> dict[str, Any]:
    """The binding's pagination block (offset-based cursors)."""
    has_more = offset + limit < total
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": has_more,
        "next_cursor": str(offset + limit) if has_more else None,
    }


def ack_body(job: Job) -> dict[str, Any]:
    """The ACK response: the binding's fields, the suite's ``id`` and the whole job."""
    return {
        "acknowledged": True,
        "id": job.id,
        "job_id": job.id,
        "state": job.state.value,
        "completed_at": format_ts(job.completed_at) if job.completed_at else None,
        "job": wire(job),
    }
