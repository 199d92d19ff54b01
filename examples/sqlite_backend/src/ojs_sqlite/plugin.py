"""The ``sqlite`` entry point of the ``ojs.backends`` plugin group."""

from __future__ import annotations

from urllib.parse import parse_qs

from ojs_core.plugins import BackendOptions

from .backend import SqliteBackend

__all__ = ["create_backend", "parse_url"]


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split ``sqlite:///abs/path.db?synchronous=normal`` into a path and its parameters.

    ``sqlite:///var/ojs.db`` is an absolute path, ``sqlite://ojs.db`` a relative one and
    ``sqlite://:memory:`` (or a bare ``sqlite``) a private in-memory database.
    """
    rest = url.split("://", 1)[1] if "://" in url else ""
    path, _, query = rest.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    return path or ":memory:", params


def create_backend(url: str, options: BackendOptions) -> SqliteBackend:
    """A :class:`SqliteBackend` for ``url``; ``?synchronous=`` sets the durability level."""
    path, params = parse_url(url)
    synchronous = params.get("synchronous", options.extra.get("synchronous", "FULL"))
    return SqliteBackend(path, synchronous=str(synchronous))
