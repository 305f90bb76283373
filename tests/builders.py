"""Requests the tests build, once: fee lines, outpatient settlements, admissions and the visit's calls.

The SPEC fixture's catalogue codes and institutions are named here, taken from datagen/spec_fixture.py,
so a test says which kind of item it bills (``DRUG_A``), not which code the fixture happens to give it.
"""
from __future__ import annotations

import itertools

from datagen.spec_fixture import DATE, INSTITUTIONS, NOT_IN_CATALOG, catalog_rows
from gateway._pb.yidi.v1 import admin_pb2, common_pb2 as pb, settlement_pb2 as spb

_CATALOG = {row["code"]: row for row in catalog_rows()}


def _catalog_code(category: str, cls: str, capped: bool = False) -> str:
    """The one code of the SPEC §5.6 catalogue with this category, class and (no) price cap."""
    codes = [code for code, row in _CATALOG.items()
             if row["category"] == category and row["class"] == cls and bool(row["price_cap_fen"]) == capped]
    assert len(codes) == 1, (category, cls, capped, codes)
    return codes[0]


DRUG_A = _catalog_code("drug", "A")                        # class A: no self-paid part
DRUG_B = _catalog_code("drug", "B")                        # class B: a self-paid share first
DRUG_B_CAPPED = _catalog_code("drug", "B", capped=True)    # class B with a price cap
DRUG_C = _catalog_code("drug", "C")                        # class C: wholly self-paid
TREATMENT_A = _catalog_code("treatment", "A")              # a class A treatment
NOT_LISTED = NOT_IN_CATALOG                                # in no catalogue: wholly self-paid

HK_L3, HK_L2, HK_L1 = (INSTITUTIONS[name][0] for name in ("hk_l3", "hk_l2", "hk_l1"))   # 海口, levels 3, 2, 1
GZ_L3 = INSTITUTIONS["gz_l3"][0]                           # 广东省人民医院: not Hainan's

_ids = itertools.count(1)


def rid(tag: str = "r") -> str:
    """A request id no other call of this test process uses."""
    return f"{tag}-{next(_ids)}"


def line(sn=1, code: str = DRUG_A, price: int = 1250, qty_milli: int = 2000, **fields) -> pb.FeeLine:
    """A fee line; ``fields`` set or override any FeeLine field (name, fee_date, unit_price_fen ...)."""
    values = dict(feedetl_sn=str(sn), code=code, unit_price_fen=price, qty_milli=qty_milli)
    values.update(fields)
    return pb.FeeLine(**values)


def outpatient(request_id: str, psn_no: str, inst: str = HK_L1, *, date: int = DATE, price: int = 1250,
               qty_milli: int = 2000, lines=None, **fields) -> spb.OutpatientSettleRequest:
    """An outpatient settlement of one DRUG_A line (price, qty_milli) unless lines are given."""
    lines = [line(price=price, qty_milli=qty_milli)] if lines is None else lines
    return spb.OutpatientSettleRequest(request_id=request_id, psn_no=psn_no, fixmedins_code=inst, setl_date=date,
                                       lines=lines, **fields)


def admit(client, psn_no: str, inst: str, request_id: str | None = None, date: int = 20260310,
          **fields) -> spb.AdmitResponse:
    return client(client.settlement.Admit, spb.AdmitRequest(
        request_id=request_id or rid("admit"), psn_no=psn_no, fixmedins_code=inst, adm_date=date, **fields))


def upload(client, mdtrt_id: str, lines, request_id: str | None = None) -> spb.VisitResponse:
    return client(client.settlement.UploadFees, spb.UploadFeesRequest(
        request_id=request_id or rid("fees"), mdtrt_id=mdtrt_id, lines=lines))


def settle(client, mdtrt_id: str, request_id: str | None = None, date: int = DATE) -> pb.Settlement:
    """Discharge settlement of an admitted visit."""
    return client(client.settlement.DischargeSettle, spb.DischargeSettleRequest(
        request_id=request_id or rid("settle"), mdtrt_id=mdtrt_id, dscg_date=date)).settlement


def cancel(client, setl_id: str, request_id: str | None = None, date: int = 20260320) -> pb.Settlement:
    return client(client.settlement.CancelSettlement, spb.CancelSettlementRequest(
        request_id=request_id or rid("cancel"), setl_id=setl_id, cancel_date=date)).settlement


def get_settlement(client, setl_id: str) -> pb.Settlement:
    return client(client.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=setl_id)).settlement


def accumulators(client, psn_no: str, year: int = 2026) -> pb.Accumulators:
    return client(client.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no=psn_no, year=year))


def reference_status(national) -> admin_pb2.ReferenceDataStatus:
    """The reference data in use and the ledger's length, as the national operator (national's client) sees them."""
    return national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())


def ledger_seq(national) -> int:
    """The sequence number of the ledger's last record: a refusal must leave it where it was."""
    return reference_status(national).ledger_seq
