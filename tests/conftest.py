"""Shared test options and fixtures. Long runs (load, soak, crash loops) need --runslow.

The tests mirror the code: tests/core (the core and the engine's parts), tests/datagen (the data generator),
tests/gateway (a gateway's parts, most over a real gateway), tests/e2e (whole-system runs: crash, tamper,
external clients, the README, hostile input). The support modules (gateway_harness, gateway_seed, crash,
tamper, race, money_layer, external_tools) stay in tests/ itself, importable by name from every directory.
"""
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gateway_harness import start_gateway  # noqa: E402

# Scans every log the session wrote, so it runs after every other test of tests/.
LAST = "test_zz_private_data_in_logs.py"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    _run_last_of_tests(items)
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _run_last_of_tests(items) -> None:
    """Moves LAST's tests behind the last other test of tests/ (bench/, collected after, keeps its place)."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    last = [item for item in items if item.path.name == LAST]
    rest = [item for item in items if item.path.name != LAST]
    after = max((i + 1 for i, item in enumerate(rest) if str(item.path).startswith(tests_dir + os.sep)), default=0)
    items[:] = rest[:after] + last + rest[after:]


@pytest.fixture
def gateways():
    """start(...) runs a gateway; whatever a failing test leaves running is killed (by its own handle)."""
    started = []

    def start(data_dir: str, ledger: str, *extra: str):
        gw = start_gateway(data_dir, ledger, *extra)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if gw.proc.poll() is None:
            gw.stop(signal.SIGKILL)
        elif not gw.proc.stdout.closed:
            gw.proc.stdout.close()
