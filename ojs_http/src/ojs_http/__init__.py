"""ojs-http: the OJS HTTP binding as a Starlette ASGI app, and the ``ojs-server`` CLI."""

from .app import create_app, lifespan
from .settings import HttpSettings

__all__ = ["HttpSettings", "create_app", "lifespan"]
__version__ = "0.1.0"
