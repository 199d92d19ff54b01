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
    "IPAddress",
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


#: NAT64's well-known prefix: the address it carries is what is reached (RFC 6052).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _carried(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address tunnels to, if it carries one (mapped, 6to4, Teredo
    server side, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_ip(ip: IPAddress) -> bool:
    """Whether ``ip`` is inside a network webhooks may not reach (an IPv6 address that
    tunnels to an IPv4 one, mapped, 6to4, Teredo or NAT64, judged as that IPv4 address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = _carried(ip)
        if carried is not None:
            ip = carried
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
    if any(c <= " " or c == "\x7f" for c in url):
        raise ValidationError("must not contain spaces or control characters", path=path)
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
    try:
        host.encode("idna")  # every label 1-63 characters, the whole name a valid host name
    except UnicodeError:
        raise ValidationError("does not name a valid host", path=path) from None
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


async def check_resolved(url: str, *, path: str = "url") -> list[IPAddress]:
    """The addresses ``url``'s host resolves to, all allowed; refuse ``url`` when any is
    blocked. A name that does not resolve gives none (the request then fails and is retried,
    checked again each time). A request must go to one of these addresses, not resolve the
    name again (DNS rebinding: a second answer may be an inside address)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    check_host(host, path=path)
    literal = literal_ip(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        return []
    found: list[IPAddress] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # an IPv6 scope id is not part of it
        ip = literal_ip(address)
        if ip is None:
            continue
        if blocked_ip(ip):
            raise BlockedAddressError(
                "resolves to a loopback, private, link-local or reserved address", path=path
            )
        found.append(ip)
    return found
