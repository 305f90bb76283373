"""SettleBatch and SettleStream over real gRPC: each item as its unary call would be, one transaction per group.

Each item gets exactly the outcome the unary call would give it (answer bytes
included), in request order; a refused item changes nothing and does not fail
its neighbours; a replay (of the batch, or of one item through the unary RPC)
is byte-identical; the accumulators are the sum of what was settled.
"""
from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from gateway._pb.yidi.v1 import settlement_pb2 as spb
from builders import GZ_L3, HK_L2, TREATMENT_A, ledger_seq, line, outpatient
from gateway_harness import file_person

HAINAN, LIAONING, GUANGDONG = "460000", "210000", "440000"
OUTPATIENT = "/yidi.v1.SettlementService/OutpatientSettle"


def reason(outcome: spb.SettleOutcome) -> str:
    assert outcome.WhichOneof("outcome") == "refused"
    info = error_details_pb2.ErrorInfo()
    outcome.refused.details[0].Unpack(info)
    return info.reason


def test_a_batch_answers_each_item_as_its_unary_call_would(gw):
    liaoning, hainan = gw.client(LIAONING), gw.client(HAINAN)
    for n in range(3):
        file_person(liaoning, f"P21010288{n}", f"2101021990010188{n}")
    stay = hainan(hainan.settlement.Admit, spb.AdmitRequest(request_id="b-admit", psn_no="P210102882",
                                                            fixmedins_code=HK_L2, adm_date=20260301))
    hainan(hainan.settlement.UploadFees, spb.UploadFeesRequest(request_id="b-fees", mdtrt_id=stay.mdtrt_id, lines=[
        line(1, TREATMENT_A, 300000, 1000)]))
    seq = ledger_seq(gw.client("national"))
    items = [
        spb.SettleItem(outpatient=outpatient("b-1", "P210102880")),
        spb.SettleItem(outpatient=outpatient("b-2", "P210102881", inst=GZ_L3)),   # 广东: not Hainan's
        spb.SettleItem(outpatient=outpatient("b-3", "P210102881", price=-5)),               # bad input
        spb.SettleItem(discharge=spb.DischargeSettleRequest(request_id="b-4", mdtrt_id=stay.mdtrt_id,
                                                            dscg_date=20260310)),
        spb.SettleItem(outpatient=outpatient("b-1", "P210102880")),                          # its twin: same answer
        spb.SettleItem(outpatient=outpatient("b-1", "P210102880", price=1)),                 # same key, other request
        spb.SettleItem(),                                                                    # neither kind
    ]
    request = spb.SettleBatchRequest(items=items)
    raw = hainan.raw("/yidi.v1.SettlementService/SettleBatch", request)
    outcomes = spb.SettleBatchResponse.FromString(raw).outcomes
    assert [o.WhichOneof("outcome") for o in outcomes] == [
        "settlement", "refused", "refused", "settlement", "settlement", "refused", "refused"]
    assert [reason(outcomes[i]) for i in (1, 2, 5, 6)] == [
        "PERMISSION_DENIED", "INVALID_PRICE", "IDEMPOTENCY_KEY_REUSED", "INVALID_ARGUMENT"]
    assert outcomes[4] == outcomes[0] and outcomes[3].settlement.settlement.breakdown.medfee_sumamt == 300000
    assert ledger_seq(gw.client("national")) == seq + 2  # one record per settlement, nothing for the refusals
    # A replay of the batch is byte-identical; so is each settled item replayed through its unary RPC.
    assert hainan.raw("/yidi.v1.SettlementService/SettleBatch", request) == raw
    assert hainan.raw(OUTPATIENT, items[0].outpatient) == outcomes[0].settlement.SerializeToString()
    assert ledger_seq(gw.client("national")) == seq + 2


def test_a_batch_over_the_limit_is_refused_whole(gw):
    hainan = gw.client(HAINAN)
    seq = ledger_seq(gw.client("national"))
    too_many = spb.SettleBatchRequest(items=[spb.SettleItem(outpatient=outpatient(f"x-{n}", "P210102880"))
                                             for n in range(1001)])
    code, got, _ = hainan.refused(hainan.settlement.SettleBatch, too_many)
    assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE") and ledger_seq(gw.client("national")) == seq


def test_a_stream_answers_in_order_past_its_in_flight_bound(gw):
    liaoning, hainan = gw.client(LIAONING), gw.client(HAINAN)
    file_person(liaoning, "P210102890", "21010219900101890")
    before = hainan(hainan.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no="P210102890", year=2026))
    n = 2500  # more than stream_max_in_flight (2000): the server must keep reading as it answers
    items = (spb.SettleItem(outpatient=outpatient(f"s-{i}", "P210102890", price=100 + i % 7)) for i in range(n))
    outcomes = list(hainan(hainan.settlement.SettleStream, items))
    assert len(outcomes) == n and all(o.WhichOneof("outcome") == "settlement" for o in outcomes)
    ids = [o.settlement.settlement.setl_id for o in outcomes]
    assert ids == sorted(ids) and len(set(ids)) == n  # request order is ledger order
    paid = sum(o.settlement.settlement.breakdown.hifp_pay for o in outcomes)
    after = hainan(hainan.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no="P210102890", year=2026))
    assert after.outpatient_fund_paid_fen - before.outpatient_fund_paid_fen == paid
    # A refused item in a stream is answered in its place, and the stream goes on.
    mixed = [spb.SettleItem(outpatient=outpatient("s-x1", "P210102890", inst=GZ_L3)),
             spb.SettleItem(outpatient=outpatient("s-x2", "P210102890"))]
    first, second = hainan(hainan.settlement.SettleStream, iter(mixed))
    assert reason(first) == "PERMISSION_DENIED" and second.WhichOneof("outcome") == "settlement"


