"""Credentials and TLS for an external NATS server, as nats-py ``connect()`` options.

One of four ways to authenticate, plus TLS on top of any of them:

- user and password (``--nats-user``/``--nats-password``, or ``nats://user:password@host``);
- a token (``--nats-token``, or ``nats://token@host``);
- an NKey seed file (``--nats-nkey-seed FILE``);
- a ``.creds`` file, a user JWT and its seed (``--nats-creds FILE``);
- TLS (``tls://`` URLs, or any TLS option): a custom CA (``--nats-tls-ca``) and, for mutual TLS,
  a client certificate and key (``--nats-tls-cert``/``--nats-tls-key``).

:meth:`NatsCredentials.connect_options` moves credentials out of the server URLs into options,
so the URLs the backend keeps (and shows in health and logs) never hold a secret. The secrets
themselves are never part of a ``repr`` or an error message. NKeys and ``.creds`` files need
the ``nkeys`` package (``pip install 'ojs-nats[nkeys]'``).
"""

from __future__ import annotations

import importlib.util
import os
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs

from ojs_core.plugins import BackendPluginError

__all__ = ["ENV_NAMES", "NatsConfigError", "NatsCredentials"]

#: The environment variable of each field (what ``ojs-server`` reads its flags' defaults from).
ENV_NAMES = {
    "user": "OJS_NATS_USER",
    "password": "OJS_NATS_PASSWORD",
    "token": "OJS_NATS_TOKEN",
    "nkey_seed": "OJS_NATS_NKEY_SEED",
    "creds": "OJS_NATS_CREDS",
    "tls_ca": "OJS_NATS_TLS_CA",
    "tls_cert": "OJS_NATS_TLS_CERT",
    "tls_key": "OJS_NATS_TLS_KEY",
}


class NatsConfigError(BackendPluginError, ValueError):
    """NATS credentials or TLS settings that cannot work; the message holds no secret."""


def _secret(value: str | None) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen(kw_only=True)
class NatsCredentials:
    """How to authenticate to (and encrypt the link with) an external NATS server.

    ``nkey_seed``, ``creds`` and the ``tls_*`` fields are file paths; ``password`` and
    ``token`` are the secrets themselves (``repr`` shows them as ``***``).
    """

    user: str | None = None
    password: str | None = attrs.field(default=None, repr=_secret)
    token: str | None = attrs.field(default=None, repr=_secret)
    nkey_seed: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> NatsCredentials:
        """From ``{"user": ..., "tls_ca": ...}`` (``BackendOptions.extra["nats"]``)."""
        unknown = sorted(set(values) - set(ENV_NAMES))
        if unknown:
            raise NatsConfigError(f"unknown NATS option(s): {', '.join(unknown)}")
        return cls(**{k: str(v) for k, v in values.items() if v not in (None, "")})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NatsCredentials:
        """From the ``OJS_NATS_*`` variables (:data:`ENV_NAMES`)."""
        env = os.environ if environ is None else environ
        return cls.from_mapping({k: env.get(v) for k, v in ENV_NAMES.items()})

    @property
    def uses_tls(self) -> bool:
        """Whether a TLS option is set (``tls://`` URLs turn TLS on by themselves)."""
        return any((self.tls_ca, self.tls_cert, self.tls_key))

    def connect_options(self, servers: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
        """``servers`` without credentials, and the nats-py options that carry them instead.

        Raises :class:`NatsConfigError` for contradictory settings, files that cannot be read,
        or a missing ``nkeys`` package.
        """
        clean, user, password, token = _split_userinfo(servers)
        if (user or token) and (self.user or self.password or self.token):
            raise NatsConfigError(
                "NATS credentials are given both in the server URL and as options; use one"
            )
        user = user or self.user
        password = password or self.password
        token = token or self.token
        methods = [
            name
            for name, given in (
                ("user/password", bool(user or password)),
                ("token", bool(token)),
                ("NKey seed", bool(self.nkey_seed)),
                (".creds file", bool(self.creds)),
            )
            if given
        ]
        if len(methods) > 1:
            raise NatsConfigError(
                f"choose one way to authenticate to NATS, not {' and '.join(methods)}"
            )
        options: dict[str, Any] = {}
        if user or password:
            if not (user and password):
                raise NatsConfigError("a NATS user needs a password (and a password a user)")
            options.update(user=user, password=password)
        if token:
            options["token"] = token
        if self.nkey_seed:
            _need_nkeys("an NKey seed")
            options["nkeys_seed"] = _readable(self.nkey_seed, "NKey seed file")
        if self.creds:
            _need_nkeys("a .creds file")
            options["user_credentials"] = _readable(self.creds, ".creds file")
        if self.uses_tls:
            options["tls"] = self.ssl_context()
        return clean, options

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context: the custom CA (or the system's), the client certificate."""
        if self.tls_key and not self.tls_cert:
            raise NatsConfigError("a TLS client key needs its certificate (--nats-tls-cert)")
        try:
            context = ssl.create_default_context(
                cafile=_readable(self.tls_ca, "TLS CA file") if self.tls_ca else None
            )
            if self.tls_cert:
                context.load_cert_chain(
                    _readable(self.tls_cert, "TLS certificate file"),
                    _readable(self.tls_key, "TLS key file") if self.tls_key else None,
                )
        except ssl.SSLError as exc:
            raise NatsConfigError(f"NATS TLS files cannot be used: {exc.reason}") from None
        return context


def _readable(path: str, what: str) -> str:
    p = Path(path).expanduser()
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise NatsConfigError(f"cannot read the {what} {p}: {exc.strerror}") from None
    return str(p)


def _need_nkeys(what: str) -> None:
    if importlib.util.find_spec("nkeys") is None:
        raise NatsConfigError(f"{what} needs the nkeys package: pip install 'ojs-nats[nkeys]'")


def _split_userinfo(
    servers: Sequence[str],
) -> tuple[list[str], str | None, str | None, str | None]:
    """Servers without ``user:password@``/``token@``, and the one set of credentials they held."""
    clean: list[str] = []
    found: set[tuple[str | None, str | None]] = set()
    for server in servers:
        url = server if "://" in server else f"nats://{server}"
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            found.add(
                (
                    unquote(parts.username) if parts.username else None,
                    unquote(parts.password) if parts.password is not None else None,
                )
            )
        netloc = parts.netloc.rpartition("@")[2]
        clean.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
    if len(found) > 1:
        raise NatsConfigError("the NATS server URLs carry different credentials; use one set")
    if not found:
        return clean, None, None, None
    name, secret = found.pop()
    if secret is None:
        return clean, None, None, name  # nats://token@host
    return clean, name, secret, None
