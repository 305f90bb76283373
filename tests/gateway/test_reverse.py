"""冲正 (SPEC §6): a caller whose call timed out reverses it by the original request_id, over gRPC and TLS.

Performed originals are cancelled exactly as the cancel RPCs would (funds given
back, booked like a cancellation); an original not performed is marked
reversed, so when it arrives late it is refused with REQUEST_REVERSED and
changes nothing; a reversal is idempotent by its own key; one province's
reversal never reaches another's request.
"""
from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import grpc
import pytest

from gateway._pb.yidi.v1 import admin_pb2, funds_pb2 as fdpb, settlement_pb2 as spb
from builders import DRUG_A, HK_L3, line, outpatient
from gateway_harness import ROOT, file_person

HAINAN, LIAONING, GUANGDONG = "460000", "210000", "440000"


@pytest.fixture(scope="module", autouse=True)
def filed(gw):
    file_person(gw.client(LIAONING), "PR-1", "21010219800101041")


# PR-1's outpatient bill, settled on 20260316.
bill = partial(outpatient, psn_no="PR-1", date=20260316)


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
    settled = hainan(hainan.settlement.OutpatientSettle, bill("rv-op-1")).settlement
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
    assert hainan(hainan.settlement.OutpatientSettle, bill("rv-op-1")).settlement.setl_id == settled.setl_id


def test_an_original_not_performed_is_refused_when_it_arrives_late_and_changes_nothing(gw):
    hainan = gw.client(HAINAN)
    answer = hainan(hainan.settlement.Reverse, reverse("rv-2", "rv-op-late"))
    assert answer.outcome == spb.REVERSE_OUTCOME_NOT_PERFORMED and answer.original_request_id == "rv-op-late"
    at, before = seq(gw), drawn(gw)
    code, reason, message = hainan.refused(hainan.settlement.OutpatientSettle, bill("rv-op-late"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_REVERSED") and "冲正" in message
    # any request under that key, not only the one that timed out
    code, reason, _ = hainan.refused(hainan.settlement.OutpatientSettle, bill("rv-op-late", price=999))
    assert reason == "REQUEST_REVERSED"
    assert (seq(gw), drawn(gw)) == (at, before)


def test_another_province_cannot_reach_a_request_it_did_not_send(gw):
    hainan, guangdong = gw.client(HAINAN), gw.client(GUANGDONG)
    settled = hainan(hainan.settlement.OutpatientSettle, bill("rv-op-3")).settlement
    # keys are per caller: Guangdong's reversal of "rv-op-3" names its own (never sent) request
    answer = guangdong(guangdong.settlement.Reverse, reverse("rv-3", "rv-op-3"))
    assert answer.outcome == spb.REVERSE_OUTCOME_NOT_PERFORMED
    got = hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=settled.setl_id)).settlement
    assert got.cancel_date == 0
    assert hainan(hainan.settlement.OutpatientSettle, bill("rv-op-3")).settlement.setl_id == settled.setl_id


def test_a_reversed_admission_is_cancelled(gw):
    hainan = gw.client(HAINAN)
    admitted = hainan(hainan.settlement.Admit, spb.AdmitRequest(request_id="rv-adm", psn_no="PR-1",
                                                                fixmedins_code=HK_L3, adm_date=20260316))
    answer = hainan(hainan.settlement.Reverse, reverse("rv-4", "rv-adm"))
    assert answer.outcome == spb.REVERSE_OUTCOME_ADMISSION_CANCELLED
    assert answer.visit.mdtrt_id == admitted.mdtrt_id
    code, reason, _ = hainan.refused(hainan.settlement.UploadFees, spb.UploadFeesRequest(
        request_id="rv-fees", mdtrt_id=admitted.mdtrt_id,
        lines=[line(1, DRUG_A, 1250, 1000)]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, reason


def test_reversals_racing_their_originals_never_stall_the_gateway():
    """Issue 13 item 1: OutpatientSettle and, while it waits for its group commit, Reverse of it from the same
    caller; 300 pairs (make race runs 10,000) with Ping answered throughout.  A reversal that spun on an
    already-resolved commit used to freeze every call within 6-40 such pairs."""
    run = subprocess.run([sys.executable, "tests/race.py", "--pairs", "300"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, (result, run.stderr[-3000:])
    assert result["violations"] == 0 and result["failed_pings"] == 0 and result["pings"] > 0
    assert result["outcomes"].get("cancelled", 0) > 0 and sum(result["outcomes"].values()) == 300
