"""make cluster (tools/cluster.py) in a short form: the Patroni recipe and two gateway nodes come up on a small
data set, a settlement goes through each node (the standby's forwarded to the owner), and SIGINT stops every
process it started (gateways, Patroni, PostgreSQL, etcd) and removes its run directory."""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

from datagen.spec_fixture import write_spec_dataset
from external_tools import absent
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.testing import Client, credentials, dev_certs
from gateway_harness import ROOT, file_person

sys.path.insert(0, os.path.join(ROOT, "tools"))
import ha  # noqa: E402
from failover import HAINAN, LIAONING, PERSONS, SETTLE, settlement  # noqa: E402

PG_BASE_PORT = 17441   # apart from the other recipe tests' 15441, 16441 and make failover's 16541


@pytest.fixture(autouse=True)
def _needs_the_recipe():
    why = ha.missing()
    if why:
        absent(why, "make cluster's test")


def test_make_cluster_starts_two_nodes_that_settle_and_sigint_stops_everything(tmp_path):
    data_dir = write_spec_dataset(tmp_path / "data")["dir"]
    parent = tempfile.mkdtemp(prefix="yidi-cluster-test-")
    os.chmod(parent, 0o755)   # PostgreSQL runs as the postgres user when the tests run as root: it must enter it
    run_dir = os.path.join(parent, "c")
    cluster = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "cluster.py"), "--data-dir", data_dir,
                                "--dir", run_dir, "--base-port", "0", "--pg-base-port", str(PG_BASE_PORT),
                                "--certs", dev_certs().directory, "--timeout-s", "60"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed, gateways = [], []
    try:
        for line in cluster.stdout:
            printed.append(line)
            if line.startswith("Ctrl-C stops all of it"):
                break
        text = "".join(printed)
        nodes = dict(re.findall(r"^  (node-[ab])  (127\.0\.0\.1:\d+) ", text, re.M))
        assert set(nodes) == {"node-a", "node-b"}, text
        assert re.search(r"node-a .* owner .* metrics http://127\.0\.0\.1:\d+/metrics", text), text
        assert "yidi status --store 'postgresql://yidi@" in text
        with open(os.path.join(run_dir, "pg", "pgpass")) as f:
            assert f.read().strip().rsplit(":", 1)[1] not in text   # the password file is named, never its content
        gateways = [int(p) for p in re.findall(r" pid (\d+) ", text)]
        pids = gateways + started_by_the_recipe(run_dir)
        assert len(pids) >= 2 + 3 + 1, (pids, text)   # two gateways, three Patroni, etcd (and the postmasters)

        channels = {name: grpc.secure_channel(target, credentials(HAINAN)) for name, target in nodes.items()}
        liaoning = grpc.secure_channel(nodes["node-a"], credentials(LIAONING))
        for n, psn in enumerate(PERSONS, 1):
            file_person(Client(liaoning, LIAONING), psn, f"210102198001010{60 + n}")
        for name, channel in channels.items():   # node-b, the standby, forwards its settlement to node-a
            answer = spb.SettlementResponse.FromString(Client(channel, HAINAN).raw(SETTLE, settlement(f"c-{name}")))
            assert answer.settlement.setl_id and answer.settlement.clearing_month == 202603, name
        for channel in (*channels.values(), liaoning):
            channel.close()

        cluster.send_signal(signal.SIGINT)
        rest, _ = cluster.communicate(timeout=90)
        assert cluster.returncode == 0, rest
        assert "stopping the gateway nodes, Patroni and etcd" in rest and "stopped; removed" in rest, rest
        assert not os.path.exists(run_dir)
        assert [pid for pid in pids if running(pid)] == []
    finally:
        if cluster.poll() is None:
            cluster.kill()
            cluster.wait()
            for pid in gateways:   # in sessions of their own: the kill above did not reach them
                if running(pid, 0):
                    os.kill(pid, signal.SIGKILL)
            ha.down(os.path.join(run_dir, "pg"))
        shutil.rmtree(parent, ignore_errors=True)


def started_by_the_recipe(run_dir: str) -> list[int]:
    """etcd's and each Patroni's pid, and each PostgreSQL postmaster's."""
    pg_dir = os.path.join(run_dir, "pg")
    pids = []
    for path in glob.glob(os.path.join(pg_dir, "*.pid")) + glob.glob(os.path.join(pg_dir, "pg*", "data",
                                                                                   "postmaster.pid")):
        with open(path) as f:
            pids.append(int(f.readline()))
    return pids


def running(pid: int, wait_s: float = 10) -> bool:
    """Still there after wait_s (a zombie waiting for its parent to reap it counts as gone)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except OSError:
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)
