"""Refusals a program can act on, over real gRPC: every refusal carries an English LocalizedMessage
beside the Chinese clerk message, and an invalid argument names its field in a BadRequest."""
from __future__ import annotations

from functools import partial

import grpc
import pytest
from google.rpc import error_details_pb2 as ed

from core.errors import REASONS
from gateway._pb.yidi.v1 import funds_pb2 as fdpb, settlement_pb2 as spb
from core.errors import YidiError
from gateway.transport.status import detail_of, status_proto, to_status
from builders import HK_L1, line, outpatient
from gateway_harness import file_person

HAINAN, LIAONING = "460000", "210000"


@pytest.fixture(scope="module", autouse=True)
def filed(gw):
    file_person(gw.client(LIAONING), "PD-1", "21010219800101031")


def refusal(client, method, request) -> tuple[str, grpc.RpcError]:
    try:
        client(method, request)
    except grpc.RpcError as err:
        info = detail_of(err, ed.ErrorInfo)
        return info.reason, err
    raise AssertionError("expected a refusal")


# The refused outpatient request, changed in one field by each case.
D1 = partial(outpatient, "d-1", "PD-1")

CASES = {
    "price of the second line": (lambda s: s.OutpatientSettle, D1(lines=[line(), line("2", unit_price_fen=-5)]),
                                 "INVALID_PRICE", ["lines[1].unit_price_fen"]),
    "quantity": (lambda s: s.OutpatientSettle, D1(lines=[line(qty_milli=0)]), "INVALID_QUANTITY",
                 ["lines[0].qty_milli"]),
    "item code": (lambda s: s.OutpatientSettle, D1(lines=[line(code="X A")]), "INVALID_CODE",
                  ["lines[0].code"]),
    "fee date": (lambda s: s.OutpatientSettle, D1(lines=[line(fee_date=20261399)]), "INVALID_DATE",
                 ["lines[0].fee_date"]),
    "settlement date": (lambda s: s.OutpatientSettle, D1(date=20260230), "INVALID_DATE", ["setl_date"]),
    "request id": (lambda s: s.OutpatientSettle, outpatient("", "PD-1"), "INVALID_REQUEST_ID", ["request_id"]),
    "item name": (lambda s: s.OutpatientSettle, D1(lines=[line(name="药" * 400)]), "INVALID_ARGUMENT",
                  ["lines[0].name"]),
    "admission date": (lambda s: s.Admit, spb.AdmitRequest(request_id="d-2", psn_no="PD-1",
                                                           fixmedins_code=HK_L1, adm_date=2026),
                       "INVALID_DATE", ["adm_date"]),
    "setl_id": (lambda s: s.CancelSettlement, spb.CancelSettlementRequest(request_id="d-3", setl_id="not an id",
                                                                          cancel_date=20260316),
                "INVALID_ARGUMENT", ["setl_id"]),
    "over-long string": (lambda s: s.Admit, spb.AdmitRequest(request_id="d-5", psn_no="PD-1", ipt_no="x" * 2000,
                                                             fixmedins_code=HK_L1, adm_date=20260315),
                         "INVALID_ARGUMENT", ["ipt_no"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_an_invalid_argument_names_its_field(gw, case):
    method, request, reason, fields = CASES[case]
    client = gw.client(HAINAN)
    got, err = refusal(client, method(client.settlement), request)
    assert got == reason and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = detail_of(err, ed.BadRequest)
    assert bad is not None, f"{case}: no BadRequest"
    assert [v.field for v in bad.field_violations] == fields
    assert all(v.description.endswith(f"[{reason}]") for v in bad.field_violations)


def test_a_reconciliation_range_names_the_nested_field(gw):
    client = gw.client(HAINAN)
    span = fdpb.ReconcileRange(fixmedins_code=HK_L1, date_from=20260100, date_to=20260131)
    reason, err = refusal(client, client.funds.ReconcileTotals, fdpb.ReconcileTotalsRequest(range=span))
    assert reason == "INVALID_DATE"
    assert [v.field for v in detail_of(err, ed.BadRequest).field_violations] == ["range.date_from"]


def test_every_refusal_carries_english_beside_the_chinese_and_no_bad_request_unless_invalid(gw):
    client = gw.client(HAINAN)
    reason, err = refusal(client, client.settlement.OutpatientSettle, outpatient("d-4", "P-NOBODY"))
    assert reason == "PERSON_NOT_FILED" and err.details().endswith("[PERSON_NOT_FILED]")
    english = detail_of(err, ed.LocalizedMessage)
    assert english.locale == "en-US" and english.message == REASONS["PERSON_NOT_FILED"].english
    assert detail_of(err, ed.BadRequest) is None


def test_every_reason_has_its_english_sentence():
    assert all(r.english.endswith(".") and r.english.isascii() for r in REASONS.values())


def test_one_refusal_is_always_the_same_bytes():
    """Its details are serialized deterministically: the ErrorInfo metadata map in key order, whatever order the
    refusal's parameters came in."""
    names = [f"k{i}" for i in range(12)]
    forward = YidiError("TOO_MANY_LINES", what="lines", limit=500, count=501, **{k: k for k in names})
    backward = YidiError("TOO_MANY_LINES", **{k: k for k in reversed(names)}, count=501, limit=500, what="lines")
    assert list(forward.metadata) != list(backward.metadata)
    assert status_proto(forward).SerializeToString() == status_proto(backward).SerializeToString()
    assert to_status(forward).trailing_metadata == to_status(backward).trailing_metadata
    detail = status_proto(forward).details[0]
    info = ed.ErrorInfo()
    detail.Unpack(info)
    assert detail.value == info.SerializeToString(deterministic=True)
