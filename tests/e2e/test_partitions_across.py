"""What a ledger split by insured province holds across its partitions (issue 16 items 4 and 5; docs/operations.md,
Partitions): two gateway nodes on one PostgreSQL ledger of two partitions, each owning one, over real gRPC and
mTLS against a real PostgreSQL.

* one request id sent by one caller for two partitions' settlements at the same moment (a Guangdong insured's at
  partition 0's owner, a Liaoning insured's at partition 1's) settles once, the other call is refused
  IDEMPOTENCY_KEY_REUSED, no node exits, and every other settlement made meanwhile is acknowledged and durable;
"""
from __future__ import annotations

import threading

import grpc

from gateway.transport.status import reason_of

from test_partitions import GUANGDONG_PERSONS, LIAONING_PERSONS, either_province, partition_nodes, settle

import failover  # noqa: E402  (tools/, on the path by test_partitions)
from failover import HAINAN, SETTLE, Settler  # noqa: E402

SHARED_IDS = 20


def _both_at_once(clients, rid: str) -> list:
    """The same request id, at the same moment: a Guangdong insured's at node 0, a Liaoning insured's at node 1."""
    barrier, out = threading.Barrier(2), [None, None]

    def call(k: int) -> None:
        request = settle(rid, (GUANGDONG_PERSONS, LIAONING_PERSONS)[k][0], 1000 + k)
        barrier.wait()
        try:
            out[k] = clients[k].raw(SETTLE, request)
        except grpc.RpcError as err:
            out[k] = reason_of(err) or err.code().name

    threads = [threading.Thread(target=call, args=(k,)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def test_one_request_id_for_two_partitions_at_once_settles_once_and_no_node_exits(tmp_path, pg_url):
    nodes = partition_nodes(tmp_path, pg_url)
    try:
        settler = Settler(nodes, prefix="load", make=either_province)
        settler.start()   # other settlements in the same groups as the contested ones
        clients = [node.gw.client(HAINAN) for node in nodes]
        outcomes = [_both_at_once(clients, f"shared-{n}") for n in range(SHARED_IDS)]
        if not all(node.alive() for node in nodes):   # (a settler's stop would retry on a dead node forever)
            settler._stop.set()
            raise AssertionError([node.gw.log()[-2000:] for node in nodes])
        settler.stop()
        counts = failover.settled_ids(pg_url)
        for n, out in enumerate(outcomes):
            rid = f"shared-{n}"
            assert counts[rid] == 1, (rid, out)
            won = [k for k in (0, 1) if isinstance(out[k], bytes)]
            assert len(won) == 1 and out[1 - won[0]] == "IDEMPOTENCY_KEY_REUSED", (rid, out)
            assert clients[1 - won[0]].raw(SETTLE, settle(rid, (GUANGDONG_PERSONS, LIAONING_PERSONS)[won[0]][0],
                                                          1000 + won[0])) == out[won[0]]   # the winner's answer
        assert settler.acked and all(counts[rid] == 1 for rid in settler.acked)
        assert sum(1 for rid in counts if rid.startswith("load")) == len(settler.acked)   # nothing durable unacked
    finally:
        for node in nodes:
            node.gw.stop()
