"""A real PostgreSQL for the tests: one throwaway cluster per session (gateway/pgcluster.py), a database per test.

``initdb`` in a temporary directory (as the ``postgres`` OS user when the
tests run as root: initdb refuses root), started with ``pg_ctl`` on a free
loopback port, stopped and removed at the end of the session.  Where the
server binaries are absent (Debian package ``postgresql``, installed by
``make setup`` where apt is usable) the tests that need it are skipped with
that reason, except under CI (``CI`` set), where the run fails: CI must
check what the tests promise.
"""
from __future__ import annotations

import itertools
import os

import pytest

from external_tools import absent
from gateway.pgcluster import Cluster, missing_reason

_NAMES = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster():
    why = missing_reason()
    if why:
        absent(why, "the PostgreSQL tests")
    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A new empty database of the session's cluster: its URL (with the password)."""
    return pg_cluster.create_database(f"yidi_test_{os.getpid()}_{next(_NAMES)}")
