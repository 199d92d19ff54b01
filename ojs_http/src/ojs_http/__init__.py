"""ojs-http: the OJS HTTP binding as a Starlette ASGI app, and the ``ojs-server`` CLI."""

from .app import create_app, lifespan
from .auth import ApiKeys, Role
from .settings import HttpSettings

__all__ = ["ApiKeys", "HttpSettings", "Role", "create_app", "lifespan"]
__version__ = "0.2.0"
