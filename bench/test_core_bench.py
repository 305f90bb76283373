"""Core micro-benchmarks: eligibility check, the benefit of a 20-line inpatient bill, and the protobuf bytes the
core reads and writes itself (a 20-line outpatient request into its command, a 20-line settlement answer).

Run ``pytest bench --benchmark-only`` for numbers, or ``pytest bench
--benchmark-disable`` as a smoke test (each benchmark body runs once).
"""
from __future__ import annotations

import pytest

from core.events import FeeLine
from datagen.spec_fixture import DATE, load_spec_index
from gateway.transport import convert
from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

LINES_20 = [("XA01", 1250, 20000), ("XB02", 8800, 3500), ("XB03", 7300, 10000), ("XC04", 45000, 1000),
            ("T001", 1200000, 1000), ("ZZ99", 9999, 2000)] * 3 + [("XA01", 300, 1000), ("XB02", 120, 500)]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return load_spec_index(tmp_path_factory.mktemp("bench"))


def test_eligibility(benchmark, spec):
    ix, n = spec
    r = benchmark(ix.eligibility, n["psn"]["retired"], n["inst"]["hk_l3"], True, DATE, "C21000000001", "3.0")
    assert r["filing_id"] == "F0001"


def test_eligibility_choice_of_three(benchmark, spec):
    ix, n = spec
    r = benchmark(ix.eligibility, n["psn"]["multi"], n["inst"]["gz_l3"], True, DATE)
    assert r["filing_id"] == "F0007C"


def test_benefit_20_line_inpatient(benchmark, spec):
    ix, n = spec
    assert len(LINES_20) == 20
    r = benchmark(ix.benefit, n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE, LINES_20)
    assert r["fund_pay_sumamt"] + r["psn_cash_pay"] == r["medfee_sumamt"]


def test_get_person(benchmark, spec):
    ix, n = spec
    assert benchmark(ix.get_person, n["psn"]["retired"])["psn_no"] == n["psn"]["retired"]


def test_psn_no_by_certno(benchmark, spec):
    ix, n = spec
    assert benchmark(ix.psn_no_by_certno, n["certno"]["retired"]) == n["psn"]["retired"]


def test_read_20_line_outpatient_request(benchmark, spec):
    _ix, n = spec
    raw = spb.OutpatientSettleRequest(
        request_id="R000000000000000000001", psn_no=n["psn"]["retired"], fixmedins_code=n["inst"]["hk_l2"],
        setl_date=DATE, card=spb.Card(card_no="C21000000001", card_version="3.0"), acct_used_flag=True,
        lines=[pb.FeeLine(feedetl_sn=f"L{i:04d}", code=code, name="阿莫西林胶囊", unit_price_fen=price, qty_milli=qty,
                          fee_date=DATE) for i, (code, price, qty) in enumerate(LINES_20)]).SerializeToString()
    wire = benchmark(convert.outpatient_wire, raw)
    assert len(wire.command.lines) == 20 and wire.command.card.card_no == "C21000000001"


def test_write_20_line_settlement(benchmark, spec):
    ix, n = spec
    lines = [FeeLine(f"L{i:04d}", code, "", price, qty) for i, (code, price, qty) in enumerate(LINES_20)]
    bill = ix.bill(n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE, lines)
    reply = benchmark(lambda: bill.settlement_response(
        setl_id="S000000000000042", mdtrt_id="M000000000000041", psn_no=n["psn"]["retired"], psn_name="张建国",
        fixmedins_code=n["inst"]["hk_l3"], fixmedins_name="海口市人民医院", insuplc_admdvs="210102",
        mdtrtarea_admdvs="460100", visit_kind=pb.VISIT_KIND_INPATIENT, insutype=pb.INSUTYPE_EMPLOYEE,
        filing_id="F0001", filing_kind=pb.FILING_KIND_RETIRED_RELOCATION, setl_date=DATE,
        status=pb.SETTLEMENT_STATUS_SETTLED, lines=lines, risk_flags=(pb.RISK_FLAG_HIGH_COST,), clearing_month=202603))
    assert len(spb.SettlementResponse.FromString(reply).settlement.lines) == 20
