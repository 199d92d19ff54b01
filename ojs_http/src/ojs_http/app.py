"""The ASGI application: ``create_app(backend, settings)`` wraps any backend in the OJS binding."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from ojs_core.backend import Backend
from ojs_core.clock import Clock
from ojs_core.errors import NotFoundError, OJSError, ValidationError
from ojs_core.fanout import EventHub
from ojs_core.noisy_neighbors import NoisyNeighbors
from ojs_core.scheduler import Scheduler
from ojs_core.service import JobService
from ojs_core.tasks import cancel_and_wait
from ojs_core.webhook_store import WebhookStore

from . import apidocs
from .access import RequestObserver, RequestSink
from .auth import ApiKeys, Authenticator
from .metrics_probe import installed as metrics_installed
from .middleware import OJSHeadersMiddleware
from .responses import check_version, error_response
from .routes import routes
from .settings import HttpSettings
from .webhook_runner import WebhookRunner
from .webhook_sender import WebhookSender

__all__ = ["create_app", "lifespan"]

log = logging.getLogger("ojs.http")


class _InternalError(OJSError):
    code = "internal_error"
    status = 500
    retryable = True


class _MethodNotAllowed(OJSError):
    code = "method_not_allowed"
    status = 405


def create_app(
    backend: Backend,
    settings: HttpSettings | None = None,
    *,
    clock: Clock | None = None,
    service: JobService | None = None,
    manage_backend: bool = True,
    auth: ApiKeys | Authenticator | None = None,
    session_keys: ApiKeys | None = None,
) -> Starlette:
    """Build the OJS HTTP app over ``backend``.

    The app's lifespan opens the backend, starts the timer/cron scheduler and, on shutdown,
    stops the scheduler and closes the backend. Pass ``manage_backend=False`` when the host
    application owns the backend's lifecycle (an already-open backend that must stay open).
    ``app.state.service`` is the :class:`JobService` for in-process use.

    ``auth`` decides who may call what (``docs/security.md``): an :class:`ApiKeys` set, or any
    ``authenticate(request) -> role | roles | None`` callable (plain or async) so a host app
    can reuse its own sessions or tokens. Without it every route is open, which is only safe
    on a loopback bind; ``ojs-server`` refuses a public bind without keys.

    ``session_keys``: the API keys whose admin entries may log in to the dashboard
    (``docs/dashboard.md``); by default ``auth`` itself when it is an :class:`ApiKeys`.

    The app may be mounted inside a host ASGI app (``Mount("/jobs-api", app=ojs_app)``): its
    routes then answer under the prefix and ``Location`` headers include it. Starlette does not
    run a mounted app's lifespan, so the host must enter :func:`lifespan` from its own.
    """
    settings = settings or HttpSettings()
    service = service or JobService(
        backend,
        clock=clock,
        default_visibility_ms=settings.default_visibility_timeout_ms,
        limits=settings.limits,
        test_directives=settings.test_directives,
        retention=settings.retention,
        exhausted=settings.exhausted,
        schema_validation=settings.schema_validation,
    )
    scheduler = Scheduler(service, interval=settings.scheduler_interval)
    app_routes = routes(enable_reset=settings.enable_reset)
    if settings.api_docs:
        app_routes.extend(apidocs.routes())
    if settings.dashboard:
        from .dashboard.pages import dashboard_routes

        app_routes.extend(dashboard_routes())
    app_metrics = None
    if settings.metrics and metrics_installed():
        from .metrics import AppMetrics, metrics_route

        app_metrics = AppMetrics(
            service,
            max_types=settings.metrics_max_types,
            max_queues=settings.metrics_max_queues,
        )
        app_routes.append(metrics_route())
    sink: RequestSink | None = app_metrics.observe_request if app_metrics else None
    observing = [Middleware(RequestObserver, sink=sink, access=settings.access_log)]
    webhooks = _webhook_runner(service, settings)
    noisy = NoisyNeighbors(service)
    noisy_task: list[asyncio.Task[None]] = []
    # Started by the first event stream; one backend subscription for all of them.
    hub = EventHub(
        service.backend,
        max_streams=settings.max_event_streams,
        max_pending=settings.event_queue,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # GET /ojs/v1/ready answers 503 until the backend is open and the scheduler runs,
        # and again from the moment shutdown begins (or ojs-server starts draining).
        app.state.phase = "starting"
        if manage_backend:
            await backend.open()
        if settings.run_scheduler:
            scheduler.start()
        if webhooks is not None:
            webhooks.start()
        if settings.run_scheduler and settings.noisy_neighbor_check_s > 0:
            run = app.state.noisy_neighbors.run(settings.noisy_neighbor_check_s)
            noisy_task.append(asyncio.create_task(run, name="ojs-noisy-neighbors"))
        app.state.phase = "ready"
        try:
            yield
        finally:
            app.state.phase = "draining"
            await hub.close()
            await cancel_and_wait(*noisy_task)
            noisy_task.clear()
            if webhooks is not None:
                await webhooks.stop()
            await scheduler.stop()
            if manage_backend:
                await backend.close()

    async def on_ojs_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OJSError)
        return error_response(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            err: OJSError = NotFoundError("route", request.url.path)
        elif exc.status_code == 405:
            err = _MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            err = ValidationError(exc.detail or "bad request")
            err.status = exc.status_code  # type: ignore[misc]
        return error_response(request, err)

    tracing: list[Middleware] = []
    if settings.tracing:
        from ojs_core.tracing import instrument

        from .tracing import TraceContextMiddleware

        if service.tracer is None:
            instrument(service)
        tracing.append(Middleware(TraceContextMiddleware))
    app = Starlette(
        routes=app_routes,
        middleware=[
            Middleware(OJSHeadersMiddleware),
            *tracing,
            # Only when something consumes it: a request costs nothing extra otherwise.
            *(observing if sink is not None or settings.access_log else []),
            Middleware(_VersionCheck),
            Middleware(_Unexpected),
        ],
        exception_handlers={OJSError: on_ojs_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    # /ojs/v1/jobs/ is not a route: answer 404, not a redirect that ends in a 405.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.service = service
    app.state.scheduler = scheduler
    app.state.event_hub = hub
    app.state.webhooks = webhooks
    #: Noisy-neighbour detection (replaceable before start-up, e.g. with other thresholds).
    app.state.noisy_neighbors = noisy
    app.state.authenticate = auth
    if session_keys is None and isinstance(auth, ApiKeys):
        session_keys = auth
    app.state.session_keys = session_keys
    app.state.metrics = app_metrics
    app.state.phase = "starting"
    return app


def _webhook_runner(service: JobService, settings: HttpSettings) -> WebhookRunner | None:
    """The webhooks loops, when enabled and the backend stores webhooks."""
    store = service.backend
    if not settings.webhooks or not isinstance(store, WebhookStore):
        return None
    sender = WebhookSender(
        allow_http=settings.webhooks_allow_http,
        allow_private=settings.webhooks_allow_private,
        timeout_s=settings.webhook_timeout_s,
    )
    return WebhookRunner(
        store,
        sender,
        user_agent=f"ojs-python-webhook/{settings.implementation_version}",
        clock=service.clock,
        schedule=settings.webhook_schedule,
        poll_s=settings.webhook_poll_s,
        concurrency=settings.webhook_concurrency,
        emit=service.emit,
    )


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Run an OJS app's startup and shutdown from a host application's lifespan.

    Starlette never runs the lifespan of a mounted app; enter this instead::

        @contextlib.asynccontextmanager
        async def host_lifespan(host: Starlette) -> AsyncIterator[None]:
            async with ojs_http.lifespan(ojs_app):
                yield

    It opens and closes the backend unless the app was created with ``manage_backend=False``,
    and runs the timer/cron scheduler while the host runs.
    """
    async with app.router.lifespan_context(app):
        yield


