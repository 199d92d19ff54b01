"""Every code block of the README files and ``docs/`` runs, or is a file that the suite runs.

The rules, checked block by block:

- every fenced block names its language; ``text`` blocks are output or diagrams, not code;
- a ``python`` or ``toml`` block starts with ``# <path>``, a file of this repository that the
  test suite executes (an example under ``examples/``, a test module, a package's metadata),
  and each of its lines appears in that file, in order (``...`` lines stand for elided code);
- a ``bash`` block is run here, command by command: ``ojs-server`` invocations are run with
  ``--check-config`` (flags, variables, keys, exposure and backend URL are all checked, nothing
  is bound); ``curl`` commands run against a real ``ojs-server`` (memory backend) that this
  test starts, with ``127.0.0.1:8080`` pointing at it; ``export``/variable assignments apply
  to the commands that follow. A few commands are not run here because they are what runs
  this suite or a CI step of their own (``NOT_RUN_HERE`` says where each one runs).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *ROOT.glob("ojs_*/README.md"),
        *ROOT.glob("examples/*/README.md"),
    ]
)

#: Files the suite executes, so a block may be an excerpt of them.
EXECUTED = (
    "examples/embedding/",  # tests/embedding/test_embed_examples.py
    "examples/nats/",  # tests/nats/test_nats_examples.py, .ci/install-check
    "examples/sqlite_backend/",  # its own tests and the conformance run in CI
    "tests/",
)

#: Command prefixes this test does not run, and where they do run.
NOT_RUN_HERE = {
    "uv run pytest": "is this test suite",
    "uv run --with httpx python ../shared/conformance/": "CI runs the conformance suite",
    "python ../shared/conformance/": "CI runs the conformance suite",
    "uv run python -m benchmarks": "CI smoke-runs the benchmarks (--quick)",
    "uv run --with taskiq-nats python -m benchmarks": "a peer comparison, run by hand",
    "pip install": ".ci/install-check installs the wheels with pip",
    "kill -HUP": "tests/http/test_http_startup.py reloads keys on SIGHUP",
    "bash .ci/run": "is CI",
    "uv run python examples/nats/": "tests/nats/test_nats_examples.py runs them as processes",
    "uv run python examples/embedding/": "tests/embedding/test_embed_examples.py runs them",
}


@attrs.frozen
class Block:
    """One fenced code block."""

    doc: Path
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line} ({self.lang or 'no language'})"


def blocks() -> Iterator[Block]:
    """Every fenced block of the documents."""
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = re.match(r"^```(\S*)\s*$", lines[i])
            if fence:
                end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
                yield Block(doc, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]))
                i = end
            i += 1


ALL = list(blocks())


def _ids(kind: set[str]) -> list[pytest.param]:  # type: ignore[valid-type]
    return [pytest.param(b, id=str(b)) for b in ALL if b.lang in kind]


def test_there_are_blocks_and_each_names_its_language() -> None:
    assert len(ALL) > 15
    unnamed = [str(b) for b in ALL if b.lang not in ("python", "toml", "bash", "text")]
    assert unnamed == [], "name the language (python, toml, bash, or text for output)"


@pytest.mark.parametrize("block", _ids({"python", "toml"}))
def test_code_is_an_excerpt_of_a_file_the_suite_runs(block: Block) -> None:
    first, *body = block.text.splitlines()
    header = re.fullmatch(r"# (\S+)", first.strip())
    assert header, f"{block}: start with '# <path of the file this is from>'"
    path = header.group(1)
    assert path.startswith(EXECUTED), f"{block}: {path} is not a file the suite executes"
    source = [line.strip() for line in (ROOT / path).read_text().splitlines()]
    position = 0
    for line in body:
        wanted = line.strip()
        if not wanted or wanted == "...":
            continue
        try:
            position = source.index(wanted, position) + 1
        except ValueError:
            pytest.fail(f"{block}: {wanted!r} is not in {path} (after line {position})")


# -- bash -------------------------------------------------------------------------------------


def commands(text: str) -> Iterator[str]:
    """The commands of a shell block: continuations joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    """A real ojs-server on the memory backend, for the curl examples."""
    from ojs_nats.embedded import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ojs_http.cli", "--backend", "memory", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening" in line:
            break
    try:
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OJS_", "NATS_URL"))}


@pytest.mark.parametrize("block", _ids({"bash"}))
def test_shell_commands_run(block: Block, server_port: int, tmp_path: Path) -> None:
    env = _clean_env()
    script: list[str] = []
    for command in commands(block.text):
        if any(command.startswith(prefix) for prefix in NOT_RUN_HERE):
            continue
        if re.match(r"([A-Z_]+=\$\()?curl ", command):
            # --fail-with-body: an error answer fails the block, as it would fail its reader.
            local = command.replace("127.0.0.1:8080", f"127.0.0.1:{server_port}")
            script.append(local.replace("curl ", "curl --fail-with-body ", 1))
            continue
        words = shlex.split(command, comments=True)
        assignments = {}
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            assignments[name] = value
        if words[:1] == ["export"]:
            script.append(command)
            continue
        if words[-1:] == ["&"]:
            words.pop()
        if words[:2] == ["uv", "run"]:
            words = words[2:]
        if words[:1] == ["ojs-server"]:
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in assignments.items())
            argv = [sys.executable, "-m", "ojs_http.cli", *words[1:], "--check-config"]
            script.append(f"{prefix} {shlex.join(argv)}".strip())
        else:
            pytest.fail(f"{block}: no rule to run {command!r} (add one, or to NOT_RUN_HERE)")
    if not script:
        return  # every command of the block runs elsewhere (NOT_RUN_HERE names where)
    keys = tmp_path / "keys"
    keys.write_text("admin:docs-example-key\n")
    shell = "set -euo pipefail\n" + "\n".join(script).replace("/etc/ojs/keys", str(keys))
    done = subprocess.run(
        ["bash", "-c", shell], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, f"{block}:\n{shell}\n{done.stdout}\n{done.stderr}"
    checked = done.stdout.count("configuration ok")
    assert checked == sum("--check-config" in line for line in script), done.stdout
