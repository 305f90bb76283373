"""Shared test options and fixtures. Long runs (load, soak, crash loops) need --runslow."""
import signal

import pytest

from gateway_harness import start_gateway

pytest_plugins = ["pg_cluster"]   # pg_cluster, pg_url: a real PostgreSQL (tests/pg_cluster.py)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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
