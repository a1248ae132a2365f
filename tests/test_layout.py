"""The layout shows the architecture: the core decides, the adapters do I/O, and imports go one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "webhook" / "core"
ADAPTERS = ROOT / "webhook" / "adapters"

# What only an adapter may import: our adapters, and the libraries that reach the network, the
# Kubernetes API, processes, signals or the log handlers. The core may read its own data files.
FORBIDDEN_IN_CORE = ("webhook.adapters", "aiohttp", "kubernetes", "prometheus_client", "asyncio", "ssl",
                     "socket", "subprocess", "signal", "http", "urllib.request", "logging")


def imported_modules(source: str, module: str) -> set[str]:
    """Every module `source` imports, relative imports resolved against `module`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden(imports: set[str]) -> list[str]:
    return sorted(m for m in imports for f in FORBIDDEN_IN_CORE if m == f or m.startswith(f + "."))


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_no_core_module_imports_an_adapter_or_does_io(path):
    assert forbidden(imported_modules(path.read_text(), module_name(path))) == []


@pytest.mark.parametrize(("source", "found"), [
    ("from webhook.adapters.store import Store", ["webhook.adapters.store", "webhook.adapters.store.Store"]),
    ("from webhook.adapters import metrics", ["webhook.adapters", "webhook.adapters.metrics"]),
    ("import kubernetes.client", ["kubernetes.client"]),
    ("from ...adapters import cli", ["webhook.adapters", "webhook.adapters.cli"]),
    ("import logging", ["logging"]),
    ("from webhook.core import names\nimport json", []),
    ("import httpx_like_name", []),
])
def test_the_check_sees_every_spelling_of_an_import(source, found):
    assert forbidden(imported_modules(source, "webhook.core.validation.x")) == found


def test_every_module_lives_in_the_core_or_the_adapters():
    top = sorted(p.name for p in (ROOT / "webhook").glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]
    assert core_modules() and sorted(ADAPTERS.rglob("*.py"))


def test_module_names_have_no_near_twins():
    """`reconcile`/`reconciler` or `mutation`/`inject`-style pairs hid which module held what."""
    stems = sorted({p.stem for p in (ROOT / "webhook").rglob("*.py")} - {"__init__", "__main__"})
    twins = [(a, b) for a in stems for b in stems if a < b and (b.startswith(a) and len(b) - len(a) <= 2)]
    assert twins == []
