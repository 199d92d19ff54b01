"""Developer tasks, mirroring the parts of .ci/run. Every session runs through uv.

``uv run nox`` runs lint, typecheck and tests; ``uv run nox -s conformance`` runs the whole OJS
conformance suite against the memory backend (slow: tests wait on real time), and
``uv run nox -s conformance -- --level 1`` passes extra arguments to the conformance runner.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("OJS_SHARED", ROOT.parent / "shared"))

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]


def _sync(session: nox.Session) -> None:
    session.run("uv", "sync", "--all-packages", external=True)


@nox.session
def lint(session: nox.Session) -> None:
    _sync(session)
    session.run("uv", "run", "ruff", "check", ".", external=True)
    session.run("uv", "run", "ruff", "format", "--check", ".", external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    _sync(session)
    session.run("uv", "run", "mypy", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    _sync(session)
    session.run("uv", "run", "pytest", *session.posargs, external=True)


@nox.session
def build(session: nox.Session) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        session.run("uv", "build", "--all-packages", "-o", str(Path(tmp) / "dist"), external=True)


#: The Swagger UI behind ``GET /ojs/docs``: the npm package ``swagger-ui-dist``, pinned by
#: version and by the registry's integrity digest of its tarball (``npm view
#: swagger-ui-dist@VERSION dist.integrity``).
SWAGGER_UI_VERSION = "5.35.0"
SWAGGER_UI_INTEGRITY = (
    "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4Ym"
    "Xkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="
)
#: The files of the tarball the page uses, and their licences; nothing else is vendored.
SWAGGER_UI_FILES = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "favicon-32x32.png",
    "LICENSE",
    "NOTICE",
    "swagger-ui-bundle.js.LICENSE.txt",
)
APIDOCS = ROOT / "ojs_http" / "src" / "ojs_http" / "static" / "apidocs" / "swagger-ui"


@nox.session(name="vendor-swagger-ui")
def vendor_swagger_ui(session: nox.Session) -> None:
    """Refresh the vendored Swagger UI files (``uv run nox -s vendor-swagger-ui``; needs npm).

    To upgrade: change the version and the integrity above, run this, then update the version in
    ``ojs_http/src/ojs_http/static/apidocs/README.md`` and check the page in a browser.
    """
    if shutil.which("npm") is None:
        session.error("npm is needed to fetch swagger-ui-dist from the npm registry")
    with tempfile.TemporaryDirectory() as tmp:
        spec = f"swagger-ui-dist@{SWAGGER_UI_VERSION}"
        session.run("npm", "pack", spec, "--pack-destination", tmp, "--silent", external=True)
        tarball = Path(tmp) / f"swagger-ui-dist-{SWAGGER_UI_VERSION}.tgz"
        digest = hashlib.sha512(tarball.read_bytes()).digest()
        integrity = "sha512-" + base64.b64encode(digest).decode()
        if integrity != SWAGGER_UI_INTEGRITY:
            session.error(f"{spec}: integrity {integrity} is not the pinned one")
        APIDOCS.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            for name in SWAGGER_UI_FILES:
                member = tar.extractfile(f"package/{name}")
                if member is None:
                    session.error(f"{spec} has no {name}")
                (APIDOCS / name).write_bytes(member.read())
    session.log(f"vendored {spec} into {APIDOCS.relative_to(ROOT)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(session: nox.Session, proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            session.error(f"ojs-server exited with code {proc.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    session.error(f"ojs-server did not answer 200 on {url} within 60 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)  # SIGTERM to uv and the server it started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@nox.session
def conformance(session: nox.Session) -> None:
    """Start ojs-server (memory backend), run the conformance suite, judge the report."""
    runner = SHARED / "conformance" / "ojs_conformance.py"
    if not runner.is_file():
        session.error(f"conformance runner not found at {runner} (set OJS_SHARED)")
    _sync(session)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "conformance-memory.json"
        log = Path(tmp) / "server-memory.log"
        server_args = ["--backend", "memory", "--response-content-type", "openjobspec"]
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                ["uv", "run", "ojs-server", *server_args, "--enable-reset", "--port", str(port)],
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            _wait_healthy(session, proc, f"{base}/ojs/v1/health")
            session.run(
                "uv", "run", "--with", "httpx", "python", str(runner),
                "--url", base,
                "--suites", str(SHARED / "conformance" / "suites"),
                "--reset-url", f"{base}/ojs/v1/admin/reset",
                "--json-out", str(report),
                *session.posargs,
                external=True,
                success_codes=[0, 1],
            )  # fmt: skip
        except BaseException:
            _stop(proc)
            sys.stdout.write(log.read_text(errors="replace")[-4000:])
            raise
        _stop(proc)
        # A filtered run (posargs) is not expected to reach the full test count.
        min_tests = "1" if session.posargs else "133"
        try:
            session.run(
                "uv", "run", "python", ".ci/check_conformance.py", str(report),
                "--name", "conformance-memory", "--min-tests", min_tests,
                external=True,
            )  # fmt: skip
        except nox.command.CommandFailed:
            sys.stdout.write(log.read_text(errors="replace")[-4000:])
            raise
