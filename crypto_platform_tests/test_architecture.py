"""The package's layering, read from its imports: no cycles between packages, modules of a readable size.

Layers, bottom up: settings/partitions/schemas/timeutil, then pure modules (transforms, sources, ml,
quality, monitoring, tables, raw_manifest, fetch_plan, metadata), then resources, then the Dagster
wiring: assets and checks (which never import each other's layer upwards), then automation, then
definitions. A test here fails on an upward import, so a cycle cannot creep back in.
"""

from __future__ import annotations

import ast
from pathlib import Path

from crypto_platform.settings import PACKAGE_DIR

# package -> packages it must never import (directly): what sits above it.
FORBIDDEN: dict[str, set[str]] = {
    "transforms": {"assets", "checks", "automation", "resources", "definitions"},
    "sources": {"assets", "checks", "automation", "definitions"},
    "ml": {"assets", "checks", "automation", "definitions"},
    "quality": {"assets", "checks", "automation", "definitions"},
    "monitoring": {"assets", "checks", "automation", "definitions"},
    "resources": {"assets", "checks", "automation", "definitions"},
    "checks": {"assets", "automation", "definitions"},
    "assets": {"checks", "automation", "definitions"},
    "automation": {"definitions"},
    "serving": {"assets", "automation", "definitions"},  # reads the tables, never the Dagster wiring
}
MAX_MODULE_LINES = 400


def _imports(path: Path) -> set[str]:
    """First component under crypto_platform of every module this file imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "crypto_platform" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_no_upward_imports_between_packages() -> None:
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE_DIR / package).glob("*.py")):
            if hits := _imports(path) & forbidden:
                bad.append(f"{path.relative_to(PACKAGE_DIR)} imports {sorted(hits)}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from crypto_platform.assets.gold import x\nimport crypto_platform.checks.drift\n")
    assert _imports(module) == {"assets", "checks"}
