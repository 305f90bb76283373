"""The first release's ledger still replays, and its answers are still byte-identical.

``tests/gateway/data/ledger-v1.db`` was written by the first release's gateway (commit
41496cb) on the SPEC fixture data set: a filing by RPC revised, an E1 stay with
fees withdrawn, settled, cancelled and settled again, an admission cancelled,
a stay left open, two outpatient settlements (one cancelled) and a revoked
filing.  ``ledger-v1.calls.json`` holds every request and the exact response
bytes it got, the accumulators and the settlements as read afterwards.

This release must rebuild the same state from that ledger (JSON event bodies),
answer every retried request with the same bytes, and carry on from it —
also after a snapshot and a restart from it.
"""
from __future__ import annotations

import base64
import json
import os
import shutil

import grpc
import pytest

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import admin_pb2, settlement_pb2 as spb
from builders import DRUG_A, line

HERE = os.path.join(os.path.dirname(__file__), "data")
with open(os.path.join(HERE, "ledger-v1.calls.json"), encoding="utf-8") as f:
    RECORDED = json.load(f)


@pytest.fixture
def v1(tmp_path):
    names = write_spec_dataset(tmp_path / "data")
    ledger = str(tmp_path / "ledger.sqlite")
    shutil.copy(os.path.join(HERE, "ledger-v1.db"), ledger)
    return names, ledger


def check_recorded_answers(gw) -> None:
    clients = {}
    for call in RECORDED["calls"]:
        client = clients.setdefault(call["caller"], gw.client(call["caller"]))
        rpc = client.channel.unary_unary(call["method"], request_serializer=None, response_deserializer=None)
        got = rpc(base64.b64decode(call["request"]), metadata=client.metadata, timeout=30)
        assert got == base64.b64decode(call["response"]), call["method"]
    hainan, liaoning = gw.client("460000"), gw.client("210000")
    for psn_no, expected in RECORDED["accumulators"].items():
        acc = liaoning(liaoning.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no=psn_no, year=2026))
        assert {name: getattr(acc, name) for name in expected} == expected, psn_no
    for setl_id, shown in RECORDED["settlements"].items():
        got = hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=setl_id))
        assert got.SerializeToString() == base64.b64decode(shown), setl_id


def test_first_release_ledger_replays_byte_identical(v1, gateways):
    names, ledger = v1
    gw = gateways(names["dir"], ledger)
    check_recorded_answers(gw)
    # The stay left open by the first release can be settled now; ids continue after the old ones.
    hainan = gw.client("460000")
    s = hainan(hainan.settlement.DischargeSettle, spb.DischargeSettleRequest(
        request_id="v2-settle-3", mdtrt_id=RECORDED["open_stay"], dscg_date=20260510)).settlement
    assert s.breakdown.medfee_sumamt == 300000 and s.setl_id > max(RECORDED["settlements"])
    # SPEC §10.7: a settlement of the first release recorded no inputs to explain it; a new one is explained.
    old = min(RECORDED["settlements"])
    try:
        hainan(hainan.settlement.GetSettlementExplanation, spb.GetSettlementRequest(setl_id=old))
        refused = None
    except grpc.RpcError as err:
        refused = (err.code(), err.details())
    assert refused is not None and refused[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert refused[1].endswith("[EXPLANATION_UNAVAILABLE]") and old in refused[1]
    explained = hainan(hainan.settlement.GetSettlementExplanation, spb.GetSettlementRequest(setl_id=s.setl_id))
    assert explained.recomputed_equal and explained.breakdown == s.breakdown
    national = gw.client("national")
    snap = national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
    assert snap.ledger_seq == 17 and os.path.exists(snap.path)
    assert gw.stop() == 0
    # Restarted from the snapshot (nothing after it to replay): the same answers.
    gw = gateways(names["dir"], ledger)
    national = gw.client("national")
    status = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
    assert status.snapshot_seq == 17
    check_recorded_answers(gw)
    again = gw.client("460000")
    code = None
    try:
        again(again.settlement.UploadFees, spb.UploadFeesRequest(
            request_id="v2-late-fee", mdtrt_id=RECORDED["open_stay"],
            lines=[line(9, DRUG_A, 1, 1000)]))
    except grpc.RpcError as err:
        code = err.code()
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # settled before the restart: VISIT_ALREADY_SETTLED
