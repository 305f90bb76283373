"""A gateway on the Patroni recipe (three PostgreSQL nodes, synchronous in strict mode) while its primary is
killed under load: no acknowledged settlement is lost and none is performed twice.

The gateway's commit in flight fails with the primary (its outcome unknown to the gateway), so it exits 70; the
test, as the supervisor, starts it again until the promoted standby takes it, and the client retries every
unanswered request with its request_id.  Every acknowledged answer is then given again byte for byte, and the
ledger holds exactly one settlement per request id.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc
import psycopg
import pytest

import builders
from builders import HK_L1
from datagen.spec_fixture import write_spec_dataset
from external_tools import absent
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.store.postgresql import log_reads
from gateway_harness import ROOT, file_person

sys.path.insert(0, os.path.join(ROOT, "tools"))
import ha  # noqa: E402

HAINAN, LIAONING = "460000", "210000"
SETTLE = "/yidi.v1.SettlementService/OutpatientSettle"
PERSON = "HA-1"


@pytest.fixture
def cluster(monkeypatch):
    why = ha.missing()
    if why:
        absent(why, "the failover test")
    run_dir = tempfile.mkdtemp(prefix="yidi-ha-")   # PostgreSQL's user must be able to enter it
    try:
        up = ha.up(run_dir, 3, 16441, timeout_s=90)
        monkeypatch.setenv("PGPASSFILE", up["pgpassfile"])   # the gateway's libpq reads the password there
        yield {**up, "dir": run_dir}
    finally:
        ha.down(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def scrape_standbys(metrics_url: str) -> dict[str, int]:
    """``yidi_pg_standbys`` by sync state, as /metrics reads it from the primary; every standby has a lag figure."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts = {line.split('"')[1]: int(float(line.split()[-1]))
              for line in text.splitlines() if line.startswith("yidi_pg_standbys{")}
    lags = [line for line in text.splitlines() if line.startswith("yidi_pg_replication_lag_bytes{")]
    assert len(lags) == sum(counts.values()), text
    return counts


def request(request_id: str) -> spb.OutpatientSettleRequest:
    """The settlement sent under request_id, every time (its price differs per id)."""
    return builders.outpatient(request_id, PERSON, HK_L1, price=1000 + int(request_id.split("-")[1]))


class Supervisor:
    """Keeps one gateway running on the cluster, starting it again whenever it exits (as systemd would)."""

    def __init__(self, start, data_dir: str, ledger: str, dsn: str) -> None:
        self.start, self.args = start, (data_dir, ledger, "--store", dsn, "--metrics-listen", "127.0.0.1:0")
        self.gw = start(*self.args)
        self.restarts = 0

    def ensure(self, deadline: float) -> None:
        if self.gw.proc.poll() is None:
            return
        assert self.gw.proc.returncode == 70, self.gw.log()[-2000:]   # a failed commit, never a crash
        self.gw.stop()
        while time.monotonic() < deadline:
            try:
                self.gw = self.start(*self.args, timeout=30)
                self.restarts += 1
                return
            except (RuntimeError, AssertionError, subprocess.TimeoutExpired):
                time.sleep(1)   # no writable primary yet: Patroni is promoting the synchronous standby
        raise AssertionError("the gateway did not come back on the promoted standby")


def test_killing_the_primary_under_settlements_loses_and_doubles_nothing(cluster, tmp_path, gateways):
    data_dir = write_spec_dataset(tmp_path / "data")["dir"]
    node = Supervisor(gateways, data_dir, str(tmp_path / "node"), cluster["dsn"])
    file_person(node.gw.client(LIAONING), PERSON, "21010219800101051")
    standbys = scrape_standbys(node.gw.metrics_url)
    assert standbys.get("sync") == 1 and sum(standbys.values()) == 2, standbys   # what /metrics shows an operator
    acked: dict[str, bytes] = {}   # request id → its answer
    unanswered: list[str] = []     # sent, no answer: outcome unknown, retried with the same id
    killed_at = [0.0]
    first_after_kill = [0.0]
    stop = threading.Event()

    def settle(request_id: str) -> None:
        sent = time.monotonic()
        try:
            acked[request_id] = node.gw.client(HAINAN).raw(SETTLE, request(request_id))
            if killed_at[0] and sent > killed_at[0] and not first_after_kill[0]:
                first_after_kill[0] = time.monotonic()
        except (grpc.RpcError, OSError, ValueError):
            unanswered.append(request_id)
            time.sleep(0.2)

    def load() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            settle(f"ha-{n}")

    client = threading.Thread(target=load)
    client.start()
    try:
        while len(acked) < 30:
            time.sleep(0.05)
        ha.kill_primary(cluster["dir"])
        killed_at[0] = time.monotonic()
        deadline = killed_at[0] + 90
        while not first_after_kill[0] and time.monotonic() < deadline:
            node.ensure(deadline)
            time.sleep(0.2)
        count_after = len(acked) + 20
        while len(acked) < count_after and time.monotonic() < deadline:
            node.ensure(deadline)
            time.sleep(0.2)
    finally:
        stop.set()
        client.join()
    assert first_after_kill[0], "no settlement was acknowledged after the primary was killed"
    for request_id in list(unanswered):   # the client's retries, same request ids
        while request_id not in acked:
            node.ensure(time.monotonic() + 60)
            settle(request_id)
    hainan = node.gw.client(HAINAN)
    lost = [rid for rid, answer in acked.items() if hainan.raw(SETTLE, request(rid)) != answer]
    with psycopg.connect(cluster["dsn"]) as conn:
        ids = [r.request_id for r in log_reads(conn, cluster["dsn"]).scan() if r.kind == "settled"]
    duplicated = len(ids) - len(set(ids))
    assert lost == [] and duplicated == 0 and set(ids) == set(acked), (lost, duplicated)
    assert node.restarts >= 1
    print(f"acknowledged {len(acked)}, retried {len(unanswered)}, lost 0, duplicated 0, gateway restarts "
          f"{node.restarts}, first settlement after the kill {first_after_kill[0] - killed_at[0]:.1f} s")
    assert node.gw.stop() == 0

