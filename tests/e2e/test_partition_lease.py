"""Two gateway nodes on one PostgreSQL ledger partition (issue 16 items 4 and 6): one owns it by a lease, the other
is a standby following it, over real gRPC and mTLS against a real PostgreSQL.

* A settlement sent to the standby is forwarded to the lease's holder and answered byte for byte.
* The owner killed with SIGKILL under retrying load: the standby takes the lease when it runs out and serves
  within 5 s; nothing acknowledged is lost or doubled (tools/failover.py's ``Settler`` and ``check``).
* The owner stopped with SIGSTOP past its lease: the standby takes over and settles; resumed, the old owner
  acknowledges nothing (what reached it while it was stopped is refused, its appends are fenced by the head
  row's token), exits 70, and the ledger's chain verifies whole.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.testing import dev_certs
from gateway_harness import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import failover  # noqa: E402
from failover import HAINAN, LIAONING, SETTLE, Node, Settler, settlement  # noqa: E402

TAKEOVER_LIMIT_S = 5.0


def two_nodes(tmp_path, pg_url, *extra: str) -> list[Node]:
    data_dir = write_spec_dataset(tmp_path / "data")["dir"]
    nodes = [Node(name, data_dir, str(tmp_path), pg_url, *extra) for name in ("n1", "n2")]
    nodes[0].start("SERVING")
    failover.file_persons(nodes[0].gw)
    nodes[1].start("STANDBY")
    return nodes


def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        if node.gw is not None:
            node.gw.stop(signal.SIGKILL)


def test_a_standby_follows_forwards_mutations_and_serves_within_5_s_of_the_owner_killed(tmp_path, pg_url):
    nodes = two_nodes(tmp_path, pg_url, "--metrics-listen", "127.0.0.1:0")
    owner, standby = nodes
    try:
        assert (lease_held(owner), lease_held(standby)) == (1, 0)
        assert not standby.serving() and owner.serving()
        # a settlement sent to the standby is performed by the lease's holder and answered byte for byte
        first = standby.gw.client(HAINAN).raw(SETTLE, settlement("s-1"))
        assert owner.gw.client(HAINAN).raw(SETTLE, settlement("s-1")) == first
        assert forwarded(standby) == 1 and forwarded(owner) == 0
        liaoning = [node.gw.client(LIAONING) for node in nodes]
        accumulators = [c(c.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no=failover.PERSONS[0],
                                                                                 year=2026)) for c in liaoning]
        assert accumulators[0] == accumulators[1]

        settler = Settler(nodes)
        settler.start()
        takeover_s = failover.kill_owner(nodes, settler)
        while settler.count() < 60:
            time.sleep(0.05)
        settler.stop()
        assert takeover_s < TAKEOVER_LIMIT_S, takeover_s
        result = failover.check(pg_url, settler, nodes)
        print(f"takeover after kill -9: {takeover_s:.2f} s; {result}")
        assert (result["lost"], result["duplicated"], result["accumulator_mismatches"]) == (0, 0, 0), result
        assert result["clearing_ok"], result
        assert standby.gw.client(HAINAN).raw(SETTLE, settlement("s-1")) == first
        assert (lease_held(standby), lease_held(owner)) == (1, 0)   # the killed node is back as the standby
    finally:
        stop_all(nodes)


def test_a_stalled_owner_is_deposed_acknowledges_nothing_after_it_resumes_and_the_chain_verifies(tmp_path, pg_url):
    nodes = two_nodes(tmp_path, pg_url)
    owner, standby = nodes
    try:
        settler = Settler(nodes, threads=2)   # calls to the stopped owner time out and are retried on the other
        settler.start()
        while settler.count() < 20:
            time.sleep(0.02)
        owner.kill(signal.SIGSTOP)   # mid-load: calls and perhaps a commit in flight
        stopped_at = time.monotonic()
        # calls that reach the stalled owner now: it must never acknowledge one of them
        late: dict[str, object] = {}
        late_calls = [threading.Thread(target=_late_call, args=(owner.gw, f"late-{n}", late)) for n in range(3)]
        for thread in late_calls:
            thread.start()
        while len([rid for rid, (_, _, sent) in dict(settler.acked_by).items() if sent > stopped_at]) < 5:
            assert time.monotonic() - stopped_at < 60, "the standby did not take over"
            time.sleep(0.05)
        took_s = settler.first_ack_sent_after(stopped_at) - stopped_at
        owner.kill(signal.SIGCONT)
        for thread in late_calls:
            thread.join()
        assert owner.gw.proc.wait(30) == 70
        settler.stop()
        assert all(isinstance(outcome, grpc.RpcError) for outcome in late.values()), late
        counts = failover.settled_ids(pg_url)
        log = owner.gw.log()
        assert not any(rid.startswith("late-") for rid in counts)
        assert all(counts[rid] == 1 for rid in settler.acked) and max(counts.values()) == 1
        # why it stopped: its lease ran out or was taken, and a commit it had in flight was refused by the token
        # (Deposed) or ended with its session by the new owner; which of them first depends on the moment it stopped
        said = [why for why in ("NOT_SERVING, exiting", "Deposed", "server closed the connection") if why in log]
        assert said, log[-3000:]
        print(f"standby served {took_s:.2f} s after the owner stopped; {len(settler.acked)} acknowledged; late "
              f"calls refused {sorted({failover.refusal_reason(o) for o in late.values()})}; the old owner said {said}")
        verified = subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", pg_url, "--key",
                                   dev_certs().seal_key], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0 and verified.stdout.startswith("OK "), verified.stdout + verified.stderr
    finally:
        stop_all(nodes)


def forwarded(node: Node) -> int:
    """Settlements the node sent on to the lease's holder and had answered."""
    with urllib.request.urlopen(node.gw.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    found = re.search(r'^yidi_forwarded_calls_total\{method="SettlementService/OutpatientSettle",outcome="OK"\} (\S+)$',
                      text, re.M)
    return int(float(found.group(1))) if found else 0


def lease_held(node: Node) -> int:
    with urllib.request.urlopen(node.gw.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    return int(float(re.search(r'^yidi_partition_lease_held\{partition="0"\} (\S+)$', text, re.M).group(1)))


def _late_call(gw, request_id: str, out: dict) -> None:
    try:
        out[request_id] = gw.client(HAINAN).raw(SETTLE, settlement(request_id))
    except grpc.RpcError as err:
        out[request_id] = err

