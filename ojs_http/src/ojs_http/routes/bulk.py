"""``/ojs/v1/jobs/bulk``: the bulk-operations extension (enqueue, cancel, retry, delete many
jobs with a result per item; :mod:`ojs_core.bulk` holds the rules)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.bulk import OPERATIONS

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, PRODUCER, Access, Doc, route
from ._common import service
from .jobs import _block_timeout, _check_size
from .tenants import tenant_header

__all__ = ["routes"]


def _handler(operation: str) -> Any:
    async def handle(request: Request) -> Response:
        body = await read_json(request)
        header = request.headers.get("idempotency-key")
        result = await service(request).bulk.run(
            operation,
            body,
            idempotency_key=header,
            block_s=_block_timeout(request) if operation == "enqueue" else 0.0,
            check_item=(lambda i, envelope: _check_size(request, envelope, i))
            if operation == "enqueue"
            else None,
            tenant=tenant_header(request),
        )
        headers = {"X-OJS-Batch-Size": str(result.size)}
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return json_response(request, result.body, result.status, headers)

    handle.__name__ = f"bulk_{operation}"
    handle.__doc__ = f"Bulk {operation} (bulk-operations extension)."
    return handle


_ATOMICITY = {"type": "string", "enum": ["atomic", "partial"]}
_KEY = {"type": "string", "minLength": 1, "maxLength": 256}
_ERROR_ITEM = S.ANY_OBJECT
_ENQUEUE_ITEM = S.obj(
    {"index": S.INT, "status": {"type": "string", "enum": ["created", "duplicate", "failed"]}},
    {
        "job": S.obj({"id": S.STR, "type": S.STR, "queue": S.STR, "state": S.STR}),
        "error": _ERROR_ITEM,
        "warnings": S.array(S.STR),
    },
)
_ENQUEUE_RESULT = S.obj(
    {
        "total": S.INT,
        "succeeded": S.INT,
        "failed": S.INT,
        "items": S.array(_ENQUEUE_ITEM),
    },
    {"atomicity": _ATOMICITY},
)
_FILTER = S.obj(
    {},
    {
        "type": S.STR,
        "queue": S.STR,
        "state": S.array(S.STR, minItems=1),
        "enqueued_before": S.STR,
        "enqueued_after": S.STR,
        "priority": S.INT,
        "meta": S.ANY_OBJECT,
    },
)


def _change_result(done: str) -> dict[str, Any]:
    item = S.obj(
        {
            "index": S.INT,
            "job_id": S.STR,
            "status": {"type": "string", "enum": [done, "skipped"]},
        },
        {"reason": S.STR, "error": _ERROR_ITEM},
    )
    return S.obj(
        {
            "total_matched": S.INT,
            done: S.INT,
            "skipped": S.INT,
            "total": S.INT,
            "succeeded": S.INT,
            "failed": S.INT,
            "items": S.array(item),
        },
        {"has_more": S.BOOL},
    )


def _change_body(with_filter: bool) -> dict[str, Any]:
    optional: dict[str, Any] = {
        "job_ids": S.array(S.STR, minItems=1),
        "atomicity": {"type": "string", "enum": ["partial"]},
        "idempotency_key": _KEY,
    }
    if with_filter:
        optional["filter"] = _FILTER
    return S.obj({}, optional)


_DONE = {"cancel": "cancelled", "retry": "retried", "delete": "deleted"}
#: The roles of the matching single-job routes: cancel is ``DELETE /jobs/{id}`` (producer);
#: retrying and deleting a discarded job are the dead-letter routes (admin).
_ROLES: dict[str, Access] = {"cancel": PRODUCER, "retry": ADMIN, "delete": ADMIN}
_SUMMARY = {
    "cancel": "Cancel many jobs by id or filter (scheduled, available, pending, retryable)",
    "retry": "Retry many discarded or retryable jobs by id or filter",
    "delete": "Delete many finished jobs (completed, cancelled, discarded) by id",
}


def _routes() -> list[Any]:
    out = [
        route(
            "POST",
            "/ojs/v1/jobs/bulk",
            _handler("enqueue"),
            PRODUCER,
            Doc(
                "Enqueue many jobs, atomically or each on its own, with a result per job "
                "(201 all, 207 some, 422 none or an atomic request refused; 413 over the limit)",
                body=S.obj(
                    {"jobs": S.array(S.ANY_OBJECT, minItems=1)},
                    {"atomicity": _ATOMICITY, "idempotency_key": _KEY},
                ),
                responses={201: _ENQUEUE_RESULT, 207: _ENQUEUE_RESULT, 422: _ENQUEUE_RESULT},
            ),
        )
    ]
    for operation in OPERATIONS[1:]:
        result = _change_result(_DONE[operation])
        out.append(
            route(
                "POST",
                f"/ojs/v1/jobs/bulk/{operation}",
                _handler(operation),
                _ROLES[operation],
                Doc(
                    _SUMMARY[operation] + " (200 all, 207 some, 422 none)",
                    body=_change_body(operation != "delete"),
                    responses={200: result, 207: result, 422: result},
                ),
            )
        )
    return out


routes = _routes()
