"""ojs-grpc: the OJS gRPC binding (``ojs.v1.OJSService`` on ``grpc.aio``) over any ojs-core
backend, with ``grpc.health.v1``, reflection, API-key/bearer authentication and TLS."""

from .auth import ACCESS, TokenAuthenticator
from .server import SERVICE_NAME, GrpcServer, ServerTLS
from .settings import GrpcSettings

__all__ = [
    "ACCESS",
    "SERVICE_NAME",
    "GrpcServer",
    "GrpcSettings",
    "ServerTLS",
    "TokenAuthenticator",
]
__version__ = "0.2.0"
