"""A ledger split by insured province (issue 16 items 4 and 5; docs/postgresql.md, Partitions): two gateway nodes
on one PostgreSQL ledger of two partitions, each owning one, over real gRPC and mTLS against a real PostgreSQL.

Guangdong's insured (44 % 2 = partition 0) and Liaoning's (21 % 2 = partition 1) settle at a Hainan clinic:

* through either node: a call of the other node's partition is forwarded to it and answered byte for byte;
  each settlement id names the partition that recorded it; the other node answers the same request id with
  the same bytes, and a person's accumulators (a read of their partition) are the same through either node;
* the same request id sent to both nodes at the same moment settles once;
* a batch of both partitions' items is split, each partition's items performed by its owner, and answered in
  the items' order; a stream's item of another partition than the node's is refused WRONG_PARTITION; a
  reversal goes to its original's partition;
* ``yidi verify-ledger`` proves both partitions' chains and the shared tables;
* clearing months closed (each close made by both partitions, under the clearing lock) while four clients settle
  both provinces' insured through both nodes: in each partition's log every settlement booked in a closed month
  precedes that partition's close and every later one follows it, none sent after the close was acknowledged is
  booked in the closed month, the report (from either node: both partitions' figures) totals exactly the
  settlements booked in it and its net positions sum to 0; each province's position, from either node, drew
  exactly its insured's settlements.
* make failover's short form (tools/failover.py's layout): two machines each running a process per partition,
  partition 0's owner stalled and then partition 1's killed under clients settling both provinces' insured
  through every process: each partition's standby on the other machine serves it within 5 s, nothing
  acknowledged is lost or doubled, every standby's accumulators are its owner's and the positions balance.
"""
from __future__ import annotations

import os
import subprocess
import sys
import signal
import threading
import time

import grpc
import psycopg

from core.partition import PartitionMap, part_of_seq
from gateway._pb.yidi.v1 import common_pb2 as pb, funds_pb2 as fdpb, settlement_pb2 as spb
from gateway.store.postgresql import scan_every_partition
from gateway.testing import dev_certs
from gateway.transport.status import reason_of
from gateway_harness import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import builders  # noqa: E402
import failover  # noqa: E402
from builders import HK_L1  # noqa: E402
from failover import (GUANGDONG, GUANGDONG_PERSONS, HAINAN, LIAONING, LIAONING_PERSONS, NATIONAL, SETTLE,  # noqa: E402
                      Node, Settler, either_province, two_province_dataset)
REVERSE = "/yidi.v1.SettlementService/Reverse"
BATCH = "/yidi.v1.SettlementService/SettleBatch"
PARTITIONS = PartitionMap(2)
SAME_MOMENT_IDS = 20


def partition_nodes(tmp_path, pg_url) -> list[Node]:
    data_dir = two_province_dataset(tmp_path / "data")
    nodes = [Node(name, data_dir, str(tmp_path), pg_url, "--partitions", "2", "--partition", str(part))
             for part, name in enumerate(("p0", "p1"))]
    for node in nodes:
        node.start("SERVING")
    return nodes


def settle(request_id: str, psn_no: str, price: int = 1000) -> spb.OutpatientSettleRequest:
    return builders.outpatient(request_id, psn_no, HK_L1, price=price)


def test_two_nodes_each_owning_a_partition_settle_both_provinces_exactly(tmp_path, pg_url):
    nodes = partition_nodes(tmp_path, pg_url)
    try:
        hainan = [node.gw.client(HAINAN) for node in nodes]
        answers = {}
        for k, psn_no in enumerate(LIAONING_PERSONS + GUANGDONG_PERSONS):
            part = 1 if psn_no in LIAONING_PERSONS else 0
            for via in (0, 1):   # through the owner, and forwarded by the other node
                rid = f"op-{k}-{via}"
                raw = hainan[via].raw(SETTLE, settle(rid, psn_no, 50000 + 17 * k))
                setl_id = spb.SettlementResponse.FromString(raw).settlement.setl_id
                assert PARTITIONS.of_id(setl_id) == part, (psn_no, setl_id)
                assert hainan[1 - via].raw(SETTLE, settle(rid, psn_no, 50000 + 17 * k)) == raw   # byte for byte
                answers[rid] = raw
        _accumulators_alike_through_either_node(pg_url, nodes)
        _same_request_id_at_once(pg_url, hainan)
        _batch_and_reversal(hainan, answers)
        counts = failover.settled_ids(pg_url)
        assert all(counts[rid] == 1 for rid in answers) and max(counts.values()) == 1
        assert "never-sent" not in counts and "st-ln" not in counts
        verified = subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", pg_url, "--key",
                                   dev_certs().seal_key], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0 and "in 2 partitions" in verified.stdout, verified.stdout + verified.stderr
    finally:
        for node in nodes:
            node.gw.stop()


