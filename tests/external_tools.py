"""The command-line tools some tests run: buf, node, promtool, protoc.

``make setup`` installs them (tools/package.json with npm, promtool from Debian's
prometheus package, protoc from Debian's protobuf-compiler). Where one is truly
absent a test is skipped with the reason (``absent``; also for PostgreSQL and
the Patroni recipe), except under CI (``CI`` set), where a
missing tool fails the run: CI must check what the tests promise.
"""
from __future__ import annotations

import os
import shutil

import pytest

from gateway_harness import ROOT

NODE_BIN = os.path.join(ROOT, "tools", "node_modules", ".bin")
NODE_PATH = os.path.join(ROOT, "tools", "node_modules")
LOCAL_BIN = os.path.join(ROOT, "build", "tools", "bin")


def need(name: str, how: str) -> str:
    """The path of tool name (tools/node_modules/.bin, build/tools/bin, then PATH); skip or fail if absent."""
    for directory in (NODE_BIN, LOCAL_BIN):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    path = shutil.which(name)
    if path:
        return path
    absent(f"{name} is not installed ({how})", "this check")


def absent(why: str, what: str) -> None:
    """Skip the test for why; under CI fail it instead: CI must run ``what``."""
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must run {what}")
    pytest.skip(why)
