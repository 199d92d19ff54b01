"""Backend plugins: find the :class:`~ojs_core.backend.Backend` for a URL by its scheme.

A distribution that provides a backend registers a *factory* under the entry-point group
``ojs.backends``, keyed by URL scheme, in its ``pyproject.toml``::

    [project.entry-points."ojs.backends"]
    sqlite = "ojs_sqlite.plugin:create_backend"

A factory is any callable ``(url, options) -> Backend`` (:data:`BackendFactory`); it builds the
backend but does not open it. :func:`load_backend` picks the factory for a URL's scheme, so
``ojs-server --backend sqlite:///var/lib/ojs.db`` works once the distribution is installed,
with no change to the server. The scheme is what comes before ``://``; a bare word such as
``memory`` or ``embedded`` is a scheme on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs

from .backend import Backend

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "BackendOptions",
    "BackendPluginError",
    "UnknownBackendError",
    "installed_schemes",
    "load_backend",
    "redact_url",
    "url_scheme",
]

#: The entry-point group backends register their factories in, keyed by URL scheme.
ENTRY_POINT_GROUP = "ojs.backends"


@attrs.frozen(kw_only=True)
class BackendOptions:
    """Settings a server passes to every backend factory; each backend uses what applies.

    ``replicas`` is the replication factor of a clustered store, ``data_dir`` where an embedded
    store keeps its files, and ``extra`` anything backend-specific (from configuration).
    """

    replicas: int = 1
    data_dir: str = ".ojs"
    extra: dict[str, Any] = attrs.field(factory=dict)


#: Builds a backend (not yet opened) for a URL; what ``ojs.backends`` entry points name.
BackendFactory = Callable[[str, BackendOptions], Backend]


#: The distribution that provides each scheme of ojs-python's own backends (for the message
#: that tells a user what to install).
FIRST_PARTY = {
    "memory": "ojs-memory",
    "nats": "ojs-nats",
    "tls": "ojs-nats",
    "embedded": "ojs-nats[embedded]",
}


class BackendPluginError(Exception):
    """A backend plugin could not be loaded or did not build a backend."""


class UnknownBackendError(BackendPluginError, LookupError):
    """No installed plugin handles the URL's scheme; ``installed`` lists the schemes that do."""

    def __init__(self, url: str, scheme: str, installed: list[str]) -> None:
        known = ", ".join(f"{s}://" for s in installed) or "none"
        package = FIRST_PARTY.get(scheme)
        hint = (
            f"install it with: pip install {package!r}"
            if package
            else f"a backend registers one under the {ENTRY_POINT_GROUP!r} entry-point group"
        )
        super().__init__(
            f"unknown backend {url!r}: no plugin for scheme {scheme!r} is installed "
            f"(installed schemes: {known}); {hint}"
        )
        self.url = url
        self.scheme = scheme
        self.installed = installed


def url_scheme(url: str) -> str:
    """The lowercased scheme of ``url``: the part before ``://``, or the whole of a bare word."""
    head = url.split("://", 1)[0] if "://" in url else url
    return head.strip().lower()


def redact_url(url: str) -> str:
    """``url`` fit for logs: the password (or a bare token) of each ``user:secret@`` or
    ``secret@`` part replaced by ``***``; works on comma-separated server lists."""
    parts = []
    for part in url.split(","):
        scheme, sep, rest = part.rpartition("://") if "://" in part else ("", "", part)
        userinfo, at, host = rest.partition("@")
        if at and "/" not in userinfo:
            user, colon, _ = userinfo.partition(":")
            rest = f"{user}:***@{host}" if colon else f"***@{host}"
        parts.append(f"{scheme}{sep}{rest}")
    return ",".join(parts)


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        name = ep.name.lower()
        previous = found.get(name)
        if previous is not None and previous.value != ep.value:
            raise BackendPluginError(
                f"backend scheme {name!r} is registered twice: {previous.value} and {ep.value}"
            )
        found[name] = ep
    return found


def installed_schemes() -> list[str]:
    """Every scheme an installed distribution registers a backend for, sorted."""
    return sorted(_entry_points())


def load_backend(url: str, options: BackendOptions | None = None) -> Backend:
    """Build (without opening) the backend registered for ``url``'s scheme.

    Raises :class:`UnknownBackendError` (listing the installed schemes) when no plugin handles
    the scheme, and :class:`BackendPluginError` when the plugin fails to import or its factory
    returns something that is not a :class:`~ojs_core.backend.Backend`.
    """
    scheme = url_scheme(url)
    plugins = _entry_points()
    ep = plugins.get(scheme)
    if ep is None:
        raise UnknownBackendError(url, scheme, sorted(plugins))
    try:
        factory: BackendFactory = ep.load()
    except ImportError as exc:
        raise BackendPluginError(
            f"the backend plugin for {scheme}:// ({ep.value}) could not be imported: {exc}"
        ) from exc
    backend = factory(url, options or BackendOptions())
    if not isinstance(backend, Backend):
        raise BackendPluginError(
            f"the backend plugin for {scheme}:// ({ep.value}) returned {type(backend).__name__}, "
            "not a Backend"
        )
    return backend
