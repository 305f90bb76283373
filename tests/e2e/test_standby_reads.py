"""A standby's reads see everything the owner acknowledged before them (docs/operations.md, Roles), whatever its
poll: the standby here polls once a minute, so without catching up first it would answer from the state it had
when it started.  Over real gRPC and mTLS against a real PostgreSQL, one partition, two nodes.
"""
from __future__ import annotations

import threading

from gateway._pb.yidi.v1 import funds_pb2 as fdpb, settlement_pb2 as spb
from test_partition_lease import stop_all, two_nodes

import failover
from failover import HAINAN, LIAONING, NATIONAL, SETTLE, settlement

POLL_S = "60"


def accumulators(node, psn_no: str) -> spb.Accumulators:
    client = node.gw.client(LIAONING)
    return client(client.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no=psn_no, year=2026))


def test_a_standby_read_sees_every_settlement_acknowledged_before_it(tmp_path, pg_url):
    owner, standby = nodes = two_nodes(tmp_path, pg_url, "--follow-interval-s", POLL_S)
    try:
        psn_no = failover.PERSONS[0]
        before = accumulators(standby, psn_no)
        for n in range(1, 4):
            rid = next(f"sr-{n}-{k}" for k in range(1000) if settlement(f"sr-{n}-{k}").psn_no == psn_no)
            owner.gw.client(HAINAN).raw(SETTLE, settlement(rid))
            seen = accumulators(standby, psn_no)   # at once: no poll came between
            assert seen == accumulators(owner, psn_no), n
            assert (seen.outpatient_fund_paid_fen, seen.outpatient_deductible_used_fen) != \
                (before.outpatient_fund_paid_fen, before.outpatient_deductible_used_fen), n
            before = seen

        # Many reads at once share the follows (one at a time: each record applied once) and all see the close.
        national = owner.gw.client(NATIONAL)
        national(national.funds.CloseMonth, fdpb.ClearingMonthRequest(request_id="close-sr", month=202603))
        reports, errors = [], []

        def read() -> None:
            try:
                client = standby.gw.client(NATIONAL)
                reports.append(client(client.funds.GetClearingReport, fdpb.GetClearingReportRequest(month=202603)))
            except Exception as exc:   # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(reports) == 8 and all(r.closed for r in reports)
        assert accumulators(standby, psn_no) == accumulators(owner, psn_no)
    finally:
        stop_all(nodes)
