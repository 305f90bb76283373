"""Exact across nodes (issue 16 item 5): two gateway nodes on one PostgreSQL ledger partition, one owning it by a
lease, the other a standby forwarding mutating calls to it, over real gRPC and mTLS against a real PostgreSQL.

* The same request id sent to both nodes at the same moment settles once, and both answers are the same bytes.
* A reversal (冲正) racing its original across the two nodes: either the original settled and the reversal
  cancelled it, or the reversal came first and the original is refused REQUEST_REVERSED; asked again, each node
  says the same, and the ledger holds at most one settlement and one cancellation of it.
* Clearing months closed on one node while settlements flow through both: no settlement recorded after the
  close is booked into the closed month, none sent after the close was acknowledged is, the closed month's
  totals are exactly the settlements booked in it, and its net positions sum to 0.

And what the nodes say of themselves (item 9): ``yidi status --store`` lists the partition's lease from the
database, and each node's status answer names its role and the partitions it owns.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import grpc
import psycopg

from gateway._pb.yidi.v1 import admin_pb2 as apb, funds_pb2 as fdpb, settlement_pb2 as spb
from gateway.store.postgresql import log_reads
from gateway.testing import dev_certs
from gateway.transport.status import reason_of
from gateway_harness import ROOT
from test_partition_lease import stop_all, two_nodes

import failover
from failover import HAINAN, NATIONAL, SETTLE, Settler, settlement

REVERSE = "/yidi.v1.SettlementService/Reverse"
SAME_MOMENT_IDS = 50
REVERSAL_RACES = 20


def race(calls) -> list:
    """Send the calls, (client, method, request), from threads released together; each one's answer bytes or its
    RpcError."""
    start = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(k: int, client, method: str, request) -> None:
        start.wait()
        try:
            out[k] = client.raw(method, request)
        except grpc.RpcError as err:
            out[k] = err

    threads = [threading.Thread(target=run, args=(k, *call)) for k, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def records(url: str, kind: str) -> list[tuple[int, str, bytes]]:
    with psycopg.connect(url) as conn:
        return [(r.seq, r.request_id, r.response) for r in log_reads(conn, url).scan() if r.kind == kind]


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
        answers = race([(client, SETTLE, settlement(request_id)) for client in clients])
        assert all(isinstance(a, bytes) for a in answers), answers
        assert answers[0] == answers[1], request_id
    counts = failover.settled_ids(url)
    assert [counts[rid] for rid in ids] == [1] * len(ids)


def _reversal_racing_its_original(url, clients) -> None:
    outcomes = set()
    for n in range(REVERSAL_RACES):
        original, reversal = f"orig-{n}", f"rev-{n}"
        reverse = spb.ReverseRequest(request_id=reversal, original_request_id=original, reverse_date=20260316)
        settled, reversed_ = race([(clients[n % 2], SETTLE, settlement(original)),
                                   (clients[1 - n % 2], REVERSE, reverse)])
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
        settler.wait_for_more(30)
        client = national[(k + 1) % 2]   # the first close sent to the standby (forwarded), the second to the owner
        close_id = f"close-{month}"
        closed = client(client.funds.CloseMonth, fdpb.ClearingMonthRequest(request_id=close_id, month=month))
        closes[month] = (close_id, time.monotonic())
        assert closed.closed
    settler.wait_for_more(30)
    settler.stop()

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


def yidi(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_status_lists_the_leases_and_each_node_says_its_role(tmp_path, pg_url):
    empty = yidi("status", "--store", pg_url)
    assert empty.returncode == 1 and "holds no Yidi ledger yet" in empty.stderr, empty.stderr
    nodes = two_nodes(tmp_path, pg_url)
    owner, standby = nodes
    try:
        listed = yidi("--json", "status", "--store", pg_url)
        assert listed.returncode == 0, listed.stderr
        [lease] = json.loads(listed.stdout)["leases"]
        assert (lease["part"], lease["owner"], lease["address"], lease["expired"]) == (0, "n1", owner.gw.target, False)
        assert lease["token"] >= 1 and 0 < lease["expires_in_s"] <= 10, lease
        text = yidi("status", "--store", pg_url).stdout
        assert f"n1               {owner.gw.target}" in text and " in " in text, text
        assert "password" not in listed.stdout + text

        roles = []
        for node in nodes:
            national = node.gw.client(NATIONAL)
            answer = national(national.admin.GetReferenceDataStatus, apb.GetReferenceDataStatusRequest())
            roles.append((answer.node_id, answer.node_role, list(answer.owned_partitions)))
        assert roles == [("n1", "owner", [0]), ("n2", "standby", [])]
        shown = yidi("--target", standby.gw.target, "--certs", dev_certs().directory, "--caller", "national",
                     "status")
        assert shown.returncode == 0 and "node n2: standby" in shown.stdout, shown.stdout + shown.stderr

        owner.gw.stop()   # a clean stop gives the lease up: the standby takes it
        deadline = time.monotonic() + 30
        while not standby.serving():
            assert time.monotonic() < deadline, standby.gw.log()[-3000:]
            time.sleep(0.1)
        [lease] = json.loads(yidi("--json", "status", "--store", pg_url).stdout)["leases"]
        assert (lease["owner"], lease["address"]) == ("n2", standby.gw.target)
        national = standby.gw.client(NATIONAL)
        answer = national(national.admin.GetReferenceDataStatus, apb.GetReferenceDataStatusRequest())
        assert (answer.node_role, list(answer.owned_partitions)) == ("owner", [0])
    finally:
        stop_all(nodes)
