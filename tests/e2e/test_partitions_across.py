"""What a ledger split by insured province holds across its partitions (issue 16 items 4 and 5; docs/postgresql.md,
Partitions): two gateway nodes on one PostgreSQL ledger of two partitions, each owning one, over real gRPC and
mTLS against a real PostgreSQL.

* one request id sent by one caller for two partitions' settlements at the same moment (a Guangdong insured's at
  partition 0's owner, a Liaoning insured's at partition 1's) settles once, the other call is refused
  IDEMPOTENCY_KEY_REUSED, no node exits, and every other settlement made meanwhile is acknowledged and durable;
  and a reversal (冲正) of a settlement at one node while the other performs it: one of the two is first, the
  other follows it (cancels it, or is refused REQUEST_REVERSED) or is refused REQUEST_IN_PROGRESS;
* a person filed (备案) through the gateway, not in the reference data, is known by every node: filed through
  the other partition's node, then settled, read and their filing revised through either node, each call
  performed by their partition's owner (the answers alike through both nodes), a stream's item for them at the
  other partition's node refused WRONG_PARTITION; their route written again by a new owner of their partition;
* an institution's admitted patients (在院) are every partition's open stays, in mdtrt_id order, page by page,
  the same bytes through either node;
* a call forwarded to its partition's owner counts against its caller's rate limit once, at the node the
  client called.

Loading reference data at every partition's owner: tests/e2e/test_partition_reference.py.
"""
from __future__ import annotations

import threading
import time

import grpc
import psycopg

from datagen.spec_fixture import make_certno
from gateway._pb.yidi.v1 import common_pb2 as pb, filing_pb2 as fpb, settlement_pb2 as spb
from gateway.transport.status import reason_of

from test_partitions import GUANGDONG, GUANGDONG_PERSONS, LIAONING_PERSONS, PARTITIONS, either_province, \
    partition_nodes, settle, two_province_dataset

import failover  # noqa: E402  (tools/, on the path by test_partitions)
from builders import HK_L3, admit  # noqa: E402
from failover import HAINAN, LIAONING, SETTLE, Node, Settler  # noqa: E402
from gateway_harness import file_person  # noqa: E402

SHARED_IDS = 20
# Each caller's token bucket on both nodes: this many calls at once, then (nearly) none.
BURST = 6
REVERSE = "/yidi.v1.SettlementService/Reverse"


def _at_once(*calls) -> list:
    """Each call's answer (what it returned, or its refusal's reason), the calls made at the same moment."""
    barrier, out = threading.Barrier(len(calls)), [None] * len(calls)

    def run(k: int) -> None:
        barrier.wait()
        try:
            out[k] = calls[k]()
        except grpc.RpcError as err:
            out[k] = reason_of(err) or err.code().name

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def _both_at_once(clients, rid: str) -> list:
    """The same request id, at the same moment: a Guangdong insured's at node 0, a Liaoning insured's at node 1."""
    return _at_once(*(lambda k=k: clients[k].raw(SETTLE, settle(rid, (GUANGDONG_PERSONS, LIAONING_PERSONS)[k][0],
                                                                  1000 + k)) for k in (0, 1)))


def _reversed_while_settled(clients, rid: str) -> list:
    """A reversal (冲正) of rid at node 0, which has not seen it, at the moment node 1 settles it (a Liaoning
    insured's): the reversal's outcome (or a reason) and the settlement's bytes (or a reason)."""
    reverse = spb.ReverseRequest(request_id=f"rev-{rid}", original_request_id=rid, reverse_date=20260316)
    return _at_once(lambda: spb.ReverseResponse.FromString(clients[0].raw(REVERSE, reverse)).outcome,
                    lambda: clients[1].raw(SETTLE, settle(rid, LIAONING_PERSONS[0])))