class _Unexpected:
    """Answers an unexpected exception with a 500 OJS error and logs it once.

    Starlette's own last-resort handler re-raises after answering, so the ASGI server logs the
    same traceback a second time; this one does not. An error after the response started can
    only be logged: the connection is then closed by the server.
    """

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        started = False

        async def tracking_send(message: dict[str, object]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)  # type: ignore[operator]

        try:
            await self.app(scope, receive, tracking_send)  # type: ignore[operator]
        except Exception:
            request = Request(scope)
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            if started:
                return
            response = error_response(request, _InternalError("internal server error"))
            await response(scope, receive, send)  # type: ignore[arg-type]


class _VersionCheck:
    """Refuses requests that ask for an unsupported ``OJS-Version`` (422 ``unsupported``)."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        # Most requests carry no OJS-Version header: look for it before building a Request
        # (a plain loop: a generator in any() costs several times as much per request).
        if scope["type"] == "http":
            for name, _ in scope["headers"]:  # type: ignore[attr-defined]
                if name == b"ojs-version":
                    request = Request(scope)
                    try:
                        check_version(request)
                    except OJSError as exc:
                        response = error_response(request, exc)
                        await response(scope, receive, send)  # type: ignore[arg-type]
                        return
                    break
        await self.app(scope, receive, send)  # type: ignore[operator]
