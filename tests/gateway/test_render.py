"""Text a clerk reads: columns padded by display width (a Chinese character takes two terminal columns),
tables with headers, labels that match their units."""
from __future__ import annotations

from gateway._pb.yidi.v1 import common_pb2 as pb, funds_pb2 as fdpb, settlement_pb2 as spb
from gateway.cli.render import pad, render, render_accumulators, table, width


def test_width_counts_chinese_as_two_columns():
    assert width("abc") == 3 and width("海南省") == 6 and width("¥1,500.00") == 9 and width("e\u0301") == 1
    assert pad("海南", 6) == "海南  " and pad("海南", 6, ">") == "  海南"


def test_a_table_lines_up_after_chinese_names():
    lines = table(["province", "name", "amount"], [["460000", "海南省", "¥1.00"], ["650000", "新疆维吾尔自治区", "¥100.00"]],
                  "<<>")
    assert len({width(line) for line in lines}) == 1, lines
    assert lines[0].startswith("province")


def test_positions_have_a_header_and_straight_columns():
    positions = fdpb.Positions(positions=[
        fdpb.Position(province="230000", province_name="黑龙江省", prepaid_fen=5_000_000, used_fen=4_000_000,
                      balance_fen=1_000_000, usage_bp=8000, level=fdpb.WARNING_LEVEL_YELLOW),
        fdpb.Position(province="460000", province_name="海南省", prepaid_fen=100, used_fen=150, balance_fen=-50,
                      usage_bp=15000, level=fdpb.WARNING_LEVEL_EXHAUSTED, top_up_demand_fen=50)])
    lines = render(positions).splitlines()
    assert lines[0].split()[:3] == ["province", "name", "prepaid"] and len(lines) == 3
    assert len({width(line) for line in lines}) == 1, lines


def test_settlement_lines_are_equally_wide():
    s = pb.Settlement(setl_id="S000000000000001", breakdown=pb.Breakdown(medfee_sumamt=4005000, fund_pay_sumamt=1))
    body = [line for line in render(spb.SettlementResponse(settlement=s)).splitlines() if "¥" in line]
    assert len(body) == 12 and len({width(line) for line in body}) == 1, body


def test_accumulators_are_labelled_without_fen_when_shown_in_yuan():
    text = render_accumulators(pb.Accumulators(psn_no="P1", year=2026, inpatient_fund_paid_fen=123456,
                                               inpatient_admissions=2,
                                               chronic=[pb.ChronicAccumulators(dise_codg="M01600", fund_paid_fen=500)]))
    assert "_fen" not in text
    assert "inpatient_fund_paid" in text and "¥1,234.56" in text and "chronic M01600 fund_paid" in text


def report(province: str = "") -> fdpb.ClearingReport:
    totals = fdpb.ClearingTotals(settlements=3, cancellations=1, fund_pay_sumamt=1000, acct_pay_sumamt=50)
    nets = [fdpb.NetPosition(province="210000", payable_fen=1050, net_fen=-1050),
            fdpb.NetPosition(province="460000", receivable_fen=1050, net_fen=1050)]
    return fdpb.ClearingReport(
        month=202611, closed=True, totals=totals,
        pairs=[fdpb.ProvincePair(insured_province="210000", treatment_province="460000", totals=totals)],
        net_positions=[n for n in nets if not province or n.province == province],
        province_names={"210000": "辽宁省", "460000": "海南省"})


def test_a_clearing_report_has_headers_and_a_sum_only_when_whole():
    whole = render(report())
    assert "insured 参保地" in whole and "receivable 应收" in whole and "(2 net)" in whole
    assert "sum of net positions ¥0.00" in whole
    assert "sum of net positions" not in render(report("460000"))
