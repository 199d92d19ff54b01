"""Who may call which RPC: the HTTP binding's roles, checked from the call's metadata.

A client sends ``authorization: Bearer KEY`` (or the gRPC binding's ``x-ojs-api-key: KEY``).
The server's *authenticator* turns the token into the roles it holds (``producer``, ``worker``,
``admin``) or ``None``; ``ojs-server`` passes the same API keys (and JWT verifier) as HTTP.
Each RPC needs the roles of the HTTP route doing the same thing (:data:`ACCESS`, the table of
``docs/security.md``); ``admin`` may call everything. No or unknown credentials answer
``UNAUTHENTICATED``; a known caller without the role ``PERMISSION_DENIED``. ``grpc.health.v1``
and reflection are other services and stay open, as ``/ojs/v1/health`` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from ojs_core.errors import ForbiddenError, UnauthorizedError

__all__ = [
    "ACCESS",
    "ADMIN",
    "ANY_ROLE",
    "PRODUCER",
    "PUBLIC",
    "WORKER",
    "ForbiddenError",
    "TokenAuthenticator",
    "UnauthorizedError",
    "authorize",
    "token_of",
]

#: What an authenticator returns: the token's roles (names), or ``None`` for "not known".
AuthResult = Collection[str] | None
#: ``authenticate(token) -> roles | None``, plain or async.
TokenAuthenticator = Callable[[str], AuthResult | Awaitable[AuthResult]]

PUBLIC: frozenset[str] = frozenset({"*"})
#: Any authenticated caller.
ANY_ROLE = frozenset({"producer", "worker"})
PRODUCER = frozenset({"producer"})
WORKER = frozenset({"worker"})
ADMIN: frozenset[str] = frozenset()

#: The roles each RPC needs besides ``admin``, mirroring the HTTP route of the same operation.
ACCESS: dict[str, frozenset[str]] = {
    "Manifest": ANY_ROLE,  # GET /ojs/manifest
    "Health": PUBLIC,  # GET /ojs/v1/health
    "Enqueue": PRODUCER,  # POST /ojs/v1/jobs
    "EnqueueBatch": PRODUCER,  # POST /ojs/v1/jobs/batch
    "GetJob": ANY_ROLE,  # GET /ojs/v1/jobs/{id}
    "CancelJob": PRODUCER,  # DELETE /ojs/v1/jobs/{id}
    "Fetch": WORKER,  # POST /ojs/v1/workers/fetch
    "Ack": WORKER,
    "Nack": WORKER,
    "Heartbeat": WORKER,
    "StreamJobs": WORKER,  # the streamed form of fetch
    "StreamEvents": PRODUCER,  # GET /ojs/v1/events/stream
    "ListQueues": ANY_ROLE,  # GET /ojs/v1/queues
    "QueueStats": ANY_ROLE,
    "PauseQueue": ADMIN,  # POST /ojs/v1/queues/{name}/pause
    "ResumeQueue": ADMIN,
    "ListDeadLetter": ADMIN,  # /ojs/v1/dead-letter
    "RetryDeadLetter": ADMIN,
    "DeleteDeadLetter": ADMIN,
    "RegisterCron": PRODUCER,  # /ojs/v1/cron
    "UnregisterCron": PRODUCER,
    "ListCron": PRODUCER,
    "CreateWorkflow": PRODUCER,  # /ojs/v1/workflows
    "GetWorkflow": PRODUCER,
    "CancelWorkflow": PRODUCER,
}

_HINT = (
    "Send the metadata 'authorization: Bearer <key>' (or 'x-ojs-api-key: <key>') with a key "
    "the server knows (see docs/security.md)."
)


def token_of(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The bearer token of ``authorization`` (scheme case-insensitive), else ``x-ojs-api-key``."""
    api_key: str | None = None
    for key, value in metadata:
        if not isinstance(value, str):
            continue
        if key == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif key == "x-ojs-api-key" and value.strip():
            api_key = value.strip()
    return api_key


async def authorize(
    authenticate: TokenAuthenticator | None,
    method: str,
    metadata: Iterable[tuple[str, Any]],
) -> None:
    """Raise unless the caller may call ``method`` (nothing is checked without an
    authenticator: an open server, as HTTP on a loopback bind)."""
    needed = ACCESS[method]
    if authenticate is None or needed is PUBLIC:
        return
    token = token_of(metadata)
    roles: frozenset[str] = frozenset()
    if token is not None:
        result = authenticate(token)
        if inspect.isawaitable(result):
            result = await result
        roles = frozenset(str(r) for r in result or ())
    if not roles:
        message = "the credentials are not valid" if token else "authentication required"
        raise UnauthorizedError(message, hint=_HINT)
    if "admin" in roles or roles & needed:
        return
    allowed = sorted(needed | {"admin"})
    held = ", ".join(sorted(roles))
    raise ForbiddenError(
        f"{method} needs the {' or '.join(allowed)} role (the caller has {held})",
        details={"required_roles": allowed},
    )
