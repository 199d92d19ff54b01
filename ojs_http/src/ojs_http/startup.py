"""The security side of ``ojs-server``: its flags, the start-up check, key reloading.

The start-up rule (``docs/security.md``):

- a *loopback* bind (``127.0.0.0/8``, ``::1``, ``localhost``) may run without credentials, as
  a development server always has;
- any other bind needs API keys or a JWT verifier, or the explicit ``--insecure-no-auth``;
  otherwise ``ojs-server`` exits with status 2 and says how to set keys;
- *test mode* (``--enable-reset``: the reset route and the ``meta.test_directive`` hook) is
  only allowed on a loopback bind, whatever the credentials, so it never reaches a network.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from ojs_core.limits import Limits
from ojs_core.retention import Retention
from ojs_core.timeutil import parse_duration_ms

from .auth import API_KEYS_ENV, ApiKeys, AuthConfigError, Authenticator, first_of
from .flags import env_flag

if TYPE_CHECKING:
    from .jwt_auth import JwtVerifier

__all__ = [
    "HTTP_LIMITS",
    "add_auth_flags",
    "add_limit_flag",
    "add_nats_flags",
    "add_retention_flags",
    "add_webhook_flags",
    "authenticator_of",
    "build_authenticator",
    "build_credentials",
    "check_exposure",
    "install_key_reload",
    "is_loopback",
    "limit_settings",
    "nats_options",
    "nats_storage_options",
    "retention_settings",
    "webhook_settings",
]

#: The request limits of :class:`~ojs_http.settings.HttpSettings` (the rest are in ``Limits``).
HTTP_LIMITS = ("max_body_bytes", "max_envelope_bytes", "max_wait_ms")

log = logging.getLogger("ojs.server")

EXPLAIN_KEYS = (
    "set API keys: OJS_API_KEYS='admin:KEY1,producer:KEY2,worker:KEY3' or "
    "--api-keys-file FILE (one ROLE:KEY a line; roles: producer, worker, admin), or a JWT "
    "verifier (--jwt-issuer, --jwt-audience, --jwt-jwks-url); see docs/security.md. "
    "To serve without authentication anyway, pass --insecure-no-auth."
)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_exposure(
    host: str, *, has_auth: bool, insecure_no_auth: bool, test_mode: bool
) -> str | None:
    """Why ``ojs-server`` must not start with these settings, or ``None`` when it may."""
    loopback = is_loopback(host)
    if test_mode and not loopback:
        return (
            f"--enable-reset (test mode: state wipes and test directives) is only allowed on "
            f"a loopback bind, not on --host {host}; bind 127.0.0.1 for test runs"
        )
    if not loopback and not has_auth and not insecure_no_auth:
        return f"refusing to serve --host {host} without authentication: {EXPLAIN_KEYS}"
    return None


def add_auth_flags(p: argparse.ArgumentParser) -> None:
    """``--api-keys-file``, ``--insecure-no-auth`` and the JWT verifier's flags."""
    g = p.add_argument_group("authentication (docs/security.md)")
    env_flag(
        g,
        "--api-keys-file",
        env="OJS_API_KEYS_FILE",
        metavar="FILE",
        help=f"API keys, one ROLE:KEY a line (# comments), re-read on SIGHUP; adds to "
        f"${API_KEYS_ENV} (comma-separated ROLE:KEY entries)",
    )
    env_flag(
        g,
        "--insecure-no-auth",
        env="OJS_INSECURE_NO_AUTH",
        action="store_true",
        help="serve a non-loopback --host without any credentials (anyone reaching the port "
        "may do everything)",
    )
    env_flag(g, "--jwt-issuer", env="OJS_JWT_ISSUER", help="accept JWTs of this issuer")
    env_flag(g, "--jwt-audience", env="OJS_JWT_AUDIENCE", help="required audience")
    env_flag(g, "--jwt-jwks-url", env="OJS_JWT_JWKS_URL", help="the issuer's JWKS URL")
    env_flag(
        g,
        "--jwt-role-claim",
        env="OJS_JWT_ROLE_CLAIM",
        default="ojs_roles",
        help="claim holding the caller's roles",
    )


def add_retention_flags(p: argparse.ArgumentParser) -> None:
    """How long finished records are kept (ISO 8601 durations; ``0`` keeps forever)."""
    g = p.add_argument_group("retention (docs/reliability.md#storage-that-stays-bounded)")
    flags = [
        ("--retain-completed", "OJS_RETAIN_COMPLETED", "P7D", "completed jobs"),
        ("--retain-cancelled", "OJS_RETAIN_CANCELLED", "P7D", "cancelled jobs"),
        ("--retain-discarded", "OJS_RETAIN_DISCARDED", "P30D", "discarded jobs"),
        ("--retain-dead-letter", "OJS_RETAIN_DEAD_LETTER", "P180D", "dead-letter jobs"),
        ("--retain-workers", "OJS_RETAIN_WORKERS", "P1D", "worker records after their last beat"),
    ]
    for flag, env, default, what in flags:
        env_flag(
            g,
            flag,
            env=env,
            default=default,
            metavar="DURATION",
            help=f"how long {what} are kept (ISO 8601; 0 keeps them forever)",
        )
    env_flag(
        g,
        "--dead-letter-max",
        env="OJS_DEAD_LETTER_MAX",
        default=10_000,
        type=int,
        metavar="N",
        help="most dead-letter jobs kept; the oldest beyond it are removed (0: no cap)",
    )


