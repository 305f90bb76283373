"""The production recipe for PostgreSQL (deploy/patroni/, run by tools/ha.py): a commit acknowledged by the
primary is on a standby too, so killing the primary (Patroni and PostgreSQL, kill -9, as a lost machine)
under a stream of writes loses none of them, and the synchronous standby takes over and takes writes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from external_tools import absent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import ha  # noqa: E402



@pytest.fixture(autouse=True)
def _needs_the_recipe():
    why = ha.missing()
    if why:
        absent(why, "the high-availability test")


def _sql(cluster: dict, sql: str, timeout_s: float = 5) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSFILE": cluster["pgpassfile"], "PGCONNECT_TIMEOUT": "2"}
    return subprocess.run([os.path.join(ha.binaries(), "psql"), cluster["dsn"], "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          env=env, capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture
def run_dir():
    # not under pytest's temporary directory: PostgreSQL runs as the postgres user, who cannot enter it
    path = tempfile.mkdtemp(prefix="yidi-ha-")
    try:
        yield path
    finally:
        ha.down(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cluster(run_dir):
    return ha.up(run_dir, 3, 15441, timeout_s=90)


def test_killing_the_primary_under_writes_loses_no_acknowledged_commit(cluster, run_dir):
    assert _sql(cluster, "CREATE TABLE acked (id integer PRIMARY KEY)").returncode == 0
    acknowledged: list[tuple[int, float, float]] = []   # (id, when it was sent, when its COMMIT returned)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            sent = time.monotonic()
            try:
                if _sql(cluster, f"INSERT INTO acked VALUES ({i})").returncode == 0:
                    acknowledged.append((i, sent, time.monotonic()))
            except subprocess.TimeoutExpired:
                pass   # not acknowledged: the writer does not know, and does not count it

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acknowledged) < 20:
            time.sleep(0.05)
        killed = ha.kill_primary(run_dir)
        killed_at = time.monotonic()
        assert killed == cluster["leader"]
        roles = ha.wait_ready(run_dir, 60, leader_not=killed)
        while not any(sent > killed_at for _, sent, _ in acknowledged) and time.monotonic() < killed_at + 60:
            time.sleep(0.1)
        time.sleep(1)
    finally:
        stop.set()
        writer.join()
    after = [done for _, sent, done in acknowledged if sent > killed_at]   # sent after the primary was gone
    assert after, "no write was acknowledged after the failover"
    stored = {int(x) for x in _sql(cluster, "SELECT id FROM acked").stdout.split()}
    lost = [i for i, _, _ in acknowledged if i not in stored]
    assert roles["leader"] == cluster["sync"]   # Patroni promotes only the synchronous standby
    assert lost == [], f"{len(lost)} acknowledged commits lost"
    takeover_s = min(after) - killed_at
    print(f"acknowledged {len(acknowledged)}, lost 0, takeover {takeover_s:.1f} s")
