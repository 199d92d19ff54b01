"""The contract kit ships in ojs-core: it may import core, its dependencies and pytest only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "ojs_core" / "src" / "ojs_core" / "testing"
SQLITE = ROOT / "examples" / "sqlite_backend" / "src" / "ojs_sqlite"


def top_level_imports(package: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def test_kit_imports_only_core_and_pytest() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__", "pytest", "attrs", "ojs_core"}
    assert KIT.is_dir()
    extra = {m: files for m, files in top_level_imports(KIT).items() if m not in allowed}
    assert not extra, f"the kit imports {extra}"


def test_sqlite_example_depends_on_core_only() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__", "ojs_core"}
    assert SQLITE.is_dir()
    extra = {m: files for m, files in top_level_imports(SQLITE).items() if m not in allowed}
    assert not extra, f"ojs_sqlite imports {extra}"