def _accumulators_alike_through_either_node(url, nodes) -> None:
    """Each person's outpatient fund paid this year, asked through either node, is exactly the fund paid by their
    settlements in the ledger (one owner per person: nothing counted twice or lost)."""
    fund_fen: dict[str, int] = {}
    for _, _, response in ledger(url, "settled"):
        settled = spb.SettlementResponse.FromString(response).settlement
        fund_fen[settled.psn_no] = fund_fen.get(settled.psn_no, 0) + settled.breakdown.fund_pay_sumamt
    for caller, persons in ((LIAONING, LIAONING_PERSONS), (GUANGDONG, GUANGDONG_PERSONS)):
        for psn_no in persons:
            seen = [node.gw.client(caller).raw("/yidi.v1.SettlementService/GetAccumulators",
                                                spb.GetAccumulatorsRequest(psn_no=psn_no, year=2026))
                    for node in nodes]
            assert seen[0] == seen[1], psn_no
            assert pb.Accumulators.FromString(seen[0]).outpatient_fund_paid_fen == fund_fen[psn_no] > 0, psn_no


def _same_request_id_at_once(url, clients) -> None:
    ids = [f"twice-{n}" for n in range(SAME_MOMENT_IDS)]
    for n, rid in enumerate(ids):
        psn_no = (LIAONING_PERSONS + GUANGDONG_PERSONS)[n % 4]
        barrier, out = threading.Barrier(2), [None, None]

        def call(k: int, rid: str = rid, psn_no: str = psn_no, barrier=barrier, out=out) -> None:
            barrier.wait()
            out[k] = clients[k].raw(SETTLE, settle(rid, psn_no))

        threads = [threading.Thread(target=call, args=(k,)) for k in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert out[0] is not None and out[0] == out[1], rid
    counts = failover.settled_ids(url)
    assert [counts[rid] for rid in ids] == [1] * len(ids)


def _batch_and_reversal(clients, answers: dict) -> None:
    # a batch of both partitions' items: each partition's performed by its owner, the outcomes in the items' order
    batch = spb.SettleBatchRequest(items=[spb.SettleItem(outpatient=settle(f"b-{k}", psn_no)) for k, psn_no in
                                          enumerate((GUANGDONG_PERSONS[0], LIAONING_PERSONS[0], GUANGDONG_PERSONS[1],
                                                     LIAONING_PERSONS[1]))])
    raw = clients[1].raw(BATCH, batch)
    answer = spb.SettleBatchResponse.FromString(raw)
    assert [PARTITIONS.of_id(o.settlement.settlement.setl_id) for o in answer.outcomes] == [0, 1, 0, 1]
    assert clients[0].raw(BATCH, batch) == raw   # again, through the other node: the same bytes, nothing more done
    assert clients[0].raw(SETTLE, settle("b-2", GUANGDONG_PERSONS[1])) == \
        answer.outcomes[2].settlement.SerializeToString()
    # a stream is performed by the node it reaches (partition 0's): an item of partition 1 refused, nothing done
    stream = clients[0].channel.stream_stream("/yidi.v1.SettlementService/SettleStream",
                                              request_serializer=lambda m: m.SerializeToString(),
                                              response_deserializer=spb.SettleOutcome.FromString)
    streamed = list(stream(iter([spb.SettleItem(outpatient=settle("st-gd", GUANGDONG_PERSONS[0])),
                                 spb.SettleItem(outpatient=settle("st-ln", LIAONING_PERSONS[0]))]), timeout=30))
    assert PARTITIONS.of_id(streamed[0].settlement.settlement.setl_id) == 0
    assert streamed[1].WhichOneof("outcome") == "refused" and "WRONG_PARTITION" in str(streamed[1].refused)
    # a reversal sent to the node of the other partition goes to its original's partition (1)
    reverse = spb.ReverseRequest(request_id="rev-1", original_request_id="op-0-0", reverse_date=20260316)
    reversed_ = clients[0].raw(REVERSE, reverse)
    assert spb.ReverseResponse.FromString(reversed_).outcome == spb.REVERSE_OUTCOME_SETTLEMENT_CANCELLED
    assert clients[1].raw(REVERSE, reverse) == reversed_
    assert clients[1].raw(SETTLE, settle("op-0-0", LIAONING_PERSONS[0], 50000)) == answers["op-0-0"]
    # a reversal of an original not seen anywhere: recorded where it arrives, and the original then refused
    early = spb.ReverseRequest(request_id="rev-2", original_request_id="never-sent", reverse_date=20260316)
    assert spb.ReverseResponse.FromString(clients[0].raw(REVERSE, early)).outcome == \
        spb.REVERSE_OUTCOME_NOT_PERFORMED
    try:
        clients[0].raw(SETTLE, settle("never-sent", GUANGDONG_PERSONS[1]))
        raise AssertionError("an original settled after its reversal")
    except grpc.RpcError as err:
        assert reason_of(err) == "REQUEST_REVERSED", err


def ledger(url: str, kind: str) -> list[tuple[int, str, bytes]]:
    """(seq, request_id, response) of every partition's records of a kind, in seq order."""
    with psycopg.connect(url) as conn:
        return [(r.seq, r.request_id, r.response) for r in scan_every_partition(conn, url) if r.kind == kind]


def test_months_closed_in_every_partition_while_both_settle_and_the_books_balance(tmp_path, pg_url):
    nodes = partition_nodes(tmp_path, pg_url)
    national = [node.gw.client(NATIONAL) for node in nodes]
    try:
        settler = Settler(nodes, prefix="close", make=either_province)
        settler.start()
        closes = {}
        for k, month in enumerate((202603, 202604)):   # settlements are dated 20260315: booked forward once closed
            settler.wait_for_more(30)
            client = national[1 - k]   # the first close sent to partition 1's node, the second to partition 0's
            closed = client(client.funds.CloseMonth, fdpb.ClearingMonthRequest(request_id=f"close-{month}",
                                                                               month=month))
            closes[month] = time.monotonic()
            assert closed.closed and closed.month == month
            again = national[k](national[k].funds.CloseMonth, fdpb.ClearingMonthRequest(request_id=f"close-{month}",
                                                                                       month=month))
            assert again == closed   # the same request id through the other node: answered, nothing more done
        hainan = nodes[0].gw.client(HAINAN)   # refused by the first partition's owner: no partition changes
        assert hainan.refused(hainan.funds.CloseMonth, fdpb.ClearingMonthRequest(request_id="close-x", month=202605))[1] \
            == "PERMISSION_DENIED"
        settler.wait_for_more(30)
        settler.stop()
        _booked_around_each_partitions_close(pg_url, settler, closes, national)
        _positions_drew_their_insureds_settlements(settler, national)
    finally:
        for node in nodes:
            node.gw.stop()


def _booked_around_each_partitions_close(url, settler, closes, national) -> None:
    booked = {rid: (seq, spb.SettlementResponse.FromString(response).settlement)
              for seq, rid, response in ledger(url, "settled")}
    assert set(settler.acked) <= set(booked)
    close_seq = {(rid, part_of_seq(seq)): seq for seq, rid, _ in ledger(url, "clearing_month")}
    assert sorted(close_seq) == sorted((f"close-{m}", p) for m in closes for p in (0, 1))   # one copy each
    late_sent = 0
    for month, acked_at in closes.items():
        in_month = [s for _, s in booked.values() if s.clearing_month == month]
        for seq, s in booked.values():
            close = close_seq[(f"close-{month}", part_of_seq(seq))]
            assert (seq < close) if s.clearing_month <= month else (seq > close), (s.setl_id, month)
        for rid, (_, _, sent) in settler.acked_by.items():
            if sent > acked_at:
                late_sent += 1
                assert spb.SettlementResponse.FromString(settler.acked[rid]).settlement.clearing_month > month, rid
        asked = fdpb.GetClearingReportRequest(month=month)
        report = national[0](national[0].funds.GetClearingReport, asked)
        assert report == national[1](national[1].funds.GetClearingReport, asked)
        assert {p.insured_province for p in report.pairs} == {"210000", "440000"}, report.pairs
        assert report.totals.settlements == len(in_month) > 0
        assert report.totals.fund_pay_sumamt == sum(s.breakdown.fund_pay_sumamt for s in in_month)
        assert report.totals.medfee_sumamt == sum(s.breakdown.medfee_sumamt for s in in_month)
        assert sum(n.net_fen for n in report.net_positions) == 0 and len(report.net_positions) == 3
    assert late_sent > 0


def _positions_drew_their_insureds_settlements(settler, national) -> None:
    drawn: dict[str, int] = {}
    for answer in settler.acked.values():
        s = spb.SettlementResponse.FromString(answer).settlement
        drawn[s.insuplc_admdvs[:2] + "0000"] = drawn.get(s.insuplc_admdvs[:2] + "0000", 0) + \
            s.breakdown.fund_pay_sumamt
    seen = [list(c(c.funds.GetPositions, fdpb.GetPositionsRequest()).positions) for c in national]
    assert seen[0] == seen[1]
    assert {p.province: p.drawn_fen for p in seen[0] if p.drawn_fen} == drawn
    one = national[0](national[0].funds.GetPositions, fdpb.GetPositionsRequest(province=LIAONING))
    assert [p.drawn_fen for p in one.positions] == [drawn[LIAONING]]


def test_failover_short_form_a_stalled_and_a_killed_owner_are_replaced_and_nothing_is_lost_or_doubled(tmp_path,
                                                                                                    pg_url):
    """make failover's layout and checks (tools/failover.py) in a short form: two machines, each running a process
    per partition, four clients settling both provinces' insured through every process.  Partition 0's owner
    stopped (SIGSTOP) past its lease: its standby on the other machine takes it within 5 s, both partitions settle
    after, and the old owner, resumed, exits 70 (started again: a standby).  Then partition 1's owner killed with
    SIGKILL: its standby takes it within 5 s and the killed process comes back as a standby.  Nothing acknowledged
    is lost or doubled, every standby's accumulators are its owner's, the positions balance and the ledger's
    chains verify."""
    nodes = failover.machine_nodes(two_province_dataset(tmp_path / "data"), str(tmp_path), pg_url, 2)
    failover.start_machines(nodes)
    by_name = {node.name: node for node in nodes}
    try:
        settler = Settler(nodes, prefix="fo", make=either_province, spread=True,
                          part_of=failover.request_partition(2))
        settler.start()
        while settler.count() < 40:
            time.sleep(0.02)
        by_name["a-p0"].kill(signal.SIGSTOP)
        stopped_at = time.monotonic()
        while not by_name["b-p0"].serving():
            assert time.monotonic() - stopped_at < 30, by_name["b-p0"].gw.log()[-3000:]
            time.sleep(0.05)
        took_s = time.monotonic() - stopped_at
        served = settler.count()
        while settler.count() < served + 20:
            assert time.monotonic() - stopped_at < 90, "settlements did not go on after the takeover"
            time.sleep(0.05)
        by_name["a-p0"].kill(signal.SIGCONT)
        assert by_name["a-p0"].gw.proc.wait(30) == 70
        after = [rid for rid, (_, _, sent) in settler.acked_by.items() if sent > stopped_at + took_s]
        assert {PARTITIONS.of_id(spb.SettlementResponse.FromString(settler.acked[rid]).settlement.setl_id)
                for rid in after} == {0, 1}   # both partitions settled after the takeover
        by_name["a-p0"].gw.stop()
        by_name["a-p0"].start("STANDBY")
        killed_s = failover.kill_owner(nodes, settler, 1)   # b-p1; a-p1 takes over, b-p1 comes back a standby
        assert by_name["a-p1"].serving()
        settler.wait_for_more(20)
        settler.stop()
        assert took_s < 5.0 and killed_s < 5.0, (took_s, killed_s)
        result = failover.check(pg_url, settler, nodes, failover.two_province_persons())
        assert (result["lost"], result["duplicated"], result["accumulator_mismatches"]) == (0, 0, 0), result
        assert result["clearing_ok"], result
        verified = subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", pg_url, "--key",
                                   dev_certs().seal_key], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0 and "in 2 partitions" in verified.stdout, verified.stdout + verified.stderr
        print(f"partition 0 taken over {took_s:.2f} s after its owner stopped, partition 1 {killed_s:.2f} s after "
              f"its owner was killed; {result}")
    finally:
        for node in nodes:
            if node.alive():
                node.kill(signal.SIGCONT)
            node.gw.stop(signal.SIGKILL)
