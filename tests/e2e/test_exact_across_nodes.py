"""Exact across nodes (issue 16 item 5): two gateway nodes on one PostgreSQL ledger partition, one owning it by a
lease, the other a standby forwarding mutating calls to it, over real gRPC and mTLS against a real PostgreSQL.

* The same request id sent to both nodes at the same moment settles once, and both answers are the same bytes.
* A reversal (冲正) racing its original across the two nodes: either the original settled and the reversal
  cancelled it, or the reversal came first and the original is refused REQUEST_REVERSED; asked again, each node
  says the same, and the ledger holds at most one settlement and one cancellation of it.
* Clearing months closed on one node while settlements flow through both: no settlement recorded after the
  close is booked into the closed month, none sent after the close was acknowledged is, the closed month's
  totals are exactly the settlements booked in it, and its net positions sum to 0.
"""
from __future__ import annotations

import threading
import time

import grpc
import psycopg

from gateway._pb.yidi.v1 import funds_pb2 as fdpb, settlement_pb2 as spb
from gateway.transport.status import reason_of
from test_partition_lease import stop_all, two_nodes

import failover
from failover import HAINAN, NATIONAL, SETTLE, Settler, settlement

REVERSE = "/yidi.v1.SettlementService/Reverse"
SAME_MOMENT_IDS = 50
REVERSAL_RACES = 20


def race(calls) -> list:
    """Run the calls in threads released together; each one's answer bytes or its RpcError."""
    start = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(k: int, call) -> None:
        start.wait()
        try:
            out[k] = call()
        except grpc.RpcError as err:
            out[k] = err

    threads = [threading.Thread(target=run, args=(k, call)) for k, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def records(url: str, kind: str) -> list[tuple[int, str, bytes]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT seq, request_id, response FROM records WHERE kind = %s ORDER BY seq",
                            (kind,)).fetchall()


def test_exact_across_two_nodes(tmp_path, pg_url):
    nodes = two_nodes(tmp_path, pg_url)
    try:
        clients = [node.gw.client(HAINAN) for node in nodes]
        _months_closed_while_settling(pg_url, nodes)   # first: its positions are drawn by its settlements alone
        _same_request_id_at_once(pg_url, clients)
        _reversal_racing_its_original(pg_url, clients)   # its cancellations are booked in the open month
    finally:
        stop_all(nodes)


def _same_request_id_at_once(url, clients) -> None:
    ids = [f"twice-{n}" for n in range(SAME_MOMENT_IDS)]
    for request_id in ids:
        answers = race([lambda c=c: c.raw(SETTLE, settlement(request_id)) for c in clients])
        assert all(isinstance(a, bytes) for a in answers), answers
        assert answers[0] == answers[1], request_id
    counts = failover.settled_ids(url)
    assert [counts[rid] for rid in ids] == [1] * len(ids)


def _reversal_racing_its_original(url, clients) -> None:
    outcomes = set()
    for n in range(REVERSAL_RACES):
        original, reversal = f"orig-{n}", f"rev-{n}"
        reverse = spb.ReverseRequest(request_id=reversal, original_request_id=original, reverse_date=20260316)
        calls = [lambda: clients[n % 2].raw(SETTLE, settlement(original)),
                 lambda: clients[1 - n % 2].raw(REVERSE, reverse)]
        settled, reversed_ = race(calls)
        assert isinstance(reversed_, bytes), reversed_
        outcome = spb.ReverseResponse.FromString(reversed_).outcome
        if outcome == spb.REVERSE_OUTCOME_SETTLEMENT_CANCELLED:
            assert isinstance(settled, bytes), settled
        else:
            assert outcome == spb.REVERSE_OUTCOME_NOT_PERFORMED, outcome
            assert isinstance(settled, grpc.RpcError) and reason_of(settled) == "REQUEST_REVERSED", settled
        outcomes.add(outcome)
        for client in clients:   # asked again of either node: the same answers
            assert client.raw(REVERSE, reverse) == reversed_
            if isinstance(settled, bytes):
                assert client.raw(SETTLE, settlement(original)) == settled
            else:
                assert client.refused(client.settlement.OutpatientSettle, settlement(original))[1] == \
                    "REQUEST_REVERSED"
    counts = failover.settled_ids(url)
    for n in range(REVERSAL_RACES):
        assert counts[f"orig-{n}"] <= 1
    print(f"reversal races: outcomes {sorted(spb.ReverseOutcome.Name(o) for o in outcomes)}")


def _months_closed_while_settling(url, nodes) -> None:
    national = [node.gw.client(NATIONAL) for node in nodes]
    settler = Settler(nodes, prefix="close")
    settler.start()
    closes = {}
    for k, month in enumerate((202603, 202604)):   # settlements are dated 20260315: booked forward once closed
        before = settler.count()
        while settler.count() < before + 30:
            time.sleep(0.01)
        client = national[(k + 1) % 2]   # the first close sent to the standby (forwarded), the second to the owner
        close_id = f"close-{month}"
        closed = client(client.funds.CloseMonth, fdpb.ClearingMonthRequest(request_id=close_id, month=month))
        closes[month] = (close_id, time.monotonic())
        assert closed.closed
    before = settler.count()
    while settler.count() < before + 30:
        time.sleep(0.01)
    settler.stop()
    time.sleep(0.5)   # a poll or two: the standby has followed the last close (it is up to a poll behind)

    booked = {rid: (seq, spb.SettlementResponse.FromString(response).settlement)
              for seq, rid, response in records(url, "settled")}
    close_seq = {rid: seq for seq, rid, _ in records(url, "clearing_month")}
    assert set(settler.acked) <= set(booked)
    late_sent = 0
    for month, (close_id, acked_at) in closes.items():
        in_month = [s for seq, s in booked.values() if s.clearing_month == month]
        assert all(seq < close_seq[close_id] for seq, s in booked.values() if s.clearing_month == month)
        assert all(seq > close_seq[close_id] for seq, s in booked.values() if s.clearing_month > month)
        for rid, (_, _, sent) in settler.acked_by.items():
            if sent > acked_at:
                late_sent += 1
                assert spb.SettlementResponse.FromString(settler.acked[rid]).settlement.clearing_month > month, rid
        report = national[0](national[0].funds.GetClearingReport, fdpb.GetClearingReportRequest(month=month))
        assert report == national[1](national[1].funds.GetClearingReport, fdpb.GetClearingReportRequest(month=month))
        assert report.totals.settlements == len(in_month) > 0
        assert report.totals.fund_pay_sumamt == sum(s.breakdown.fund_pay_sumamt for s in in_month)
        assert report.totals.medfee_sumamt == sum(s.breakdown.medfee_sumamt for s in in_month)
        assert sum(n.net_fen for n in report.net_positions) == 0
    assert late_sent > 0
    result = failover.check(url, settler, nodes)
    assert (result["lost"], result["duplicated"], result["accumulator_mismatches"]) == (0, 0, 0), result
    assert result["clearing_ok"], result
