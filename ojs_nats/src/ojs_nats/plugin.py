"""The ``nats``, ``tls`` and ``embedded`` entry points of the ``ojs.backends`` plugin group."""

from __future__ import annotations

from ojs_core.plugins import BackendOptions, BackendPluginError

from .backend import NatsBackend
from .connection import CONNECT_WAIT_S
from .credentials import NatsCredentials
from .embedded import DEFAULT_SYNC, EmbeddedNatsServer, parse_sync

__all__ = ["create_backend", "create_embedded_backend"]


def create_backend(url: str, options: BackendOptions) -> NatsBackend:
    """A backend on an external NATS server or cluster.

    ``url`` is ``nats://host:port`` or ``tls://host:port``, several separated by commas;
    ``options.replicas`` is the replication factor of every stream and bucket, and
    ``options.extra["nats"]`` the credentials and TLS settings (:class:`NatsCredentials` fields;
    ``ojs-server`` fills it from its ``--nats-*`` flags). Credentials in the URL move into the
    connect options, so the backend's server list holds no secret.
    ``options.extra["nats_monitor_url"]`` is the server's monitoring endpoint, read to report
    its sync policy in health; ``options.extra["nats_connect_wait_s"]`` bounds the first
    connection.
    """
    credentials = NatsCredentials.from_mapping(options.extra.get("nats") or {})
    servers, connect = credentials.connect_options([s for s in url.split(",") if s.strip()])
    return NatsBackend(
        servers,
        replicas=options.replicas,
        connect_options=connect,
        monitor_url=options.extra.get("nats_monitor_url"),
        connect_wait_s=float(options.extra.get("nats_connect_wait_s") or CONNECT_WAIT_S),
    )


def create_embedded_backend(url: str, options: BackendOptions) -> NatsBackend:
    """A backend on a private nats-server started (and stopped) with the backend.

    The store lives in ``options.data_dir``, or in the path of an ``embedded:///path`` URL;
    ``options.extra["nats_sync"]`` is its flush policy (:func:`~ojs_nats.embedded.parse_sync`).
    A backend on a directory whose server another process runs joins that server.
    """
    path = url.split("://", 1)[1] if "://" in url else ""
    try:
        sync = parse_sync(options.extra.get("nats_sync") or DEFAULT_SYNC)
    except ValueError as exc:
        raise BackendPluginError(f"nats sync policy: {exc}") from None
    return NatsBackend(replicas=1, embedded=EmbeddedNatsServer(path or options.data_dir, sync=sync))