def _on_off(text: str) -> bool:
    """``$OJS_WEBHOOKS``-style booleans: 1/true/yes/on or 0/false/no/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def add_webhook_flags(p: argparse.ArgumentParser) -> None:
    """The webhooks extension's flags (``docs/webhooks.md``)."""
    g = p.add_argument_group("webhooks (docs/webhooks.md)")
    env_flag(
        g,
        "--webhooks",
        env="OJS_WEBHOOKS",
        default=True,
        type=_on_off,
        action=argparse.BooleanOptionalAction,
        help="serve the webhooks extension and deliver webhooks (when the backend stores them: "
        "memory and NATS do)",
    )
    env_flag(
        g,
        "--webhooks-allow-http",
        env="OJS_WEBHOOKS_ALLOW_HTTP",
        action="store_true",
        help="accept plain-http webhook URLs (development only: deliveries travel unencrypted)",
    )
    env_flag(
        g,
        "--webhooks-allow-private",
        env="OJS_WEBHOOKS_ALLOW_PRIVATE",
        action="store_true",
        help="accept webhook URLs on loopback, private and link-local addresses (development "
        "only: lets an admin make the server call its own network)",
    )


def webhook_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~ojs_http.settings.HttpSettings` fields of the webhook flags."""
    return {
        "webhooks": bool(args.webhooks),
        "webhooks_allow_http": bool(args.webhooks_allow_http),
        "webhooks_allow_private": bool(args.webhooks_allow_private),
    }


def retention_settings(args: argparse.Namespace) -> Retention:
    """The :class:`Retention` of the retention flags; ``SystemExit`` naming a bad one."""

    def keep(flag: str) -> timedelta | None:
        raw = str(getattr(args, flag.removeprefix("--").replace("-", "_"))).strip()
        if raw in ("0", "P0D", "PT0S"):
            return None
        try:
            ms = parse_duration_ms(raw)
        except ValueError as exc:
            raise SystemExit(f"ojs-server: {flag}: {exc}") from None
        if ms <= 0:
            return None
        return timedelta(milliseconds=ms)

    if args.dead_letter_max < 0:
        raise SystemExit("ojs-server: --dead-letter-max: must be 0 (no cap) or more")
    return Retention(
        completed=keep("--retain-completed"),
        cancelled=keep("--retain-cancelled"),
        discarded=keep("--retain-discarded"),
        dead_letter=keep("--retain-dead-letter"),
        dead_letter_max_count=args.dead_letter_max or None,
        workers=keep("--retain-workers"),
    )


def add_limit_flag(p: argparse.ArgumentParser) -> None:
    """``--limit NAME=N`` (repeatable; ``OJS_LIMITS`` holds comma-separated entries)."""
    env_flag(
        p,
        "--limit",
        env="OJS_LIMITS",
        type=lambda raw: [e.strip() for e in raw.split(",") if e.strip()],
        default=[],
        action="extend",
        metavar="NAME=N",
        help="change a request limit, e.g. --limit max_batch_jobs=1000, repeatable; the "
        "variable holds comma-separated entries (names and defaults: docs/configuration.md)",
    )


def limit_settings(entries: list[str]) -> tuple[Limits, dict[str, Any]]:
    """The service :class:`Limits` and the HTTP limits named by ``NAME=N`` entries.

    Raises ``SystemExit`` naming an unknown limit or a value that is not a positive integer.
    """
    service_names = {f.name for f in attrs.fields(Limits)}
    service: dict[str, int] = {}
    http: dict[str, Any] = {}
    for entry in entries:
        name, _, raw = entry.partition("=")
        name = name.strip()
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise SystemExit(f"ojs-server: --limit {name}: needs a positive integer, got {raw!r}")
        if name in service_names:
            service[name] = value
        elif name in HTTP_LIMITS:
            http[name] = value
        else:
            known = ", ".join(sorted(service_names | set(HTTP_LIMITS)))
            raise SystemExit(f"ojs-server: unknown limit {name!r} (limits: {known})")
    return Limits(**service), http


def add_nats_flags(p: argparse.ArgumentParser) -> None:
    """Credentials and TLS of an external NATS server (secrets are read, never echoed), and
    the storage flags."""
    g = p.add_argument_group("NATS credentials and TLS (external servers)")
    env_flag(g, "--nats-user", env="OJS_NATS_USER", help="user name")
    env_flag(
        g,
        "--nats-password",
        env="OJS_NATS_PASSWORD",
        help="password (prefer the variable: flags show in the process list)",
    )
    env_flag(
        g,
        "--nats-token",
        env="OJS_NATS_TOKEN",
        help="authentication token (prefer the variable)",
    )
    env_flag(
        g,
        "--nats-nkey-seed",
        env="OJS_NATS_NKEY_SEED",
        metavar="FILE",
        help="file holding an NKey seed (SU...)",
    )
    env_flag(
        g,
        "--nats-creds",
        env="OJS_NATS_CREDS",
        metavar="FILE",
        help="a .creds file (user JWT and seed)",
    )
    env_flag(g, "--nats-tls-ca", env="OJS_NATS_TLS_CA", metavar="FILE", help="CA bundle")
    env_flag(
        g,
        "--nats-tls-cert",
        env="OJS_NATS_TLS_CERT",
        metavar="FILE",
        help="client certificate (mutual TLS)",
    )
    env_flag(
        g,
        "--nats-tls-key",
        env="OJS_NATS_TLS_KEY",
        metavar="FILE",
        help="client certificate's private key",
    )
    g = p.add_argument_group("NATS connection and storage")
    env_flag(
        g,
        "--nats-connect-timeout",
        env="OJS_NATS_CONNECT_TIMEOUT",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to keep trying to reach NATS at start-up before exiting with the reason",
    )
    env_flag(
        g,
        "--nats-sync",
        env="OJS_NATS_SYNC",
        metavar="POLICY",
        help="how often the embedded nats-server flushes its store to disk: 'always' (an fsync "
        "per write) or an interval such as 500ms or 2m; none means 1s (docs/reliability.md)",
    )
    env_flag(
        g,
        "--nats-monitor-url",
        env="OJS_NATS_MONITOR_URL",
        metavar="URL",
        help="an external nats-server's monitoring endpoint (http://host:8222), read once to "
        "report its sync policy in health",
    )


def nats_storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``BackendOptions.extra`` entries of the NATS storage flags that were given (the
    backend plugin validates them)."""
    values = {
        "nats_sync": args.nats_sync,
        "nats_monitor_url": args.nats_monitor_url,
        "nats_connect_wait_s": args.nats_connect_timeout,
    }
    return {k: v for k, v in values.items() if v}


def nats_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``BackendOptions.extra["nats"]`` mapping of the NATS flags that were given."""
    names = ("user", "password", "token", "nkey_seed", "creds", "tls_ca", "tls_cert", "tls_key")
    values = {n: getattr(args, f"nats_{n}", None) for n in names}
    return {n: v for n, v in values.items() if v}


def build_authenticator(args: argparse.Namespace) -> tuple[ApiKeys | None, Authenticator | None]:
    """The API keys (``OJS_API_KEYS`` and ``--api-keys-file``) and the app's authenticator.

    Raises ``SystemExit`` with the reason for malformed keys or incomplete JWT settings.
    """
    keys, verifier = build_credentials(args)
    return keys, authenticator_of(keys, verifier)


def authenticator_of(keys: ApiKeys | None, verifier: JwtVerifier | None) -> Authenticator | None:
    """The app's authenticator: the keys, then the JWT verifier (``None``: no credentials)."""
    if keys is not None and verifier is not None:
        return first_of(keys, verifier)
    # Not ``keys or verifier``: an empty keys file still means "authenticate" (nobody may).
    return keys if keys is not None else verifier


def build_credentials(args: argparse.Namespace) -> tuple[ApiKeys | None, JwtVerifier | None]:
    """The API keys (``None`` when none are configured) and the JWT verifier the flags set
    up; both bindings authenticate with them. ``SystemExit`` as :func:`build_authenticator`."""
    try:
        keys = ApiKeys.from_environ(args.api_keys_file)
    except AuthConfigError as exc:
        raise SystemExit(f"ojs-server: {exc}") from None
    jwt_settings = (args.jwt_issuer, args.jwt_audience, args.jwt_jwks_url)
    verifier: JwtVerifier | None = None
    if any(jwt_settings):
        if not all(jwt_settings):
            raise SystemExit(
                "ojs-server: a JWT verifier needs --jwt-issuer, --jwt-audience and --jwt-jwks-url"
            )
        from .jwt_auth import JwtVerifier

        try:
            verifier = JwtVerifier(
                issuer=args.jwt_issuer,
                audience=args.jwt_audience,
                jwks_url=args.jwt_jwks_url,
                role_claim=args.jwt_role_claim,
            )
        except RuntimeError as exc:
            raise SystemExit(f"ojs-server: {exc}") from None
    has_keys = len(keys) > 0 or args.api_keys_file is not None
    return (keys if has_keys else None), verifier


def install_key_reload(keys: ApiKeys, file: str | None, environ: Mapping[str, str]) -> None:
    """Re-read the keys (file and ``OJS_API_KEYS``) on SIGHUP; a bad file keeps the old keys."""

    def reload() -> None:
        try:
            fresh = ApiKeys.load(environ.get(API_KEYS_ENV), file)
        except AuthConfigError as exc:
            log.error("SIGHUP: keeping the current API keys: %s", exc)
            return
        keys.replace(fresh)
        log.info("SIGHUP: reloaded %d API key(s)", len(fresh))

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
