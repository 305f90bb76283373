"""The layers stay where docs/design.md ("Layout") draws them: checked from the imports and the store's parts."""
from __future__ import annotations

import ast
import glob
import inspect
import os

import pytest

from gateway.store import ArchiveStore, Log, Projections, ReconRange, RequestIndex, SnapshotStore, SqliteStore
from gateway.store.snapshot import Snapshots
from gateway.store.reader import ReconCursor
from gateway_harness import ROOT


def _imports(pattern: str) -> list[tuple[str, str]]:
    """(file relative to the repository, absolute module name) of every import in the files matching pattern."""
    out = []
    for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
        rel = os.path.relpath(path, ROOT)
        package = os.path.dirname(rel).replace(os.sep, ".")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [(rel, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
                out += [(rel, f"{module}.{alias.name}") for alias in node.names]
    return out


def test_the_gateway_server_imports_nothing_of_the_data_generator():
    """Only the ``yidi`` command's own tools (datagen, voucher, simulate-month in gateway/cli) use datagen."""
    leaks = [(f, m) for f, m in _imports("gateway/**/*.py")
             if m.split(".")[0] == "datagen" and not f.startswith(os.path.join("gateway", "cli"))]
    assert leaks == []


def test_nothing_outside_the_core_imports_its_extension_module():
    """Other code takes what it needs from ``core``'s exports; only the core's own tests look inside."""
    patterns = ("gateway/**/*.py", "datagen/**/*.py", "bench/**/*.py", "tests/**/*.py")
    leaks = [(f, m) for pattern in patterns for f, m in _imports(pattern)
             if m.startswith("core._core") and not os.path.basename(f).startswith("test_core_")]
    assert leaks == []


def test_only_the_sqlite_backend_talks_to_sqlite():
    """Services, the execution path and the group commit see the store's parts, never a database connection."""
    allowed = (os.path.join("gateway", "store", "sqlite"), os.path.join("gateway", "testing.py"))
    leaks = [(f, m) for f, m in _imports("gateway/**/*.py") if m.split(".")[0] == "sqlite3" and not f.startswith(allowed)]
    assert leaks == []
    services = [(f, m) for f, m in _imports("gateway/transport/**/*.py") if m.startswith("gateway.store.sqlite")]
    assert services == []


@pytest.mark.parametrize("part, implementation", [(Log, SqliteStore), (RequestIndex, SqliteStore),
                                                  (ArchiveStore, SqliteStore), (Projections, SqliteStore),
                                                  (ReconRange, ReconCursor), (SnapshotStore, Snapshots)])
def test_the_sqlite_backend_fills_every_part_of_the_store(part, implementation):
    """Every method of a part, with the same parameters (a second backend implements the same list)."""
    methods = [name for name, value in vars(part).items() if inspect.isfunction(value) and not name.startswith("_")]
    assert methods
    for name in methods:
        implemented = getattr(implementation, name, None)
        assert callable(implemented), f"{implementation.__name__} has no {name}"
        assert list(inspect.signature(implemented).parameters) == list(inspect.signature(vars(part)[name]).parameters), \
            name


def test_the_execution_path_and_the_store_import_nothing_of_the_transport():
    """Gateway (app.py), the store and the reads work on core commands and results; the server hands the
    execution path its reply encoder, so the path of a settlement goes down the layers and back, never up."""
    below = ("gateway/app.py", "gateway/reads.py", "gateway/store/**/*.py")
    leaks = [(f, m) for pattern in below for f, m in _imports(pattern) if m.startswith("gateway.transport")]
    assert leaks == []
