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

from datagen.spec_fixture import write_spec_dataset  # noqa: E402
from gateway_harness import start_gateway  # noqa: E402

# Scans every log the session wrote, so it runs after every other test of tests/.
LAST = "test_zz_private_data_in_logs.py"

pytest_plugins = ["pg_cluster"]   # pg_cluster, pg_url: a real PostgreSQL (tests/pg_cluster.py)


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


def _gateway_factory():
    """(start, started): start(data_dir, ledger, *extra, **options) runs a gateway (gateway_harness.start_gateway)."""
    started = []

    def start(data_dir: str, ledger: str, *extra: str, **options):
        gw = start_gateway(str(data_dir), str(ledger), *extra, **options)
        started.append(gw)
        return gw

    return start, started


@pytest.fixture
def gateways():
    """start(...) runs a gateway; whatever a failing test leaves running is killed (by its own handle)."""
    start, started = _gateway_factory()
    yield start
    for gw in started:
        if gw.proc.poll() is None:
            gw.stop(signal.SIGKILL)
        elif not gw.proc.stdout.closed:
            gw.proc.stdout.close()


@pytest.fixture(scope="module")
def module_gateways():
    """start(...) as gateways, for a module's fixtures: a gateway still running at the module's end must stop
    cleanly (exit status 0) then; one a fixture or test stopped itself answered for its stop there."""
    start, started = _gateway_factory()
    yield start
    codes = [(gw.stop(), gw) for gw in started if gw.proc.poll() is None]
    for gw in started:
        if not gw.proc.stdout.closed:
            gw.proc.stdout.close()
    for code, gw in codes:
        assert code == 0, gw.log()[-3000:]


@pytest.fixture(scope="module")
def spec_data(tmp_path_factory) -> dict:
    """The SPEC fixture's data set (datagen/spec_fixture.py) written for the module, with "ledger", the path of
    a ledger beside it that does not exist yet. A module overrides this fixture to seed that ledger first."""
    base = tmp_path_factory.mktemp("spec")
    names = write_spec_dataset(base / "data")
    names["ledger"] = str(base / "ledger.sqlite")
    return names


@pytest.fixture(scope="module")
def gw(request, spec_data, module_gateways):
    """The module's gateway on spec_data; a module's GATEWAY_OPTIONS (a tuple) are added to its serve options."""
    return module_gateways(spec_data["dir"], spec_data["ledger"], *getattr(request.module, "GATEWAY_OPTIONS", ()))
