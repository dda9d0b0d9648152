"""The layering holds: pyproject.toml's import-linter contracts pass (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What import-linter cannot tell apart: it names an external package by its top-level name, so
# the contract allows `urllib` (core quotes URLs with urllib.parse) and this test forbids the
# network halves of the standard library by their full names.
NETWORK_STDLIB = ("urllib.request", "urllib.error", "http.client", "http.server")


def test_import_contracts_pass() -> None:
    # A fresh interpreter in the repository root, as `lint-imports` runs in CI: the checkout's
    # `deployer` is the one analysed, and no cache folder is written.
    code = (
        "import sys\n"
        "from importlinter.cli import lint_imports\n"
        "sys.exit(lint_imports(no_cache=True, no_logo=True))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout


def _imported_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_core_imports_no_network_module_of_the_standard_library() -> None:
    offenders = []
    for path in sorted((ROOT / "deployer" / "core").rglob("*.py")):
        names = _imported_names(ast.parse(path.read_text(encoding="utf-8")))
        for name in names:
            if any(name == banned or name.startswith(banned + ".") for banned in NETWORK_STDLIB):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


# Package data is read in adapters/data_files.py and reaches core as texts through the
# DataSource seam (core/data_source.py); `core-no-io` forbids importlib in core too.
PACKAGE_DATA_READERS: set[str] = set()


def test_core_reads_no_package_data() -> None:
    readers = set()
    for path in sorted((ROOT / "deployer" / "core").rglob("*.py")):
        names = _imported_names(ast.parse(path.read_text(encoding="utf-8")))
        if any(n == "importlib.resources" or n.startswith("importlib.resources.") for n in names):
            readers.add(str(path.relative_to(ROOT)))
    assert readers <= PACKAGE_DATA_READERS, readers
