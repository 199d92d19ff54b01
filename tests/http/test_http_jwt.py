"""The JWT verifier: keys made here, a JWKS served by a local HTTP server, the ASGI app."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ojs_http import create_app
from ojs_http.jwt_auth import JwtVerifier
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

ISSUER = "https://id.example.test/"
AUDIENCE = "ojs"
V1 = "/ojs/v1"


class Jwks:
    """A JWKS endpoint on loopback; ``keys`` is what it serves, ``hits`` how often it was read."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if outer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add(self, public_key: Any, kid: str, alg: str) -> None:
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algorithm.to_jwk(public_key))
        self.keys.append(jwk | {"kid": kid, "alg": alg, "use": "sig"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    try:
        yield server
    finally:
        server.close()


@functools.cache
def new_rsa_key(n: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def rsa_key(jwks: Jwks) -> rsa.RSAPrivateKey:
    key = new_rsa_key(1)
    jwks.add(key.public_key(), "k1", "RS256")
    return key


def token(key: Any, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "iat": now, "exp": now + 300}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, alg, {"kid": kid})


async def call(verifier: JwtVerifier, method: str, path: str, bearer: str | None) -> int:
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False), auth=verifier)
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        response = await client.request(method, path, headers=headers, json={})
        return response.status_code


def verifier(jwks: Jwks, **options: Any) -> JwtVerifier:
    return JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url, **options)


async def test_a_valid_token_grants_its_roles(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(jwks)
    producer = token(rsa_key, ojs_roles=["producer"])
    assert await call(v, "GET", f"{V1}/queues", producer) == 200
    assert await call(v, "GET", f"{V1}/workers", producer) == 403
    admin = token(rsa_key, ojs_roles="admin")
    assert await call(v, "GET", f"{V1}/workers", admin) == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.example.test/"},
        {"aud": "someone-else"},
        {"exp": int(time.time()) - 3600},
        {"exp": None},
        {"ojs_roles": ["root"]},
        {"ojs_roles": None},
    ],
)
async def test_a_bad_token_is_401(
    jwks: Jwks, rsa_key: rsa.RSAPrivateKey, claims: dict[str, Any]
) -> None:
    claims = {"ojs_roles": ["admin"]} | claims
    assert await call(verifier(jwks), "GET", f"{V1}/queues", token(rsa_key, **claims)) == 401


async def test_a_token_signed_by_another_key_is_401(jwks: Jwks, rsa_key: Any) -> None:
    other = new_rsa_key(2)
    forged = token(other, ojs_roles=["admin"])  # same kid, wrong key
    assert await call(verifier(jwks), "GET", f"{V1}/queues", forged) == 401
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "ojs_roles": ["admin"]}, None, "none")
    assert await call(verifier(jwks), "GET", f"{V1}/queues", unsigned) == 401
    assert await call(verifier(jwks), "GET", f"{V1}/queues", "not-a-jwt") == 401


async def test_ec_keys_scope_style_claims_and_a_prefix(jwks: Jwks) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks.add(key.public_key(), "e1", "ES256")
    v = verifier(jwks, role_claim="scope", role_prefix="ojs:")
    good = token(key, kid="e1", alg="ES256", scope="openid ojs:worker profile")
    assert await call(v, "GET", f"{V1}/queues", good) == 200
    assert await call(v, "GET", f"{V1}/events", good) == 403
    unprefixed = token(key, kid="e1", alg="ES256", scope="admin")
    assert await call(v, "GET", f"{V1}/queues", unprefixed) == 401


async def test_keys_are_cached(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(jwks)
    t = token(rsa_key, ojs_roles=["worker"])
    for _ in range(3):
        assert await call(v, "GET", f"{V1}/queues", t) == 200
    assert jwks.hits == 1


async def test_an_unreachable_jwks_is_503_not_500(jwks: Jwks, rsa_key: Any) -> None:
    v = verifier(jwks)
    jwks.down = True
    assert await call(v, "GET", f"{V1}/queues", token(rsa_key, ojs_roles=["admin"])) == 503
