"""``ojs-server --grpc-port``: the gRPC binding (``ojs-grpc``) beside HTTP, in one process.

The gRPC server runs on the same event loop over the same :class:`JobService` (so the same
backend connection, scheduler and limits) and shares the HTTP app's event fan-out. It binds
``--host`` like HTTP, so the start-up rule of :mod:`ojs_http.startup` covers both ports: a
public bind needs credentials, and the same API keys (reloaded on ``SIGHUP``) and JWT verifier
authenticate both bindings. ``ojs_grpc`` is imported only when the flag is given: ``ojs-http``
works without the ``grpc`` extra.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from ojs_core.fanout import EventHub
from ojs_core.service import JobService

from .auth import ApiKeys
from .flags import env_flag
from .settings import HttpSettings
from .startup import is_loopback

if TYPE_CHECKING:
    from ojs_grpc import GrpcSettings

    from .jwt_auth import JwtVerifier

__all__ = [
    "add_grpc_flags",
    "check_grpc_flags",
    "grpc_settings",
    "start_grpc",
    "token_authenticator",
]

log = logging.getLogger("ojs.server")

INSTALL_HINT = "pip install 'ojs-http[grpc]'"


def add_grpc_flags(p: argparse.ArgumentParser) -> None:
    """``--grpc-port`` and the gRPC port's TLS files (``docs/grpc.md``)."""
    g = p.add_argument_group("gRPC binding (docs/grpc.md; needs ojs-http[grpc])")
    env_flag(
        g,
        "--grpc-port",
        env="OJS_GRPC_PORT",
        type=int,
        metavar="PORT",
        help="also serve ojs.v1.OJSService, grpc.health.v1 and reflection on this TCP port of "
        "--host (9090 is the spec's default), from this process over the same backend",
    )
    env_flag(
        g,
        "--grpc-tls-cert",
        env="OJS_GRPC_TLS_CERT",
        metavar="FILE",
        help="the gRPC port's certificate chain (PEM); with --grpc-tls-key, the port speaks TLS",
    )
    env_flag(g, "--grpc-tls-key", env="OJS_GRPC_TLS_KEY", metavar="FILE", help="its private key")
    env_flag(
        g,
        "--grpc-tls-client-ca",
        env="OJS_GRPC_TLS_CLIENT_CA",
        metavar="FILE",
        help="require client certificates signed by this CA (mutual TLS)",
    )


def check_grpc_flags(args: argparse.Namespace) -> str | None:
    """Why the gRPC flags cannot be served, or ``None``."""
    tls = (args.grpc_tls_cert, args.grpc_tls_key)
    if args.grpc_port is None:
        if any(tls) or args.grpc_tls_client_ca:
            return "--grpc-tls-cert/--grpc-tls-key/--grpc-tls-client-ca need --grpc-port"
        return None
    if not 1 <= args.grpc_port <= 65535:
        return f"--grpc-port must be a TCP port (1-65535), not {args.grpc_port}"
    if args.grpc_port == args.port:
        return "--grpc-port must differ from --port"
    if any(tls) and not all(tls):
        return "TLS on the gRPC port needs both --grpc-tls-cert and --grpc-tls-key"
    if args.grpc_tls_client_ca and not all(tls):
        return "--grpc-tls-client-ca needs --grpc-tls-cert and --grpc-tls-key"
    if args.workers > 1:
        return "--grpc-port is served by one process: use it with --workers 1"
    try:
        import ojs_grpc  # noqa: F401
    except ImportError:
        return f"--grpc-port needs the gRPC binding: {INSTALL_HINT}"
    return None


def token_authenticator(keys: ApiKeys | None, verifier: JwtVerifier | None) -> Any:
    """The gRPC binding's ``token -> roles`` over the HTTP binding's keys and JWT verifier
    (``None`` when there are neither: an open server, as HTTP is)."""
    if keys is None and verifier is None:
        return None

    async def authenticate(token: str) -> frozenset[str] | None:
        if keys is not None:
            roles = keys.roles_for(token)
            if roles:
                return frozenset(r.value for r in roles)
        if verifier is not None:
            found = await verifier.roles_for_token(token)
            if found:
                return frozenset(r.value for r in found)
        return None

    return authenticate


def grpc_settings(settings: HttpSettings) -> GrpcSettings:
    """The gRPC binding's settings from the HTTP server's: the same limits and names, and an
    event keepalive of ``--event-heartbeat`` seconds, kept between 1 and 30 (the spec asks
    for one at least every 30 seconds; under a second would only spin)."""
    from ojs_grpc import GrpcSettings

    return GrpcSettings(
        implementation_name=settings.implementation_name,
        implementation_version=settings.implementation_version,
        protocols=("http", "grpc"),
        max_envelope_bytes=settings.max_envelope_bytes,
        max_message_bytes=settings.max_body_bytes,
        event_keepalive_s=min(max(settings.event_heartbeat_s, 1.0), 30.0),
    )


async def start_grpc(
    args: argparse.Namespace,
    service: JobService,
    hub: EventHub,
    settings: HttpSettings,
    authenticate: Any,
) -> Any:
    """Bind and start the gRPC server; returns it (``stop(grace_s)`` ends it). Exits with the
    reason when the port cannot be bound or a TLS file cannot be read."""
    from ojs_grpc import GrpcServer, ServerTLS

    tls = None
    if args.grpc_tls_cert:
        try:
            tls = ServerTLS.from_files(
                args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_client_ca
            )
        except OSError as exc:
            raise SystemExit(f"ojs-server: cannot read a gRPC TLS file: {exc}") from None
        except ValueError as exc:  # the file was read, and is not a certificate/key pair
            raise SystemExit(f"ojs-server: {exc}") from None
    server = GrpcServer(
        service, settings=grpc_settings(settings), authenticate=authenticate, hub=hub
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    try:
        server.add_port(f"{host}:{args.grpc_port}", tls)
    except RuntimeError:
        raise SystemExit(f"ojs-server: cannot listen on {host}:{args.grpc_port} (gRPC)") from None
    await server.start()
    if tls is None and authenticate is not None and not is_loopback(args.host):
        log.warning(
            "the gRPC port takes API keys over plaintext on a public bind: terminate TLS in "
            "front of it or pass --grpc-tls-cert/--grpc-tls-key"
        )
    scheme = "grpcs" if tls else "grpc"
    print(f"ojs-server serving gRPC on {scheme}://{host}:{args.grpc_port}", flush=True)
    return server
