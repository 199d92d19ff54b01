"""What every RPC does around its handler: authorization, the request id, error mapping."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

import grpc

from ojs_core.errors import OJSError
from ojs_core.logcontext import log_context

from .auth import TokenAuthenticator, authorize
from .errors import status_of

__all__ = ["Context", "HasAuth", "request_id_of", "rpc"]

log = logging.getLogger("ojs.grpc")

#: A grpc.aio servicer context (of any request and response type).
Context = grpc.aio.ServicerContext[Any, Any]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_REQUEST_ID = "x-ojs-request-id"


class HasAuth(Protocol):
    """A servicer: it holds the authenticator its RPCs check."""

    authenticate: TokenAuthenticator | None


class _Internal(OJSError):
    code = "internal_error"
    status = 500


def request_id_of(metadata: Any) -> str | None:
    """The client's ``x-ojs-request-id`` (at most 256 printable characters), else ``None``."""
    for key, value in metadata or ():
        if key == _REQUEST_ID and isinstance(value, str) and 0 < len(value) <= 256:
            return value if value.isprintable() else None
    return None


def rpc(fn: F) -> F:
    """Wrap a servicer method named after its RPC: check the caller's roles, echo the
    ``x-ojs-request-id`` in the response metadata, and turn an :class:`OJSError` into its
    gRPC status (anything else is logged and answered ``INTERNAL``)."""
    method = fn.__name__

    @functools.wraps(fn)
    async def handler(self: HasAuth, request: Any, context: Context) -> Any:
        metadata = context.invocation_metadata() or ()
        request_id = request_id_of(metadata)
        try:
            await authorize(self.authenticate, method, metadata)
            if request_id is not None:
                await context.send_initial_metadata(((_REQUEST_ID, request_id),))
            with log_context(request_id=request_id):
                return await fn(self, request, context)
        except OJSError as exc:
            error: OJSError = exc
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", method)
            error = _Internal("internal server error")
        status = status_of(error, request_id)
        await context.abort(status.code, status.details, status.trailing_metadata)

    return cast(F, handler)
