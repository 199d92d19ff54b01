"""Regenerate ``ojs_grpc/src/ojs_grpc/_gen`` from the official ojs-proto definitions.

    uv run python ojs_grpc/scripts/generate.py PROTO_REPO [--commit SHA]

``PROTO_REPO`` is a clone of https://github.com/openjobspec/ojs-proto (a work tree or a bare
git directory): the ``proto/`` folder of commit ``--commit`` (default: :data:`PINNED`) is
exported with ``git archive`` and compiled with ``python -m grpc_tools.protoc`` (grpcio-tools,
in the workspace's dev group) into ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py``. The
modules are written flat into ``_gen/`` and their ``from ojs.v1 import x_pb2`` imports are
rewritten to ``from . import x_pb2``, so they live inside the ``ojs_grpc`` package. The
descriptors keep their proto names (``ojs/v1/job.proto``, package ``ojs.v1``), which is what
reflection and clients see.

The .proto files themselves are not committed; the generated modules are, with this command.
After regenerating, raise the ``grpcio``/``protobuf`` lower bounds in
``ojs_grpc/pyproject.toml`` to the versions the generated code checks at import
(``GRPC_GENERATED_VERSION`` and ``ValidateProtobufRuntimeVersion``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: The ojs-proto commit the committed modules were generated from.
PINNED = "3a558087aefa518f82e91210669670afd2f7f055"
OUT = Path(__file__).resolve().parents[1] / "src" / "ojs_grpc" / "_gen"
_IMPORT = re.compile(r"^from ojs\.v1 import (\w+_pb2)", re.MULTILINE)


def export(repo: Path, commit: str, into: Path) -> Path:
    """The ``proto/`` folder of ``commit`` in ``repo``, extracted under ``into``."""
    git_dir = repo / ".git" if (repo / ".git").exists() else repo
    archive = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", commit, "proto"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "proto"


def generate(proto_root: Path, out: Path, commit: str) -> list[Path]:
    """Compile every ``ojs/v1/*.proto`` under ``proto_root`` (of ojs-proto ``commit``) into
    ``out``, flat."""
    import grpc_tools

    sources = sorted(p.relative_to(proto_root) for p in (proto_root / "ojs" / "v1").glob("*.proto"))
    if not sources:
        raise SystemExit(f"no ojs/v1/*.proto under {proto_root}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *map(str, sources),
        ]
        subprocess.run(command, check=True)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        written = []
        for path in sorted((Path(tmp) / "ojs" / "v1").iterdir()):
            text = _IMPORT.sub(r"from . import \1", path.read_text(encoding="utf-8"))
            target = out / path.name
            target.write_text(text, encoding="utf-8")
            written.append(target)
    (out / "__init__.py").write_text(
        f'"""Generated from openjobspec/ojs-proto@{commit} by ojs_grpc/scripts/generate.py; '
        'do not edit."""\n',
        encoding="utf-8",
    )
    return written


def main() -> None:
    """Parse the arguments and regenerate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("proto_repo", type=Path, help="a clone of openjobspec/ojs-proto")
    parser.add_argument("--commit", default=PINNED, help=f"commit to compile (default {PINNED})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = export(args.proto_repo, args.commit, Path(tmp))
        written = generate(root, OUT, args.commit)
    for path in written:
        print(path.relative_to(OUT.parents[2]))


if __name__ == "__main__":
    main()
