"""The ``grpc.aio`` server: ``ojs.v1.OJSService``, ``grpc.health.v1`` and reflection.

:class:`GrpcServer` serves on the running event loop over a :class:`JobService` whose backend
is already open (``ojs-server`` opens it once for both bindings). The standard health service
answers ``SERVING`` while the backend answers (the ``Health`` RPC's probe, re-checked on every
``Check`` at most once a second and every ``health_interval_s`` for ``Watch``) and
``NOT_SERVING`` otherwise, for the whole server (``""``) and for ``ojs.v1.OJSService``.
Health and reflection need no credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Any

import attrs
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ojs_core.fanout import EventHub
from ojs_core.health import probe_backend
from ojs_core.service import JobService

from ._gen import service_pb2, service_pb2_grpc
from .auth import TokenAuthenticator
from .servicer import OJSServicer
from .settings import GrpcSettings

__all__ = ["SERVICE_NAME", "GrpcServer", "ServerTLS"]

log = logging.getLogger("ojs.grpc")

#: The full name of the OJS service.
SERVICE_NAME: str = service_pb2.DESCRIPTOR.services_by_name["OJSService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@attrs.frozen
class ServerTLS:
    """The server's certificate chain and private key (PEM); with ``client_ca``, clients must
    present a certificate it signed (mutual TLS)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert: str, key: str, client_ca: str | None = None) -> ServerTLS:
        """Read the PEM files, checking that they load (the certificate chain, a private key
        that matches it, the client CA) before anything is bound: ``OSError`` when a file
        cannot be read, ``ValueError`` (naming what, never quoting the files) when it does
        not load."""
        with open(cert, "rb") as c, open(key, "rb") as k:
            chain, private = c.read(), k.read()
        ca = None
        if client_ca is not None:
            with open(client_ca, "rb") as f:
                ca = f.read()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # An encrypted key is refused, not prompted for: the password callable gives none.
            context.load_cert_chain(cert, key, password=lambda: b"")
        except ssl.SSLError as exc:
            raise ValueError(f"cannot load the gRPC TLS certificate/key: {_reason(exc)}") from None
        if client_ca is not None:
            try:
                context.load_verify_locations(cafile=client_ca)
            except ssl.SSLError as exc:
                raise ValueError(f"cannot load the gRPC TLS client CA: {_reason(exc)}") from None
        return cls(chain, private, ca)

    def credentials(self) -> grpc.ServerCredentials:
        """The ``grpc.ServerCredentials`` to bind with."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def _reason(error: ssl.SSLError) -> str:
    """OpenSSL's reason for refusing a PEM file (``PEM lib``, ``key values mismatch``), in
    words; it never contains the file's content."""
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return "not a PEM certificate chain with its private key"


class _Health(health_aio.HealthServicer):  # type: ignore[misc]  # untyped base
    """``grpc.health.v1`` reflecting the backend's health."""

    def __init__(self, service: JobService) -> None:
        super().__init__()
        self.service = service
        self.checked = 0.0

    async def refresh(self) -> None:
        """Probe the backend and publish the answer to ``Check`` and ``Watch``."""
        self.checked = time.monotonic()
        probe = await probe_backend(self.service.backend)
        status = _NOT_SERVING if probe.status == "down" else _SERVING
        for name in ("", SERVICE_NAME):
            await self.set(name, status)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        """The status, probed again when the last probe is over a second old."""
        if time.monotonic() - self.checked > 1.0:
            await self.refresh()
        response: health_pb2.HealthCheckResponse = await super().Check(request, context)
        return response


class GrpcServer:
    """``ojs.v1.OJSService`` with health and reflection over ``service``.

    ``hub``: the process's event fan-out (pass the HTTP app's ``state.event_hub`` to share
    it; a new one is made otherwise and closed with the server). ``authenticate``: the token
    authenticator (:mod:`ojs_grpc.auth`); ``None`` serves without credentials.
    """

    def __init__(
        self,
        service: JobService,
        *,
        settings: GrpcSettings | None = None,
        authenticate: TokenAuthenticator | None = None,
        hub: EventHub | None = None,
        health_interval_s: float = 5.0,
    ) -> None:
        self.settings = settings or GrpcSettings()
        self.service = service
        self._own_hub = hub is None
        self.hub = hub or EventHub(
            service.backend,
            max_streams=self.settings.max_event_streams,
            max_pending=self.settings.event_queue,
        )
        self.servicer = OJSServicer(service, self.hub, self.settings, authenticate)
        self.health = _Health(service)
        self.health_interval_s = health_interval_s
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.settings.max_message_bytes),
                # Without this, a second server on the same port would share it silently.
                ("grpc.so_reuseport", 0),
            ]
        )
        service_pb2_grpc.add_OJSServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.servicer, self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), self.server)
        self._watch: asyncio.Task[None] | None = None
        self.port: int | None = None

    def add_port(self, address: str, tls: ServerTLS | None = None) -> int:
        """Listen on ``address`` (``host:port``; port 0 picks one), with TLS when given;
        returns the port. Raises ``RuntimeError`` when the address cannot be bound."""
        if tls is None:
            port = self.server.add_insecure_port(address)
        else:
            port = self.server.add_secure_port(address, tls.credentials())
        if port == 0:
            raise RuntimeError(f"cannot listen on {address}")
        self.port = port
        return port

    async def start(self) -> None:
        """Start serving (after :meth:`add_port`)."""
        await self.health.refresh()
        await self.server.start()
        self._watch = asyncio.get_running_loop().create_task(self._watch_health())

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            try:
                await self.health.refresh()
            except Exception:  # a probe that fails is what NOT_SERVING means; keep watching
                log.exception("gRPC health probe failed")

    async def stop(self, grace_s: float = 5.0) -> None:
        """End the streams (``UNAVAILABLE``: clients reopen them elsewhere), let unary calls
        finish for up to ``grace_s`` seconds, and stop."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.health.enter_graceful_shutdown()
        self.servicer.job_streams.close()
        if self._own_hub:
            await self.hub.close()
        else:
            self.hub.end_all()
        await self.server.stop(grace_s)

    async def wait(self) -> None:
        """Wait until the server stops."""
        await self.server.wait_for_termination()