def test_one_request_id_for_two_partitions_at_once_settles_once_and_no_node_exits(tmp_path, pg_url):
    nodes = partition_nodes(tmp_path, pg_url)
    try:
        settler = Settler(nodes, prefix="load", make=either_province)
        settler.start()   # other settlements in the same groups as the contested ones
        clients = [node.gw.client(HAINAN) for node in nodes]
        outcomes, reversals = [], []
        for n in range(SHARED_IDS):
            outcomes.append(_both_at_once(clients, f"shared-{n}"))
            reversals.append(_reversed_while_settled(clients, f"raced-{n}"))
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
        for n, (reversed_, settled) in enumerate(reversals):   # one of them first, the other after it or refused
            rid = f"raced-{n}"
            assert counts[rid] == (1 if isinstance(settled, bytes) else 0), (rid, reversed_, settled)
            if reversed_ == spb.REVERSE_OUTCOME_NOT_PERFORMED:
                assert settled == "REQUEST_REVERSED", (rid, settled)
            elif reversed_ == spb.REVERSE_OUTCOME_SETTLEMENT_CANCELLED:
                assert isinstance(settled, bytes), (rid, settled)
            else:   # the settlement was being performed in its partition: it stands, the reversal may be retried
                assert reversed_ == "REQUEST_IN_PROGRESS" and isinstance(settled, bytes), (rid, reversed_, settled)
        assert settler.acked and all(counts[rid] == 1 for rid in settler.acked)
        assert sum(1 for rid in counts if rid.startswith("load")) == len(settler.acked)   # nothing durable unacked
    finally:
        for node in nodes:
            node.gw.stop()


def test_a_person_filed_through_the_gateway_is_routed_by_every_node(tmp_path, pg_url):
    nodes = partition_nodes(tmp_path, pg_url)
    try:
        _filed_person_routed_by_every_node(nodes)
        with psycopg.connect(pg_url, autocommit=True) as conn:   # a ledger filed before routes were kept
            conn.execute("DELETE FROM person_routes")
        nodes[1].gw.stop()
        nodes[1].start("SERVING")   # its new owner routes the partition's filings again
        hainan = nodes[0].gw.client(HAINAN)
        deadline = time.monotonic() + 30
        while True:
            try:
                hainan.raw(SETTLE, settle("new-person-2", "P210102900001"))
                break
            except grpc.RpcError as err:
                assert reason_of(err) == "PERSON_NOT_FILED" and time.monotonic() < deadline, err
                time.sleep(0.2)
    finally:
        for node in nodes:
            node.gw.stop()


def test_admitted_patients_are_every_partitions_stays_through_either_node(tmp_path, pg_url):
    nodes = partition_nodes(tmp_path, pg_url)
    try:
        _admitted_from_every_partition(nodes)
    finally:
        for node in nodes:
            node.gw.stop()


def _filed_person_routed_by_every_node(nodes) -> None:
    # a Liaoning insured (partition 1), filed through partition 0's node: performed by partition 1's owner
    liaoning = [node.gw.client(LIAONING) for node in nodes]
    file_person(liaoning[0], "P210102900001", "21010219800101099")
    hainan = [node.gw.client(HAINAN) for node in nodes]
    raw = hainan[0].raw(SETTLE, settle("new-person-1", "P210102900001"))   # node 0 knows them only by the route
    setl_id = spb.SettlementResponse.FromString(raw).settlement.setl_id
    assert PARTITIONS.of_id(setl_id) == 1, setl_id
    assert hainan[1].raw(SETTLE, settle("new-person-1", "P210102900001")) == raw
    stream = hainan[0].channel.stream_stream("/yidi.v1.SettlementService/SettleStream",
                                             request_serializer=lambda m: m.SerializeToString(),
                                             response_deserializer=spb.SettleOutcome.FromString)
    streamed = list(stream(iter([spb.SettleItem(outpatient=settle("st-new", "P210102900001"))]), timeout=30))
    assert streamed[0].WhichOneof("outcome") == "refused" and "WRONG_PARTITION" in str(streamed[0].refused)
    seen = [c.raw("/yidi.v1.SettlementService/GetAccumulators", spb.GetAccumulatorsRequest(psn_no="P210102900001",
                                                                                          year=2026))
            for c in liaoning]
    assert seen[0] == seen[1]   # the settlement's fee went to their deductible, in their partition
    assert pb.Accumulators.FromString(seen[0]).outpatient_deductible_used_fen == \
        spb.SettlementResponse.FromString(raw).settlement.breakdown.medfee_sumamt > 0
    certno = fpb.ListFilingsRequest(certno=make_certno("21010219800101099"))
    assert liaoning[0].raw("/yidi.v1.FilingService/ListFilings", certno) == \
        liaoning[1].raw("/yidi.v1.FilingService/ListFilings", certno)   # by certno alone, through either node
    revised = liaoning[0](liaoning[0].filing.ReviseFiling, fpb.ReviseFilingRequest(
        request_id="revise-new-1", filing=pb.Filing(filing_id="F-P210102900001", dest_admdvs="460100",
                                                    valid_from=20260101)))   # by its filing_id alone
    assert revised.filing.dest_admdvs == "460100"


