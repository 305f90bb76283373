"""冲正 (SPEC §6): a caller whose call timed out reverses it by the original request_id, over gRPC and TLS.

Performed originals are cancelled exactly as the cancel RPCs would (funds given
back, booked like a cancellation); an original not performed is marked
reversed, so when it arrives late it is refused with REQUEST_REVERSED and
changes nothing; a reversal is idempotent by its own key; one province's
reversal never reaches another's request.
"""
from __future__ import annotations

import grpc
import pytest

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import admin_pb2, common_pb2 as pb, funds_pb2 as fdpb, settlement_pb2 as spb
from gateway_harness import file_person, start_gateway

HAINAN, LIAONING, GUANGDONG = "460000", "210000", "440000"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    base = tmp_path_factory.mktemp("reverse")
    names = write_spec_dataset(base / "data")
    server = start_gateway(names["dir"], str(base / "ledger.sqlite"))
    file_person(server.client(LIAONING), "PR-1", "21010219800101041")
    yield server
    assert server.stop() == 0


def outpatient(rid: str, price: int = 1250) -> spb.OutpatientSettleRequest:
    return spb.OutpatientSettleRequest(request_id=rid, psn_no="PR-1", fixmedins_code="H46010000003", setl_date=20260316,
                                       lines=[pb.FeeLine(feedetl_sn="1", code="XA01", unit_price_fen=price,
                                                         qty_milli=2000)])


def reverse(rid: str, original: str) -> spb.ReverseRequest:
    return spb.ReverseRequest(request_id=rid, original_request_id=original, reverse_date=20260317)


def seq(gw) -> int:
    national = gw.client("national")
    return national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest()).ledger_seq


def drawn(gw) -> int:
    national = gw.client("national")
    positions = national(national.funds.GetPositions, fdpb.GetPositionsRequest(province=LIAONING)).positions
    return sum(p.drawn_fen - p.given_back_fen for p in positions)


def test_a_performed_settlement_is_cancelled_as_the_cancel_rpc_would(gw):
    hainan = gw.client(HAINAN)
    before = drawn(gw)
    settled = hainan(hainan.settlement.OutpatientSettle, outpatient("rv-op-1")).settlement
    assert drawn(gw) == before + settled.breakdown.fund_pay_sumamt
    answer = hainan(hainan.settlement.Reverse, reverse("rv-1", "rv-op-1"))
    assert answer.outcome == spb.REVERSE_OUTCOME_SETTLEMENT_CANCELLED
    assert answer.settlement.setl_id == settled.setl_id and answer.settlement.cancel_date == 20260317
    assert drawn(gw) == before                                    # the fund's draw given back
    got = hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=settled.setl_id)).settlement
    assert got.cancel_date == 20260317
    # idempotent by its own key: the same answer, nothing more done
    at = seq(gw)
    assert hainan(hainan.settlement.Reverse, reverse("rv-1", "rv-op-1")) == answer
    assert seq(gw) == at
    # the original replayed still answers as it first did (its key is the settlement's)
    assert hainan(hainan.settlement.OutpatientSettle, outpatient("rv-op-1")).settlement.setl_id == settled.setl_id


def test_an_original_not_performed_is_refused_when_it_arrives_late_and_changes_nothing(gw):
    hainan = gw.client(HAINAN)
    answer = hainan(hainan.settlement.Reverse, reverse("rv-2", "rv-op-late"))
    assert answer.outcome == spb.REVERSE_OUTCOME_NOT_PERFORMED and answer.original_request_id == "rv-op-late"
    at, before = seq(gw), drawn(gw)
    code, reason, message = hainan.refused(hainan.settlement.OutpatientSettle, outpatient("rv-op-late"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_REVERSED") and "冲正" in message
    # any request under that key, not only the one that timed out
    code, reason, _ = hainan.refused(hainan.settlement.OutpatientSettle, outpatient("rv-op-late", price=999))
    assert reason == "REQUEST_REVERSED"
    assert (seq(gw), drawn(gw)) == (at, before)


def test_another_province_cannot_reach_a_request_it_did_not_send(gw):
    hainan, guangdong = gw.client(HAINAN), gw.client(GUANGDONG)
    settled = hainan(hainan.settlement.OutpatientSettle, outpatient("rv-op-3")).settlement
    # keys are per caller: Guangdong's reversal of "rv-op-3" names its own (never sent) request
    answer = guangdong(guangdong.settlement.Reverse, reverse("rv-3", "rv-op-3"))
    assert answer.outcome == spb.REVERSE_OUTCOME_NOT_PERFORMED
    got = hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=settled.setl_id)).settlement
    assert got.cancel_date == 0
    assert hainan(hainan.settlement.OutpatientSettle, outpatient("rv-op-3")).settlement.setl_id == settled.setl_id


def test_a_reversed_admission_is_cancelled(gw):
    hainan = gw.client(HAINAN)
    admitted = hainan(hainan.settlement.Admit, spb.AdmitRequest(request_id="rv-adm", psn_no="PR-1",
                                                                fixmedins_code="H46010000001", adm_date=20260316))
    answer = hainan(hainan.settlement.Reverse, reverse("rv-4", "rv-adm"))
    assert answer.outcome == spb.REVERSE_OUTCOME_ADMISSION_CANCELLED
    assert answer.visit.mdtrt_id == admitted.mdtrt_id
    code, reason, _ = hainan.refused(hainan.settlement.UploadFees, spb.UploadFeesRequest(
        request_id="rv-fees", mdtrt_id=admitted.mdtrt_id,
        lines=[pb.FeeLine(feedetl_sn="1", code="XA01", unit_price_fen=1250, qty_milli=1000)]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, reason


def test_a_reversal_racing_its_original_never_stalls_the_gateway(gw):
    """OutpatientSettle and, while it waits for its group commit, Reverse of it from the same caller: the reversal
    waits for the original once and cancels it; the gateway answers Ping throughout (a reversal that spun on an
    already-resolved commit used to freeze every call)."""
    import asyncio

    from gateway._pb.yidi.v1 import diagnostics_pb2 as dpb, diagnostics_pb2_grpc, settlement_pb2_grpc
    from gateway.testing import credentials

    async def race(pairs: int) -> dict:
        outcomes: dict = {}
        async with grpc.aio.secure_channel(gw.target, credentials(HAINAN, gw.certs)) as channel:
            settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
            ping = diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Ping
            for i in range(pairs):
                original = f"rv-race-{i}"
                settle = settlement.OutpatientSettle(outpatient(original, price=1000 + i % 7), timeout=10)
                answer = await settlement.Reverse(reverse(f"rv-race-r{i}", original), timeout=10)
                try:
                    await settle
                except grpc.aio.AioRpcError as err:   # the reversal arrived first: the original is never performed
                    assert err.details().endswith("[REQUEST_REVERSED]")
                    assert answer.outcome == spb.REVERSE_OUTCOME_NOT_PERFORMED
                outcomes[answer.outcome] = outcomes.get(answer.outcome, 0) + 1
                if i % 20 == 0:
                    await ping(dpb.PingRequest(), timeout=5)
        return outcomes

    outcomes = asyncio.run(race(300))
    # every original was reversed: cancelled if it was performed first
    assert sum(outcomes.values()) == 300
    assert outcomes.get(spb.REVERSE_OUTCOME_SETTLEMENT_CANCELLED, 0) > 0
