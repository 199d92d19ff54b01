"""Which URLs a webhook may target: HTTPS, and no address inside the server's network.

A webhook makes the server send requests to a URL an API caller chose, so an unchecked URL
lets that caller reach what only the server can reach (server-side request forgery): a cloud
metadata endpoint (169.254.169.254), a database on localhost, an admin port on the private
network. Refused unless the server allows private targets (``allow_private``):

* hosts that are literal loopback, private, link-local, unspecified, multicast or reserved
  addresses, in any spelling the resolver accepts (``127.1``, ``2130706433``, ``0x7f000001``,
  ``[::1]``, ``[::ffff:127.0.0.1]``);
* ``localhost`` and names below it;
* names that resolve to such an address (:func:`check_resolved`, at creation and again before
  every request, redirects included).

Plain ``http`` is refused unless allowed (``allow_http``, for development).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

from .errors import ValidationError

__all__ = [
    "MAX_URL_CHARS",
    "BlockedAddressError",
    "blocked_ip",
    "check_resolved",
    "check_url",
    "literal_ip",
]

MAX_URL_CHARS = 2048
_IPV4_SPELLING = frozenset("0123456789abcdefxABCDEFX.")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(ValidationError):
    """The URL's host is, or resolves to, an address webhooks may not target."""


def literal_ip(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is one: IPv6 (bracketless), dotted IPv4, and the
    numeric forms the C resolver also accepts (decimal ``2130706433``, hex, octal, short)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and set(host) <= _IPV4_SPELLING and any(c.isdigit() for c in host[:1]):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def blocked_ip(ip: IPAddress) -> bool:
    """Whether ``ip`` is inside a network webhooks may not reach (IPv4-mapped IPv6 judged as
    the IPv4 address it carries)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or not ip.is_global
    )


def check_url(url: object, *, allow_http: bool, allow_private: bool, path: str = "url") -> str:
    """``url`` if a webhook may target it (without resolving it), else a 400 naming ``path``."""
    if not isinstance(url, str) or not url:
        raise ValidationError("must be a non-empty string", path=path)
    if len(url) > MAX_URL_CHARS:
        raise ValidationError(f"must be at most {MAX_URL_CHARS} characters", path=path)
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises for a malformed port
    except ValueError:
        raise ValidationError("is not a valid URL", path=path) from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValidationError("must be an https URL", path=path)
    if scheme == "http" and not allow_http:
        raise ValidationError(
            "must use https (plain http is refused unless the server allows it)", path=path
        )
    if not host:
        raise ValidationError("must name a host", path=path)
    if parts.username is not None or parts.password is not None:
        raise ValidationError("must not carry credentials", path=path)
    if not allow_private:
        check_host(host, path=path)
    return url


def check_host(host: str, *, path: str = "url") -> None:
    """Refuse a host that is a blocked literal address or ``localhost``."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise BlockedAddressError("must not target localhost", path=path)
    ip = literal_ip(name)
    if ip is not None and blocked_ip(ip):
        raise BlockedAddressError(
            "must not target a loopback, private, link-local or reserved address", path=path
        )


async def check_resolved(url: str, *, path: str = "url") -> None:
    """Refuse ``url`` when its host resolves to a blocked address. A name that does not
    resolve passes (the request then fails and is retried, re-checked each time)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    check_host(host, path=path)
    if literal_ip(host) is not None:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        return
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # an IPv6 scope id is not part of it
        ip = literal_ip(address)
        if ip is not None and blocked_ip(ip):
            raise BlockedAddressError(
                "resolves to a loopback, private, link-local or reserved address", path=path
            )
