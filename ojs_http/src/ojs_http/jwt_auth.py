"""Bearer JWTs from an OIDC provider as credentials (the optional extra ``ojs-http[jwt]``).

:class:`JwtVerifier` is an authenticator (see :mod:`ojs_http.auth`): it verifies the token's
signature with a key from the provider's JWKS (fetched, then cached by PyJWT), its issuer,
audience and expiry, and reads the caller's roles from one claim. The claim may hold a role
name, a list of names, or a space-separated string (the OAuth ``scope`` style); names that are
not OJS roles are ignored, and an optional ``role_prefix`` (``ojs:``) is stripped first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request

from ojs_core.errors import OJSError

from .auth import Role, bearer_token

__all__ = ["AuthUnavailableError", "JwtVerifier"]

log = logging.getLogger("ojs.auth.jwt")
_ROLE_NAMES = {r.value: r for r in Role}


class AuthUnavailableError(OJSError):
    """The identity provider's keys cannot be fetched: nothing can be verified right now."""

    code = "auth_unavailable"
    status = 503
    retryable = True


class JwtVerifier:
    """Verifies ``Authorization: Bearer <JWT>`` against a JWKS URL; see the module docstring.

    ``algorithms`` are the signature algorithms accepted (never ``none``); ``leeway_s`` the
    clock skew tolerated on ``exp``/``nbf``/``iat``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        role_claim: str = "ojs_roles",
        role_prefix: str = "",
        algorithms: tuple[str, ...] = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"),
        leeway_s: float = 30.0,
        jwks_cache_s: int = 300,
    ) -> None:
        try:
            import jwt
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise RuntimeError(
                "JWT authentication needs PyJWT: pip install 'ojs-http[jwt]'"
            ) from None
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.role_prefix = role_prefix
        self.algorithms = list(algorithms)
        self.leeway_s = leeway_s
        self._jwt = jwt
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=jwks_cache_s)

    async def __call__(self, request: Request) -> frozenset[Role] | None:
        """The roles of the request's bearer JWT; ``None`` for no token or an invalid one."""
        token = bearer_token(request)
        if token is None:
            return None
        return await self.roles_for_token(token)

    async def roles_for_token(self, token: str) -> frozenset[Role] | None:
        """The roles of a bearer JWT (also what the gRPC binding's metadata carries);
        ``None`` for an invalid one."""
        if token.count(".") != 2:
            return None
        jwt = self._jwt
        try:
            # PyJWKClient fetches with urllib (blocking): keep it off the event loop.
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthUnavailableError("the identity provider's keys cannot be fetched") from exc
        except jwt.PyJWTError as exc:
            log.debug("JWT rejected before verification: %s", type(exc).__name__)
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            log.debug("JWT rejected: %s", type(exc).__name__)
            return None
        return self._roles(claims.get(self.role_claim)) or None

    def _roles(self, raw: Any) -> frozenset[Role]:
        names: list[str] = []
        if isinstance(raw, str):
            names = raw.split()
        elif isinstance(raw, list):
            names = [n for n in raw if isinstance(n, str)]
        out: set[Role] = set()
        for name in names:
            if self.role_prefix:
                if not name.startswith(self.role_prefix):
                    continue
                name = name[len(self.role_prefix) :]
            role = _ROLE_NAMES.get(name)
            if role is not None:
                out.add(role)
        return frozenset(out)
