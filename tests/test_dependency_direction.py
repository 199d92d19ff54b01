"""The distributions depend on each other in one direction only.

ojs-http, ojs-grpc, ojs-memory and ojs-nats depend on ojs-core; ojs-core depends on none of them
and on no web framework, gRPC or NATS client, so a backend can be written and tested without
either. Backends never import a binding; the gRPC binding imports no web framework, NATS client
or other distribution (ojs-http's CLI imports it, lazily, for ``--grpc-port``). Checked
statically: every source file is parsed with ``ast``, and nothing is imported or executed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WEB = {"starlette", "hypercorn", "uvicorn", "httptools"}
NATS = {"nats"}
GRPC = {"grpc", "grpc_health", "grpc_reflection", "grpc_status", "ojs_grpc"}
FORBIDDEN: dict[str, set[str]] = {
    "ojs_core": WEB | NATS | GRPC | {"ojs_http", "ojs_memory", "ojs_nats"},
    "ojs_memory": WEB | NATS | GRPC | {"ojs_http", "ojs_nats"},
    "ojs_nats": WEB | GRPC | {"ojs_http", "ojs_memory"},
    "ojs_grpc": WEB | NATS | {"ojs_http", "ojs_memory", "ojs_nats"},
}


def source_files(package: str) -> list[Path]:
    """Every ``.py`` file of ``package`` (``<dist dir>/src/<package>/**``)."""
    return sorted((ROOT / package / "src" / package).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line, module)`` for each absolute import in ``path``.

    Covers ``import a.b``, ``from a.b import c`` (also under ``if TYPE_CHECKING:`` and inside
    functions) and ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal
    name. Relative imports stay inside the package and are skipped.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_has_sources(package: str) -> None:
    # Guards the other tests against passing vacuously after a layout change.
    assert source_files(package), f"no sources found for {package}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_imports(package: str) -> None:
    forbidden = FORBIDDEN[package]
    violations = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in source_files(package)
        for line, module in imported_modules(path)
        if module.split(".")[0] in forbidden
    ]
    assert not violations, f"{package} must not import {sorted(forbidden)}:\n" + "\n".join(
        violations
    )


#: prometheus-client is an optional extra (``metrics``): only these modules may import it, and
#: nothing imports them unless metrics are asked for.
OPTIONAL_METRICS = {
    "ojs_core": {
        "ojs_core/src/ojs_core/prometheus.py",
        "ojs_core/src/ojs_core/webhook_prometheus.py",
        "ojs_core/src/ojs_core/prometheus_scheduling.py",
        "ojs_core/src/ojs_core/prometheus_rate_limits.py",
    },
    "ojs_http": {"ojs_http/src/ojs_http/metrics.py"},
    "ojs_memory": set(),
    "ojs_nats": set(),
    "ojs_grpc": set(),
}


@pytest.mark.parametrize("package", sorted(OPTIONAL_METRICS))
def test_prometheus_client_stays_optional(package: str) -> None:
    importers = {
        str(path.relative_to(ROOT))
        for path in source_files(package)
        for _, module in imported_modules(path)
        if module.split(".")[0] == "prometheus_client"
    }
    assert importers == OPTIONAL_METRICS[package]
    modules = {Path(p).stem for p in OPTIONAL_METRICS[package]}
    eager = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in source_files(package)
        if str(path.relative_to(ROOT)) not in OPTIONAL_METRICS[package]
        for line, module in _top_level_imports(path)
        if module.split(".")[-1] in modules and module.split(".")[0] in (package, "")
    ]
    assert not eager, "imported at module level:\n" + "\n".join(eager)


def _top_level_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Module-level imports only (relative ones as ``.name``), not those inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            yield node.lineno, base
            for alias in node.names:  # ``from . import metrics``
                yield node.lineno, f"{base}.{alias.name}".replace("..", ".")


def test_detector_sees_every_import_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, starlette.routing\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from nats.js import JetStreamContext\n"
        "def f():\n"
        "    import ojs_http\n"
        "    importlib.import_module('hypercorn.asyncio')\n"
        "    __import__('ojs_memory')\n",
        encoding="utf-8",
    )
    found = {module for _, module in imported_modules(sample)}
    assert found == {
        "os",
        "starlette.routing",
        "typing",
        "nats.js",
        "ojs_http",
        "hypercorn.asyncio",
        "ojs_memory",
    }


@pytest.mark.parametrize("package", [*sorted(FORBIDDEN), "ojs_http"])
def test_version_attribute_matches_the_distribution(package: str) -> None:
    """``__version__`` and the distribution's metadata say the same version."""
    text = (ROOT / package / "src" / package / "__init__.py").read_text()
    declared = next(
        line.split("=", 1)[1].strip().strip('"')
        for line in text.splitlines()
        if line.startswith("__version__")
    )
    project = (ROOT / package / "pyproject.toml").read_text()
    assert f'version = "{declared}"' in project


def test_ojs_http_imports_the_grpc_binding_only_lazily() -> None:
    """``ojs-http`` works without ``ojs-grpc`` (an extra): no module imports it at load time."""
    eager = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in source_files("ojs_http")
        for line, module in _top_level_imports(path)
        if module.split(".")[0] in GRPC
    ]
    assert not eager, "imported at module level:\n" + "\n".join(eager)