def _admitted_from_every_partition(nodes) -> None:
    hainan = [node.gw.client(HAINAN) for node in nodes]
    stays = []
    for k, psn_no in enumerate((LIAONING_PERSONS[1], GUANGDONG_PERSONS[0], GUANGDONG_PERSONS[1])):
        stays.append(admit(hainan[k % 2], psn_no, HK_L3, request_id=f"adm-{k}").mdtrt_id)
    assert sorted(PARTITIONS.of_id(m) for m in stays) == [0, 0, 1]
    listed = [c.raw("/yidi.v1.SettlementService/ListAdmitted", spb.ListAdmittedRequest(fixmedins_code=HK_L3))
              for c in hainan]
    assert listed[0] == listed[1]
    patients = spb.ListAdmittedResponse.FromString(listed[0]).patients
    assert [p.mdtrt_id for p in patients] == sorted(stays)
    assert {p.insuplc_admdvs[:2] for p in patients} == {"21", GUANGDONG[:2]}
    paged, token = [], ""
    while True:   # one at a time through partition 1's node: the same stays, in the same order
        page = spb.ListAdmittedResponse.FromString(hainan[1].raw(
            "/yidi.v1.SettlementService/ListAdmitted",
            spb.ListAdmittedRequest(fixmedins_code=HK_L3, page_size=1, page_token=token)))
        paged += [p.mdtrt_id for p in page.patients]
        token = page.next_page_token
        if not token:
            break
    assert paged == sorted(stays)


def test_a_forwarded_call_counts_against_its_callers_rate_once_at_the_node_called(tmp_path, pg_url):
    data_dir = two_province_dataset(tmp_path / "data")
    nodes = [Node(f"r{part}", data_dir, str(tmp_path), pg_url, "--partitions", "2", "--partition", str(part),
                  "--rate-per-caller-per-s", "0.01", "--rate-burst-per-caller", str(BURST)) for part in (0, 1)]
    try:
        for node in nodes:
            node.start("SERVING")
        hainan = [node.gw.client(HAINAN) for node in nodes]
        for k in range(BURST - 2):   # Liaoning's insured through partition 0's node: forwarded to partition 1's
            raw = hainan[0].raw(SETTLE, settle(f"rate-fwd-{k}", LIAONING_PERSONS[k % 2]))
            assert PARTITIONS.of_id(spb.SettlementResponse.FromString(raw).settlement.setl_id) == 1
        direct = 0
        for k in range(BURST + 1):   # the same caller at partition 1's node: its whole burst is still there
            try:
                hainan[1].raw(SETTLE, settle(f"rate-direct-{k}", LIAONING_PERSONS[k % 2]))
                direct += 1
            except grpc.RpcError as err:
                assert reason_of(err) == "OVERLOADED", err
                break
        assert direct == BURST
    finally:
        for node in nodes:
            if node.gw is not None:
                node.gw.stop()
