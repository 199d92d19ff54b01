"""The contract kit works in a package of its own, set up as docs/writing-a-backend.md says.

A throwaway third-party package is written to a temporary directory: a backend module and one
test module (the guide's, with its backend swapped in), and no pytest configuration at all, so
nothing is inherited from this repository's ``pyproject.toml`` (``asyncio_mode = "auto"``).
pytest then runs there, in a process of its own, with the installed ``ojs-core``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BACKEND = '''
"""A third party's backend: the reference one, with one store per path, as a file would be."""
from ojs_memory import MemoryBackend


class AcmeBackend(MemoryBackend):
    name = "acme"
    _stores: dict = {}

    def __new__(cls, path, **options):
        # Every backend opened on one path shares its store (the replica tests need that).
        if path not in cls._stores:
            cls._stores[path] = super().__new__(cls)
            MemoryBackend.__init__(cls._stores[path])
        return cls._stores[path]

    def __init__(self, path, **options):
        pass
'''


def guide_test_module() -> str:
    """The test module the guide shows, with the SQLite backend replaced by ``AcmeBackend``."""
    guide = (ROOT / "docs" / "writing-a-backend.md").read_text()
    block = re.search(
        r"```python\n(# examples/sqlite_backend/tests/test_sqlite_contract.py\n.*?)```",
        guide,
        re.S,
    )
    assert block, "the guide's contract module is missing"
    text = block.group(1)
    text = text.replace("from ojs_sqlite import SqliteBackend", "from acme_ojs import AcmeBackend")
    text = text.replace("SqliteBackend(", "AcmeBackend(")
    header = (
        "from collections.abc import AsyncIterator\nfrom pathlib import Path\n\n"
        "from ojs_core.backend import Backend\n"
    )
    return header + text


@pytest.mark.slow
def test_the_kit_passes_in_a_fresh_package(tmp_path: Path) -> None:
    package = tmp_path / "acme-ojs"
    (package / "src" / "acme_ojs").mkdir(parents=True)
    (package / "src" / "acme_ojs" / "__init__.py").write_text(BACKEND)
    (package / "tests").mkdir()
    (package / "tests" / "test_contract.py").write_text(guide_test_module())
    (package / "pyproject.toml").write_text(
        '[project]\nname = "acme-ojs"\nversion = "0.1.0"\ndependencies = ["ojs-core[testing]"]\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"],
        cwd=package,
        env={"PYTHONPATH": str(package / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"rootdir: {package}" in result.stdout  # no configuration from this repository
    assert "mode=Mode.STRICT" in result.stdout  # pytest-asyncio's default, not our "auto"
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    assert passed >= 240, summary
    assert "error" not in summary
