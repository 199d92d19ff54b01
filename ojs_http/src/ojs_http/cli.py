"""``ojs-server``: serve the OJS HTTP binding (Uvicorn or Hypercorn, :mod:`.http_server`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Sequence
from importlib import metadata
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from ojs_core.backend import Backend
from ojs_core.gc_tuning import tune_gc
from ojs_core.plugins import (
    BackendOptions,
    BackendPluginError,
    load_backend,
    redact_url,
    url_scheme,
)

from . import http_server
from .app import create_app, lifespan
from .flags import env_flag
from .grpc_serve import add_grpc_flags, check_grpc_flags, start_grpc, token_authenticator
from .logging_setup import LOG_FORMATS, configure_logging
from .metrics_probe import installed as metrics_installed
from .settings import CONTENT_TYPE_MODES, COOKIE_SECURE_MODES, HttpSettings
from .shutdown_watch import ShutdownWatch
from .startup import (
    add_auth_flags,
    add_limit_flag,
    add_nats_flags,
    add_retention_flags,
    add_webhook_flags,
    authenticator_of,
    build_credentials,
    check_exposure,
    install_key_reload,
    is_loopback,
    limit_settings,
    nats_options,
    nats_storage_options,
    retention_settings,
    webhook_settings,
)

__all__ = ["build_backend", "main", "mounted", "parse_args"]

log = logging.getLogger("ojs.server")
#: Seconds the requests in flight (and gRPC calls) get to finish once a shutdown began.
GRACE_S = 10.0

#: prometheus-client's multiprocess directory (see :func:`_share_metrics`).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags, each with an environment-variable default (shown in ``--help``)."""
    p = argparse.ArgumentParser(
        prog="ojs-server",
        description="Open Job Spec server: the OJS HTTP binding (conformance levels 0-4) over "
        "an embedded or external NATS JetStream, or any installed backend. Every flag has an "
        "environment variable; a flag given on the command line wins. docs/configuration.md "
        "has the details.",
    )
    p.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="check the flags, variables, keys and backend URL, say what would be served, and "
        "exit (0 when ojs-server would start; nothing is opened or bound)",
    )
    env_flag(p, "--host", env="OJS_HOST", default="127.0.0.1", help="bind address")
    env_flag(p, "--port", env="OJS_PORT", default=8080, type=int, help="TCP port")
    env_flag(
        p,
        "--backend",
        env=("OJS_BACKEND", "NATS_URL"),
        default="embedded",
        help="embedded (a private nats-server storing in --data-dir), "
        "nats://host:port[,host:port] (an external server or cluster), "
        "memory, or the URL of any backend an installed plugin registers "
        "(e.g. sqlite:///path/to/db)",
    )
    env_flag(
        p,
        "--data-dir",
        env="OJS_DATA_DIR",
        default=".ojs",
        help="store of the embedded nats-server",
    )
    env_flag(
        p,
        "--nats-replicas",
        env="OJS_NATS_REPLICAS",
        default=1,
        type=int,
        help="replicas of every stream and bucket (3 on a 3-node NATS cluster)",
    )
    env_flag(
        p,
        "--enable-reset",
        env="OJS_ENABLE_RESET",
        action="store_true",
        help="test mode, loopback binds only: serve POST /ojs/v1/admin/reset (wipes all "
        "state) and honour meta.test_directive (for conformance runners)",
    )
    env_flag(
        p,
        "--response-content-type",
        env="OJS_RESPONSE_CONTENT_TYPE",
        default="auto",
        choices=CONTENT_TYPE_MODES,
        help="Content-Type of responses (docs/configuration.md)",
    )
    env_flag(
        p,
        "--default-visibility-timeout-ms",
        env="OJS_DEFAULT_VISIBILITY_TIMEOUT_MS",
        default=1_800_000,
        type=int,
        help="visibility timeout when neither the fetch nor the job sets one",
    )
    env_flag(
        p,
        "--path-prefix",
        env="OJS_PATH_PREFIX",
        default="",
        help="serve the API under this path (e.g. /jobs: /jobs/ojs/v1/...), mounted in a host "
        "app the way an embedding service mounts it; for proxies that route a sub-path here",
    )
    env_flag(
        p,
        "--exhausted-jobs",
        env="OJS_EXHAUSTED_JOBS",
        default="dead_letter",
        choices=["dead_letter", "discard"],
        help="where a job whose retries are exhausted goes when its retry policy does not say "
        "(on_exhaustion): kept in the dead letter for inspection and retry, or discarded",
    )
    env_flag(
        p,
        "--schema-validation",
        env="OJS_SCHEMA_VALIDATION",
        default="warn",
        choices=["strict", "warn", "off"],
        help="a job whose args do not match its registered JSON Schema: refused with 422 "
        "(strict), stored with warnings in the response (warn, the spec's default), or not "
        "checked (off)",
    )
    env_flag(
        p,
        "--workers",
        env="OJS_WORKERS",
        default=1,
        type=int,
        help="server processes sharing the port (SO_REUSEPORT) and the backend, for more than "
        "one core; a backend shared between processes is needed (not memory)",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    env_flag(
        p,
        "--max-event-streams",
        env="OJS_MAX_EVENT_STREAMS",
        default=1000,
        type=int,
        help="SSE streams and WebSocket connections one server process serves at once (503 "
        "beyond); docs/events.md",
    )
    env_flag(
        p,
        "--event-heartbeat",
        env="OJS_EVENT_HEARTBEAT",
        default=15.0,
        type=float,
        help="seconds between the heartbeats of an idle event stream",
    )
    env_flag(
        p,
        "--http-server",
        env="OJS_HTTP_SERVER",
        default="auto",
        choices=list(http_server.SERVERS),
        help="HTTP/1.1 server: Uvicorn with httptools when installed (auto; ojs-http[fast]) "
        "or Hypercorn",
    )
    env_flag(
        p,
        "--loop",
        env="OJS_LOOP",
        default="auto",
        choices=["auto", "asyncio", "uvloop"],
        help="event loop: uvloop when installed (auto) or the standard asyncio one",
    )
    env_flag(
        p,
        "--log-level",
        env="OJS_LOG_LEVEL",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log level printed",
    )
    env_flag(
        p,
        "--log-format",
        env="OJS_LOG_FORMAT",
        default="text",
        choices=LOG_FORMATS,
        help="log lines as text or as JSON objects; both carry the request id, job id, queue "
        "and worker id where there is one",
    )
    env_flag(
        p,
        "--access-log",
        env="OJS_ACCESS_LOG",
        action="store_true",
        help="log one line per request (method, path, status, duration, request id)",
    )
    env_flag(
        p,
        "--tracing",
        env="OJS_TRACING",
        action="store_true",
        help="OpenTelemetry spans of enqueues, joined to the caller's traceparent and stored in "
        "meta.traceparent for workers (needs ojs-http[otel]; configure the SDK and exporter "
        "with opentelemetry-instrument or OTEL_* variables)",
    )
    env_flag(
        p,
        "--no-metrics",
        env="OJS_NO_METRICS",
        action="store_true",
        help="do not serve GET /metrics (served when prometheus-client is installed: the "
        "ojs-http[metrics] extra)",
    )
    env_flag(
        p,
        "--no-api-docs",
        env="OJS_NO_API_DOCS",
        action="store_true",
        help="do not serve the API reference page GET /ojs/docs",
    )
    env_flag(
        p,
        "--metrics-public",
        env="OJS_METRICS_PUBLIC",
        action="store_true",
        help="serve /metrics without a key on a non-loopback bind with authentication (by "
        "default it then needs a key of any role; on a loopback bind it is always public)",
    )
    add_dashboard_flags(p)
    add_grpc_flags(p)
    add_auth_flags(p)
    add_nats_flags(p)
    add_retention_flags(p)
    add_webhook_flags(p)
    add_limit_flag(p)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def add_dashboard_flags(p: argparse.ArgumentParser) -> None:
    """The web dashboard's flags (``docs/dashboard.md``)."""
    g = p.add_argument_group("web dashboard at /ojs/admin (docs/dashboard.md)")
    env_flag(
        g,
        "--no-dashboard",
        env="OJS_NO_DASHBOARD",
        action="store_true",
        help="do not serve the web dashboard",
    )
    env_flag(
        g,
        "--dashboard-session-ttl",
        env="OJS_DASHBOARD_SESSION_TTL",
        type=int,
        default=12 * 3600,
        metavar="SECONDS",
        help="how long a dashboard sign-in lasts",
    )
    env_flag(
        g,
        "--dashboard-cookie-secure",
        env="OJS_DASHBOARD_COOKIE_SECURE",
        choices=COOKIE_SECURE_MODES,
        default="auto",
        help="mark the session cookie Secure: auto (unless served over plain http from "
        "localhost), always, never",
    )


class _Version(argparse.Action):
    """``--version``: the line unwrapped (argparse's own action wraps it to the terminal)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_line())
        parser.exit()


def version_line() -> str:
    """``ojs-server X (ojs-core Y, ojs-nats Z, ...)``: what ``--version`` prints."""
    found = []
    for dist in ("ojs-core", "ojs-memory", "ojs-nats", "ojs-grpc"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{dist} {metadata.version(dist)}")
    return f"ojs-server {metadata.version('ojs-http')} ({', '.join(found)})"


def mounted(app: Starlette, prefix: str) -> Starlette:
    """A host app serving ``app`` under ``prefix``, with ``app``'s lifespan run from its own
    (Starlette never runs a mounted app's lifespan)."""

    @contextlib.asynccontextmanager
    async def host_lifespan(host: Starlette) -> AsyncIterator[None]:
        async with lifespan(app):
            yield

    return Starlette(routes=[Mount(prefix, app=app)], lifespan=host_lifespan)


def build_backend(
    url: str, *, replicas: int = 1, data_dir: str = ".ojs", extra: dict[str, Any] | None = None
) -> Backend:
    """The backend an installed plugin registers for ``url``'s scheme (see ``ojs_core.plugins``).

    ``memory`` and ``memory://`` are the same; unknown schemes raise ``SystemExit`` with a
    message listing the installed ones.
    """
    try:
        options = BackendOptions(replicas=replicas, data_dir=data_dir, extra=extra or {})
        return load_backend(url, options)
    except BackendPluginError as exc:
        raise SystemExit(f"ojs-server: {exc}") from None


async def serve(args: argparse.Namespace, watch: ShutdownWatch | None = None) -> None:
    """Open the backend, serve until SIGINT or SIGTERM, then shut down cleanly (its steps
    logged and bounded by ``watch``; the caller closes a watch it passes, once the event loop
    has finished)."""
    keys, verifier = build_credentials(args)
    authenticate = authenticator_of(keys, verifier)
    refusal = check_grpc_flags(args) or check_exposure(
        args.host,
        has_auth=authenticate is not None,
        insecure_no_auth=args.insecure_no_auth,
        test_mode=args.enable_reset,
    )
    if refusal:
        print(f"ojs-server: {refusal}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if args.dashboard_session_ttl < 60:
        raise SystemExit("ojs-server: --dashboard-session-ttl must be at least 60 seconds")
    if args.workers < 1:
        raise SystemExit("ojs-server: --workers must be at least 1")
    if args.workers > 1 and url_scheme(args.backend) == "memory":
        raise SystemExit(
            "ojs-server: --workers > 1 needs a backend the processes share (the memory backend "
            "lives in one process); use the default embedded NATS or --backend nats://..."
        )
    limits, http_limits = limit_settings(args.limit)
    extra = {"nats": nats_options(args), **nats_storage_options(args)}
    backend = build_backend(
        args.backend, replicas=args.nats_replicas, data_dir=args.data_dir, extra=extra
    )
    settings = HttpSettings(
        enable_reset=args.enable_reset,
        test_directives=args.enable_reset,
        limits=limits,
        retention=retention_settings(args),
        exhausted=args.exhausted_jobs,
        schema_validation=args.schema_validation,
        **http_limits,
        response_content_type=args.response_content_type,
        default_visibility_timeout_ms=args.default_visibility_timeout_ms,
        metrics=not args.no_metrics,
        # Queue names and job types are no secret on a loopback bind; elsewhere a server with
        # credentials asks for them on /metrics too, unless told otherwise.
        metrics_public=args.metrics_public or is_loopback(args.host),
        access_log=args.access_log,
        tracing=args.tracing,
        api_docs=not args.no_api_docs,
        max_event_streams=args.max_event_streams,
        event_heartbeat_s=args.event_heartbeat,
        dashboard=not args.no_dashboard,
        dashboard_session_ttl_s=args.dashboard_session_ttl,
        dashboard_cookie_secure=args.dashboard_cookie_secure,
        protocols=("http", "grpc") if args.grpc_port is not None else ("http",),
        **webhook_settings(args),
    )
    if args.check_config:
        print(
            f"ojs-server: configuration ok (backend: {backend.name} {redact_url(args.backend)}, "
            f"{_auth_note(authenticate, keys)[2:]}{', test mode' if args.enable_reset else ''}; "
            f"{_metrics_note(settings, authenticate)}; "
            f"{'api docs on /ojs/docs' if settings.api_docs else 'api docs off'}"
            f"{f'; gRPC on port {args.grpc_port}' if args.grpc_port is not None else ''})",
            flush=True,
        )
        return
    shared_metrics = _share_metrics(args, settings)
    watching = ShutdownWatch() if watch is None else watch
    try:
        grpc_auth = token_authenticator(keys, verifier)
        await _serve(args, backend, settings, authenticate, keys, watching, grpc_auth)
    finally:
        if watch is None:
            watching.close()
        if shared_metrics is not None:
            shutil.rmtree(shared_metrics, ignore_errors=True)


def _share_metrics(args: argparse.Namespace, settings: HttpSettings) -> str | None:
    """``--workers N``: a directory where every process writes its metrics, so that a scrape
    answered by any of them sums them all (prometheus-client's multiprocess mode). Set in the
    environment before prometheus-client is first imported, and inherited by the siblings.
    Returns the directory this process created (to remove at exit), else ``None``."""
    if args.workers < 2 or not settings.metrics or not metrics_installed():
        return None
    if os.environ.get(MULTIPROC_ENV):
        return None  # an operator's own directory: used, and left alone
    directory = tempfile.mkdtemp(prefix="ojs-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


async def _serve(
    args: argparse.Namespace,
    backend: Backend,
    settings: HttpSettings,
    authenticate: Any,
    keys: Any,
    watch: ShutdownWatch,
    grpc_auth: Any = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Open the backend before binding, so that "listening" is printed once requests can be
    # served, and a signal during a long connect (an unreachable NATS) stops at once.
    print(
        f"ojs-server: opening the backend ({backend.name} {redact_url(args.backend)})",
        flush=True,
    )
    if not await _open_or_stop(backend, stop):
        return
    try:
        await _serve_open(args, backend, settings, authenticate, keys, stop, watch, grpc_auth)
    finally:
        watch.enter("closing the backend")
        try:
            await backend.close()
        finally:
            watch.done()


async def _open_or_stop(backend: Backend, stop: asyncio.Event) -> bool:
    """Open ``backend``; ``False`` if a signal came first. A failure exits with the reason."""
    opening = asyncio.ensure_future(backend.open())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not opening.done():
        opening.cancel()
        with contextlib.suppress(BaseException):
            await opening
        with contextlib.suppress(Exception):
            await backend.close()
        return False
    try:
        opening.result()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await backend.close()
        raise SystemExit(f"ojs-server: could not open the backend: {exc}") from None
    return True


async def _serve_open(
    args: argparse.Namespace,
    backend: Backend,
    settings: HttpSettings,
    authenticate: Any,
    keys: Any,
    stop: asyncio.Event,
    watch: ShutdownWatch,
    grpc_auth: Any = None,
) -> None:
    """Bind, say so, and serve the app over the open ``backend`` until ``stop`` is set (and
    the gRPC binding beside it with ``--grpc-port``: same service, same event fan-out)."""
    app = inner = create_app(
        backend, settings, auth=authenticate, session_keys=keys, manage_backend=False
    )
    hub = inner.state.event_hub
    prefix = "/" + args.path_prefix.strip("/") if args.path_prefix.strip("/") else ""
    if prefix:
        app = mounted(app, prefix)
    kind = http_server.resolve(args.http_server)
    shared = args.workers > 1 or args.reuse_port
    try:
        sock = socket.create_server(
            (args.host, args.port),
            family=socket.AF_INET6 if ":" in args.host else socket.AF_INET,
            backlog=1024,
            reuse_port=shared,
        )
    except OSError as exc:
        raise SystemExit(f"ojs-server: cannot listen on {args.host}:{args.port}: {exc}") from None
    if keys is not None:
        install_key_reload(keys, args.api_keys_file, os.environ)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"ojs-server listening on http://{host}:{args.port}{prefix} (backend: {backend.name} "
        f"{redact_url(args.backend)}{_auth_note(authenticate, keys)}"
        f"{', test mode' if args.enable_reset else ''}; HTTP server: {kind})",
        flush=True,
    )
    siblings = _start_siblings(args) if args.workers > 1 else []
    grpc_server = None
    if args.grpc_port is not None:
        grpc_server = await start_grpc(args, inner.state.service, hub, settings, grpc_auth)

    grpc_stopping: list[asyncio.Task[None]] = []

    async def draining() -> None:
        await stop.wait()
        watch.begin("draining the requests in flight, then stopping the app")
        task = await begin_drain(inner.state, hub, grpc_server, GRACE_S)
        if task is not None:
            grpc_stopping.append(task)

    try:
        await http_server.serve(
            kind, app, sock, log_level=args.log_level, grace_s=GRACE_S, shutdown=draining
        )
    finally:
        if grpc_server is not None or siblings:
            watch.enter("stopping the gRPC server and the sibling processes")
        if grpc_server is not None:
            for task in grpc_stopping:  # its grace period ran beside the HTTP server's drain
                with contextlib.suppress(Exception):
                    await task
            await grpc_server.stop(0)
        await asyncio.to_thread(_stop_siblings, siblings)


async def begin_drain(
    state: Any, hub: Any, grpc_server: Any, grace_s: float
) -> asyncio.Task[None] | None:
    """Start the graceful shutdown: ``/ojs/v1/ready`` answers 503 from now on, event streams
    end, and the gRPC server (if any) starts its own grace period of ``grace_s`` seconds in
    the background, so that it runs beside Hypercorn's drain rather than before it (returns
    that task; the caller awaits it)."""
    # From the signal on, /ojs/v1/ready answers 503 to the requests still being served.
    state.phase = "draining"
    # Event streams never end by themselves: end them, so that they do not hold the
    # graceful shutdown for its whole timeout (clients resume with Last-Event-ID).
    hub.end_all()
    if grpc_server is None:
        return None
    stopping: asyncio.Task[None] = asyncio.ensure_future(grpc_server.stop(grace_s))
    return stopping


def _start_siblings(args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """``--workers N``: N-1 more server processes on the same port (SO_REUSEPORT: the kernel
    spreads connections) and the same backend (an embedded NATS is joined, not started again).
    They die with this process (Linux) and are stopped with it."""
    argv = [a for a in args.argv if not a.startswith("--workers")]
    if "--workers" in args.argv:  # "--workers N" as two words: drop its value too
        i = args.argv.index("--workers")
        argv = args.argv[:i] + args.argv[i + 2 :]
    command = [sys.executable, "-m", "ojs_http.cli", *argv, "--workers", "1", "--reuse-port"]
    return [
        subprocess.Popen(command, preexec_fn=_die_with_parent, env=os.environ.copy())
        for _ in range(args.workers - 1)
    ]


def _stop_siblings(siblings: list[subprocess.Popen[bytes]]) -> None:
    for proc in siblings:
        proc.terminate()
    for proc in siblings:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG


def _auth_note(authenticate: Any, keys: Any) -> str:
    if authenticate is None:
        return ", no authentication"
    if keys is None:
        return ", JWT authentication"
    return f", {len(keys)} API key(s)"


def _metrics_note(settings: HttpSettings, authenticate: Any) -> str:
    if not settings.metrics:
        return "metrics off"
    if not metrics_installed():
        return "metrics off: install ojs-http[metrics]"
    if authenticate is None or settings.metrics_public:
        return "metrics public on /metrics"
    return "metrics on /metrics with a key"


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    tune_gc()  # a server moves many jobs: see ojs_core.gc_tuning
    with contextlib.suppress(KeyboardInterrupt):
        # The bound covers the event loop's own end too (asyncio.run cancels what is left).
        watch = ShutdownWatch()
        try:
            run_loop(serve(args, watch), args.loop)
        finally:
            watch.close()
    sys.exit(0)


def run_loop(main: Coroutine[Any, Any, None], loop: str = "auto") -> None:
    """Run ``main`` on uvloop (``auto`` when it is installed, or ``uvloop``) or on asyncio."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise SystemExit("ojs-server: --loop uvloop needs the uvloop package") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


if __name__ == "__main__":
    main()
