"""make cluster (tools/cluster.py) in a short form: the Patroni recipe and two gateway nodes, each running one
process per partition (the owner of one, the standby for the other), come up on a small data set of two
provinces' insured; a settlement of each province's insured goes through every process (forwarded to its
partition's owner where it is not that process's); the printed kill hint kills partition 0's owner, the
supervisor starts it again (its pid file written again) and partition 0 settles on; SIGINT stops every process
it started (gateways, Patroni, PostgreSQL, etcd) and removes its run directory."""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest

from core.partition import PartitionMap
from external_tools import absent
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.testing import Client, credentials, dev_certs
from gateway_harness import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import ha  # noqa: E402
import builders  # noqa: E402
from failover import (GUANGDONG_PERSONS, HAINAN, LIAONING_PERSONS, SETTLE, two_province_dataset,  # noqa: E402
                      two_province_persons)

PG_BASE_PORT = 17441   # apart from the other recipe tests' 15441, 16441 and make failover's 18541
PARTITIONS = PartitionMap(2)
ROLES = {"node-a-p0": ("owner", "0"), "node-a-p1": ("standby", "1"), "node-b-p0": ("standby", "0"),
         "node-b-p1": ("owner", "1")}


@pytest.fixture(autouse=True)
def _needs_the_recipe():
    why = ha.missing()
    if why:
        absent(why, "make cluster's test")


def test_make_cluster_runs_a_process_per_partition_on_each_node_and_sigint_stops_everything(tmp_path):
    data_dir = two_province_dataset(tmp_path / "data")
    parent = tempfile.mkdtemp(prefix="yidi-cluster-test-")
    os.chmod(parent, 0o755)   # PostgreSQL runs as the postgres user when the tests run as root: it must enter it
    run_dir = os.path.join(parent, "c")
    cluster = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "cluster.py"), "--data-dir", data_dir,
                                "--dir", run_dir, "--base-port", "0", "--pg-base-port", str(PG_BASE_PORT),
                                "--certs", dev_certs().directory, "--timeout-s", "60"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hung = threading.Timer(240, cluster.kill)   # a cluster that never prints what is awaited ends the test
    hung.start()
    gateways = []
    try:
        text = read_until(cluster, "Ctrl-C stops all of it")
        processes = {name: (target, role, part) for name, target, role, part in
                     re.findall(r"^  (node-[ab]-p[01])  (127\.0\.0\.1:\d+) +(owner|standby) (?:of|for) partition "
                                r"(\d)", text, re.M)}
        assert {name: (role, part) for name, (_, role, part) in processes.items()} == ROLES, text
        assert re.search(r"node-a-p0 .* owner .* metrics http://127\.0\.0\.1:\d+/metrics", text), text
        assert "yidi status --store 'postgresql://yidi@" in text
        with open(os.path.join(run_dir, "pg", "pgpass")) as f:
            assert f.read().strip().rsplit(":", 1)[1] not in text   # the password file is named, never its content
        gateways = [int(p) for p in re.findall(r" pid (\d+) ", text)]
        pids = gateways + started_by_the_recipe(run_dir)
        assert len(pids) >= 4 + 3 + 1, (pids, text)   # four gateways, three Patroni, etcd (and the postmasters)

        channels = {name: grpc.secure_channel(target, credentials(HAINAN)) for name, (target, _, _) in
                    processes.items()}
        for name, channel in channels.items():   # each province's insured through every process
            for psn in (LIAONING_PERSONS[0], GUANGDONG_PERSONS[0]):
                answer = settle(channel, f"c-{name}-{psn}", psn)
                assert PARTITIONS.of_id(answer.settlement.setl_id) == \
                    PARTITIONS.of_province(two_province_persons()[psn]), (name, psn)
                assert answer.settlement.clearing_month == 202603, name

        [hint] = re.findall(r"^  (kill -9 \$\(cat (\S+)\))", text, re.M)
        assert hint[1] == os.path.join(run_dir, "node-a-p0.pid"), text
        subprocess.run(hint[0], shell=True, check=True)
        back = read_until(cluster, "node-a-p0 is back: ")
        assert "node-a-p0 exited (-9); starting it again" in back, back
        new_pid = int(re.search(r"node-a-p0 is back: \w+ \S+ pid (\d+)", back).group(1))
        gateways.append(new_pid)
        pids.append(new_pid)
        with open(hint[1]) as f:
            assert int(f.read()) == new_pid
        # partition 0 settles on, through partition 1's owner, at whichever process took its lease
        answer = settle(channels["node-b-p1"], "c-after-kill", GUANGDONG_PERSONS[1], retry_s=30)
        assert PARTITIONS.of_id(answer.settlement.setl_id) == 0
        for channel in channels.values():
            channel.close()

        cluster.send_signal(signal.SIGINT)
        rest, _ = cluster.communicate(timeout=90)
        assert cluster.returncode == 0, rest
        assert "stopping the gateway processes, Patroni and etcd" in rest and "stopped; removed" in rest, rest
        assert not os.path.exists(run_dir)
        assert [pid for pid in pids if running(pid)] == []
    finally:
        hung.cancel()
        if cluster.poll() is None:
            cluster.kill()
            cluster.wait()
        for pid in gateways:   # in sessions of their own: a kill of the cluster does not reach them
            if running(pid, 0):
                os.kill(pid, signal.SIGKILL)
        if os.path.exists(os.path.join(run_dir, "pg")):
            ha.down(os.path.join(run_dir, "pg"))
        shutil.rmtree(parent, ignore_errors=True)


def read_until(cluster: subprocess.Popen, start: str) -> str:
    """What the cluster printed up to and including the line that starts with ``start``."""
    printed = []
    for line in cluster.stdout:
        printed.append(line)
        if line.startswith(start):
            return "".join(printed)
    raise AssertionError(f"the cluster ended before printing {start!r}:\n{''.join(printed)}")


def settle(channel, request_id: str, psn: str, retry_s: float = 0) -> spb.SettlementResponse:
    request = builders.outpatient(request_id, psn, builders.HK_L1)
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return spb.SettlementResponse.FromString(Client(channel, HAINAN).raw(SETTLE, request))
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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