def test_a_stay_moves_through_batches_admit_fees_then_discharge(gw):
    liaoning, hainan = gw.client(LIAONING), gw.client(HAINAN)
    file_person(liaoning, "P210102891", "21010219900101891")
    admit = spb.AdmitRequest(request_id="bs-admit", psn_no="P210102891", fixmedins_code=HK_L2,
                             adm_date=20260301)
    first = hainan(hainan.settlement.SettleBatch, spb.SettleBatchRequest(items=[spb.SettleItem(admit=admit)]))
    assert first.outcomes[0].WhichOneof("outcome") == "admitted"
    unary = hainan.raw("/yidi.v1.SettlementService/Admit", admit)  # the same key through the unary RPC
    assert unary == first.outcomes[0].admitted.SerializeToString()
    mdtrt_id = first.outcomes[0].admitted.mdtrt_id
    fees = spb.UploadFeesRequest(request_id="bs-fees", mdtrt_id=mdtrt_id, lines=[
        line(1, TREATMENT_A, 200000, 1000)])
    discharge = spb.DischargeSettleRequest(request_id="bs-settle", mdtrt_id=mdtrt_id, dscg_date=20260305)
    # Items run in order: the fees are uploaded before the discharge settles them, in one batch.
    second = hainan(hainan.settlement.SettleBatch, spb.SettleBatchRequest(
        items=[spb.SettleItem(fees=fees), spb.SettleItem(discharge=discharge)])).outcomes
    assert second[0].visit.line_count == 1
    assert second[1].settlement.settlement.breakdown.medfee_sumamt == 200000


def test_every_item_of_a_batch_is_in_the_audit_log_as_its_unary_call(gw):
    """A batch item is a mutating call of its own: one audit line each, with its unary RPC and outcome."""
    import json

    hainan = gw.client(HAINAN)
    file_person(gw.client(LIAONING), "PB-AUD", "21010219800101051")
    items = [spb.SettleItem(outpatient=outpatient("aud-1", "PB-AUD")),
             spb.SettleItem(outpatient=outpatient("aud-2", "P-NOBODY")),
             spb.SettleItem(outpatient=outpatient("aud-3", "PB-AUD", inst=GZ_L3))]   # Guangdong's
    hainan(hainan.settlement.SettleBatch, spb.SettleBatchRequest(items=items))
    with open(gw.log_path[:-len(".log")] + ".audit.jsonl", encoding="utf-8") as f:
        lines = {a["request_id"]: a for a in map(json.loads, f) if a["request_id"].startswith("aud-")}
    assert {k: (a["method"], a["outcome"], a["caller"]) for k, a in lines.items()} == {
        "aud-1": ("SettlementService/OutpatientSettle", "ok", HAINAN),
        "aud-2": ("SettlementService/OutpatientSettle", "PERSON_NOT_FILED", HAINAN),
        "aud-3": ("SettlementService/OutpatientSettle", "PERMISSION_DENIED", HAINAN)}
    assert lines["aud-1"]["person"] == "PB-AUD"


def test_the_audit_log_says_replayed_only_of_a_repeated_mutation(gw):
    """A repeated request_id is "replayed"; a read of a person's filings is "ok" (it never notes a record)."""
    import json

    from gateway._pb.yidi.v1 import filing_pb2 as fpb

    hainan, liaoning = gw.client(HAINAN), gw.client(LIAONING)
    file_person(liaoning, "PB-RPL", "21010219800101052")
    first = hainan(hainan.settlement.OutpatientSettle, outpatient("rpl-1", "PB-RPL"))
    again = hainan(hainan.settlement.OutpatientSettle, outpatient("rpl-1", "PB-RPL"))
    assert again == first
    liaoning(liaoning.filing.ListFilings, fpb.ListFilingsRequest(psn_no="PB-RPL"))
    with open(gw.log_path[:-len(".log")] + ".audit.jsonl", encoding="utf-8") as f:
        mine = [a for a in map(json.loads, f) if a["person"] == "PB-RPL"]
    settles = [a["outcome"] for a in mine if a["request_id"] == "rpl-1"]
    reads = [a["outcome"] for a in mine if a["method"] == "FilingService/ListFilings"]
    assert settles == ["ok", "replayed"] and reads == ["ok"], mine
