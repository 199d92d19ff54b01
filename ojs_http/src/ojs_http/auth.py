"""Who may call what: API keys with roles, and the check every route runs.

A client presents ``Authorization: Bearer KEY``. An *authenticator* turns the request into the
roles it holds (or ``None``): :class:`ApiKeys` (``ROLE:KEY`` entries, from ``OJS_API_KEYS`` and
a keys file), a :class:`~ojs_http.jwt_auth.JwtVerifier`, or any callable a host application
passes to :func:`~ojs_http.create_app`. Each route declares the roles that may call it next to
its path (:mod:`ojs_http.routing`); ``admin`` may call everything. No or unknown credentials
answer 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``; a known caller without the role
answers 403 ``forbidden``. The table of roles is in ``docs/security.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path

from starlette.requests import Request

from ojs_core.errors import ForbiddenError, UnauthorizedError

__all__ = [
    "API_KEYS_ENV",
    "ApiKeys",
    "AuthConfigError",
    "Authenticator",
    "ForbiddenError",
    "Role",
    "UnauthorizedError",
    "bearer_token",
    "first_of",
    "key_digest",
    "roles_of",
]

log = logging.getLogger("ojs.auth")

#: The environment variable holding comma-separated ``ROLE:KEY`` entries.
API_KEYS_ENV = "OJS_API_KEYS"


class Role(StrEnum):
    """The roles a caller can hold (``docs/security.md`` says what each may do)."""

    PRODUCER = "producer"
    WORKER = "worker"
    ADMIN = "admin"


#: What an authenticator returns: a role, several, or ``None`` for "not authenticated".
AuthResult = Role | str | Collection[Role | str] | None

#: ``authenticate(request) -> role | roles | None``, plain or async.
Authenticator = Callable[[Request], AuthResult | Awaitable[AuthResult]]


class AuthConfigError(ValueError):
    """A keys file or ``OJS_API_KEYS`` entry is malformed; the message never holds a key."""


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or ``None`` (scheme case-insensitive)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def _digest(secret: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison's time independent of the key's
    # length as well as of its content.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def key_digest(key: str) -> bytes:
    """The SHA-256 digest under which :class:`ApiKeys` holds ``key``."""
    return _digest(key)


def _role(name: str, where: str) -> Role:
    try:
        return Role(name.strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise AuthConfigError(f"{where}: unknown role {name.strip()!r} (roles: {known})") from None


class ApiKeys:
    """A set of ``ROLE:KEY`` entries that authenticates ``Authorization: Bearer KEY``.

    Keys are kept only as SHA-256 digests. :meth:`roles_for` compares the presented token with
    every entry in constant time (``hmac.compare_digest``) and never stops early, so neither
    the time taken nor the answer tells which entry, or how much of one, matched. Call the
    object as an authenticator; :meth:`replace` swaps the entries in place (what SIGHUP does).
    """

    def __init__(self, entries: Iterable[tuple[Role | str, str]] = ()) -> None:
        self._entries = _build(
            (str(role), key, f"entry {n}") for n, (role, key) in enumerate(entries, 1)
        )

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "line") -> ApiKeys:
        """Entries from ``ROLE:KEY`` lines; blank lines and ``#`` comments are skipped.

        Errors name ``source`` and the line number, never the key.
        """
        keys = cls()
        keys._entries = _build(_lines(lines, source))
        return keys

    @classmethod
    def load(cls, env_value: str | None = None, file: str | Path | None = None) -> ApiKeys:
        """The entries of ``OJS_API_KEYS`` (comma-separated) and of a keys file, together."""
        items = list(_lines((env_value or "").split(","), f"{API_KEYS_ENV} entry"))
        if file is not None:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except OSError as exc:
                raise AuthConfigError(f"cannot read keys file {file}: {exc.strerror}") from None
            items.extend(_lines(text.splitlines(), f"{file} line"))
        keys = cls()
        keys._entries = _build(items)
        return keys

    @classmethod
    def from_environ(cls, file: str | Path | None = None) -> ApiKeys:
        """:meth:`load` with ``OJS_API_KEYS`` from the process environment."""
        return cls.load(os.environ.get(API_KEYS_ENV), file)

    def replace(self, other: ApiKeys) -> None:
        """Take ``other``'s entries (an atomic swap: a request sees the old set or the new)."""
        self._entries = list(other._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def secrets_of(self, role: Role) -> list[bytes]:
        """The SHA-256 digests of the keys holding ``role``: the per-key secrets that sign
        dashboard sessions (:mod:`ojs_http.dashboard.session`), so that removing a key (and
        ``SIGHUP``) also ends every session it opened. Never log or send them."""
        return [digest for digest, held in self._entries if held is role]

    def roles_for(self, token: str) -> frozenset[Role]:
        """The roles of ``token`` (empty when it matches no entry), in constant time."""
        presented = _digest(token)
        found: set[Role] = set()
        for digest, role in self._entries:
            # No early exit: every entry is compared whatever matched before it.
            match = hmac.compare_digest(presented, digest)
            found.update((role,) if match else ())
        return frozenset(found)

    def __call__(self, request: Request) -> frozenset[Role] | None:
        """Authenticate ``request`` by its bearer token."""
        token = bearer_token(request)
        if token is None:
            return None
        return self.roles_for(token) or None


def _lines(lines: Iterable[str], source: str) -> Iterator[tuple[str, str, str]]:
    """``(role, key, where)`` of every ``ROLE:KEY`` line, skipping blanks and comments."""
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        role, sep, key = line.partition(":")
        if not sep:
            raise AuthConfigError(f"{source} {n}: expected ROLE:KEY")
        yield role, key.strip(), f"{source} {n}"


def _build(items: Iterable[tuple[str, str, str]]) -> list[tuple[bytes, Role]]:
    entries: list[tuple[bytes, Role]] = []
    seen: dict[bytes, Role] = {}
    for role_name, key, where in items:
        role = _role(role_name, where)
        if not key or any(c.isspace() for c in key):
            raise AuthConfigError(f"{where}: the key is empty or contains whitespace")
        digest = _digest(key)
        if seen.get(digest, role) is not role:
            raise AuthConfigError(f"{where}: this key is already listed with another role")
        seen[digest] = role
        entries.append((digest, role))
    return entries


def _normalise(result: AuthResult) -> frozenset[Role]:
    if result is None:
        return frozenset()
    if isinstance(result, str):
        return frozenset({_role(result, "authenticator result")})
    return frozenset(_role(str(r), "authenticator result") for r in result)


async def roles_of(authenticate: Authenticator, request: Request) -> frozenset[Role]:
    """The roles ``authenticate`` grants ``request`` (empty: not authenticated)."""
    result = authenticate(request)
    if inspect.isawaitable(result):
        result = await result
    try:
        return _normalise(result)
    except AuthConfigError:
        log.error("the authenticator returned an unknown role; treating the caller as anonymous")
        return frozenset()


def first_of(*authenticators: Authenticator) -> Authenticator:
    """An authenticator trying each of ``authenticators`` in turn (e.g. API keys, then JWTs)."""
    chain: Sequence[Authenticator] = authenticators

    async def authenticate(request: Request) -> frozenset[Role] | None:
        for one in chain:
            roles = await roles_of(one, request)
            if roles:
                return roles
        return None

    return authenticate
