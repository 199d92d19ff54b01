"""ojs-sqlite: an example third-party OJS backend on the standard library's ``sqlite3``."""

from .backend import SqliteBackend

__all__ = ["SqliteBackend"]
__version__ = "0.1.0"
