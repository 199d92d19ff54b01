"""One declaration per route: path, method, handler, who may call it, and its API document.

Every route of the binding is an :class:`OJSRoute` made with :func:`route`, so the roles that
may call it and its request/response schemas sit next to its path in the route table of its
module. The route checks the caller's roles before its handler runs (see :mod:`ojs_http.auth`),
and :mod:`ojs_http.openapi` builds the served OpenAPI document from the same declarations. A
test enumerates the app's routes and fails on any that is not an ``OJSRoute``, so a route
cannot be added without saying who may call it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send

from ojs_core.logcontext import log_context

from .access import ROUTE_KEY
from .auth import ForbiddenError, Role, UnauthorizedError, bearer_token, roles_of
from .dashboard.session import session_roles

__all__ = [
    "ADMIN",
    "ANY_ROLE",
    "METRICS",
    "PRODUCER",
    "PUBLIC",
    "WORKER",
    "Access",
    "Doc",
    "OJSRoute",
    "OJSWebSocketRoute",
    "Param",
    "authorize",
    "route",
]

Schema = Mapping[str, Any]


@attrs.frozen
class Access:
    """Who may call a route: nobody needs a key (``public``), or a caller holding one of
    ``roles`` (``admin`` always may). ``public_setting`` names an :class:`HttpSettings` flag
    that, when true, makes the route public (``/metrics``)."""

    roles: frozenset[Role] = frozenset()
    public: bool = False
    public_setting: str | None = None

    def is_public(self, settings: object) -> bool:
        """Whether this route needs no credentials under ``settings``."""
        if self.public:
            return True
        return self.public_setting is not None and bool(
            getattr(settings, self.public_setting, False)
        )

    def role_names(self) -> list[str]:
        """The roles that may call the route, ``admin`` included; empty when public."""
        if self.public:
            return []
        return sorted({r.value for r in self.roles} | {Role.ADMIN.value})


PUBLIC = Access(public=True)
#: Any authenticated caller: producer, worker or admin.
ANY_ROLE = Access(frozenset({Role.PRODUCER, Role.WORKER}))
PRODUCER = Access(frozenset({Role.PRODUCER}))
WORKER = Access(frozenset({Role.WORKER}))
ADMIN = Access()
#: ``/metrics``: public while ``HttpSettings.metrics_public`` (the default), else any role.
METRICS = Access(frozenset({Role.PRODUCER, Role.WORKER}), public_setting="metrics_public")


@attrs.frozen
class Param:
    """A query parameter of a route's document."""

    name: str
    schema: Schema
    description: str = ""


@attrs.frozen
class Doc:
    """A route's OpenAPI operation: a summary, the request body, query parameters and the
    success responses (status to body schema). Error responses are added for every route.
    ``media_type``: the success responses' one media type, when not the negotiated JSON ones.
    ``in_document``: whether the route is an operation of the OpenAPI document; false only for
    routes that are not part of the API (the files of the reference page, ``/ojs/docs``)."""

    summary: str
    body: Schema | None = None
    body_required: bool = True
    query: tuple[Param, ...] = ()
    responses: Mapping[int, Schema] = attrs.field(factory=dict)
    path_params: Mapping[str, Schema] = attrs.field(factory=dict)
    media_type: str | None = None
    in_document: bool = True


async def authorize(request: Request, access: Access) -> bool:
    """Raise 401 or 403 unless the caller may use a route with ``access``; whether a
    dashboard session cookie is what authorised it.

    Nothing is checked when the app has no authenticator (an open server). A request without
    credentials may be authorised by a dashboard session cookie on the routes the dashboard
    uses (:mod:`ojs_http.dashboard.session`).
    """
    state = request.app.state
    authenticate = getattr(state, "authenticate", None)
    if authenticate is None or access.is_public(state.settings):
        return False
    roles = await roles_of(authenticate, request)
    given = bearer_token(request) is not None
    by_session = False
    if not roles and not given:
        roles = session_roles(request)
        by_session = bool(roles)
    if not roles:
        raise UnauthorizedError(
            "the credentials are not valid" if given else "authentication required",
            token_given=given,
        )
    if Role.ADMIN in roles or roles & access.roles:
        return by_session
    needed = " or ".join(access.role_names())
    held = ", ".join(sorted(r.value for r in roles))
    raise ForbiddenError(
        f"{request.method} {request.url.path} needs the {needed} role (the caller has {held})",
        details={"required_roles": access.role_names()},
    )


class OJSRoute(Route):
    """A Starlette route that knows who may call it and how it is documented."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        method: str,
        access: Access,
        doc: Doc,
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.access = access
        self.doc = doc
        #: Routes whose ``{job_id}`` names a job bind it to the log lines of the request.
        self.job_param = "job_id" if "{job_id}" in path else None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the caller's roles, then run the handler (a wrong method is still a 405)."""
        # The template, not the raw path, labels the request's metrics and access-log line.
        scope[ROUTE_KEY] = self.path
        allowed = self.methods is not None and scope["method"] in self.methods
        if allowed and await authorize(Request(scope, receive), self.access):
            send = _no_store(send)
        if self.job_param is None:
            await super().handle(scope, receive, send)
            return
        with log_context(job_id=scope["path_params"].get(self.job_param)):
            await super().handle(scope, receive, send)


def _no_store(send: Send) -> Send:
    """``send`` with ``Cache-Control: no-store`` on the response: what a dashboard session
    reads (jobs, arguments, errors) stays out of the browser's caches, as its pages do."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k != b"cache-control"]
            message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
        await send(message)

    return sending


def route(
    method: str, path: str, endpoint: Callable[..., Any], access: Access, doc: Doc
) -> OJSRoute:
    """Declare one route: ``route("POST", "/ojs/v1/jobs", enqueue, PRODUCER, Doc(...))``."""
    return OJSRoute(path, endpoint, method=method, access=access, doc=doc)


class OJSWebSocketRoute(WebSocketRoute):
    """A WebSocket route that knows who may call it (checked on the handshake: a caller who
    may not is refused before the connection is accepted, which the server answers with 403).
    Not in the OpenAPI document, which has no WebSockets; ``docs/events.md`` describes it."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, access: Access, summary: str
    ) -> None:
        super().__init__(path, endpoint)
        self.method = "GET"
        self.access = access
        self.summary = summary

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the caller's roles, then run the handler."""
        # ``authorize`` reads the request line; the handshake is a GET.
        request = Request({**scope, "type": "http", "method": "GET"}, receive)
        try:
            await authorize(request, self.access)
        except (UnauthorizedError, ForbiddenError):
            await send({"type": "websocket.close", "code": 1008})
            return
        await super().handle(scope, receive, send)
