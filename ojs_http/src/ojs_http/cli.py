"""``ojs-server``: serve the OJS HTTP binding with Hypercorn."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from ojs_core.backend import Backend
from ojs_core.plugins import BackendOptions, BackendPluginError, load_backend, redact_url

from .app import create_app, lifespan
from .settings import CONTENT_TYPE_MODES, HttpSettings
from .startup import (
    add_auth_flags,
    add_limit_flag,
    add_nats_flags,
    build_authenticator,
    check_exposure,
    install_key_reload,
    limit_settings,
    nats_options,
)

__all__ = ["build_backend", "main", "mounted", "parse_args"]

log = logging.getLogger("ojs.server")


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags, each with an environment-variable default."""
    env = os.environ
    p = argparse.ArgumentParser(
        prog="ojs-server", description="Open Job Spec server (HTTP binding, levels 0-4)."
    )
    p.add_argument("--host", default=env.get("OJS_HOST", "127.0.0.1"), help="bind address")
    p.add_argument("--port", type=int, default=int(env.get("OJS_PORT", "8080")), help="port")
    p.add_argument(
        "--backend",
        default=env.get("OJS_BACKEND") or env.get("NATS_URL") or "embedded",
        help="embedded (default: a private nats-server storing in --data-dir), "
        "nats://host:port[,host:port] (an external server or cluster), memory://, or the URL "
        "of any backend an installed plugin registers (e.g. sqlite:///path/to/db)",
    )
    p.add_argument(
        "--data-dir",
        default=env.get("OJS_DATA_DIR", ".ojs"),
        help="store of the embedded nats-server (default .ojs/)",
    )
    p.add_argument(
        "--nats-replicas",
        type=int,
        default=int(env.get("OJS_NATS_REPLICAS", "1")),
        help="replicas of every stream and bucket (for NATS clusters)",
    )
    p.add_argument(
        "--enable-reset",
        action="store_true",
        default=_env_bool("OJS_ENABLE_RESET"),
        help="test mode, loopback binds only: serve POST /ojs/v1/admin/reset (wipes all "
        "state) and honour meta.test_directive (for conformance runners)",
    )
    p.add_argument(
        "--response-content-type",
        choices=CONTENT_TYPE_MODES,
        default=env.get("OJS_RESPONSE_CONTENT_TYPE", "auto"),
        help="Content-Type of responses (see docs/configuration.md)",
    )
    p.add_argument(
        "--default-visibility-timeout-ms",
        type=int,
        default=int(env.get("OJS_DEFAULT_VISIBILITY_TIMEOUT_MS", "1800000")),
        help="visibility timeout when neither the fetch nor the job sets one",
    )
    p.add_argument(
        "--path-prefix",
        default=env.get("OJS_PATH_PREFIX", ""),
        help="serve the API under this path (e.g. /jobs: /jobs/ojs/v1/...), mounted in a host "
        "app the way an embedding service mounts it; for proxies that route a sub-path here",
    )
    p.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default=env.get("OJS_LOOP", "auto"),
        help="event loop: uvloop when installed (auto, the default) or the standard asyncio one",
    )
    p.add_argument(
        "--log-level",
        default=env.get("OJS_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    add_auth_flags(p)
    add_nats_flags(p)
    add_limit_flag(p)
    return p.parse_args(argv)


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


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    keys, authenticate = build_authenticator(args)
    refusal = check_exposure(
        args.host,
        has_auth=authenticate is not None,
        insecure_no_auth=args.insecure_no_auth,
        test_mode=args.enable_reset,
    )
    if refusal:
        print(f"ojs-server: {refusal}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    limits, http_limits = limit_settings(args.limit)
    extra = {"nats": nats_options(args)}
    backend = build_backend(
        args.backend, replicas=args.nats_replicas, data_dir=args.data_dir, extra=extra
    )
    settings = HttpSettings(
        enable_reset=args.enable_reset,
        test_directives=args.enable_reset,
        limits=limits,
        **http_limits,
        response_content_type=args.response_content_type,
        default_visibility_timeout_ms=args.default_visibility_timeout_ms,
    )
    app = create_app(backend, settings, auth=authenticate)
    prefix = "/" + args.path_prefix.strip("/") if args.path_prefix.strip("/") else ""
    if prefix:
        app = mounted(app, prefix)
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = args.log_level.upper()
    config.graceful_timeout = 10.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if keys is not None:
        install_key_reload(keys, args.api_keys_file, os.environ)
    if authenticate is None:
        auth_note = ", no authentication"
    else:
        auth_note = f", {len(keys) if keys is not None else 0} API key(s)"
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"ojs-server listening on http://{host}:{args.port}{prefix} (backend: {backend.name} "
        f"{redact_url(args.backend)}{auth_note}{', test mode' if args.enable_reset else ''})",
        flush=True,
    )
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(serve(args), args.loop)
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
