"""Month-end operations from the CLI, against a real gateway: the commands, the charts, and a simulated month.

Tests run with warnings as errors, so a glyph missing from the chart font
(a province name drawn as boxes) fails here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys


from datagen import generate
from gateway._pb.yidi.v1 import funds_pb2 as fdpb
from gateway.testing import dev_certs
from builders import DRUG_A, HK_L3
from gateway_harness import ROOT, file_person

PROVINCES = {"110000": "北京市", "230000": "黑龙江省", "440000": "广东省", "460000": "海南省",
             "650000": "新疆维吾尔自治区", "540000": "西藏自治区"}


def yidi(target: str, caller: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # over TLS with the test certificates (the caller's own client certificate), as `make setup`'s in certs/dev
    run = subprocess.run([sys.executable, "-m", "gateway", "--target", target, "--caller", caller, *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, YIDI_CERTS=dev_certs().directory))
    if check:
        assert run.returncode == 0, run.stdout + run.stderr
    return run


# ------------------------------------------------------------------ the charts
def sample_report() -> fdpb.ClearingReport:
    codes = sorted(PROVINCES)
    pairs = [fdpb.ProvincePair(insured_province=a, treatment_province=b,
                               totals=fdpb.ClearingTotals(fund_pay_sumamt=(i * 7 + j * 3 + 1) * 1_000_000))
             for i, a in enumerate(codes) for j, b in enumerate(codes) if a != b]
    receivable = {c: sum(p.totals.fund_pay_sumamt for p in pairs if p.treatment_province == c) for c in codes}
    payable = {c: sum(p.totals.fund_pay_sumamt for p in pairs if p.insured_province == c) for c in codes}
    nets = [fdpb.NetPosition(province=c, receivable_fen=receivable[c], payable_fen=payable[c],
                             net_fen=receivable[c] - payable[c]) for c in codes]
    return fdpb.ClearingReport(month=202611, closed=True, pairs=pairs, net_positions=nets, province_names=PROVINCES)


def test_the_charts_are_drawn_in_the_cjk_font_and_are_not_blank(tmp_path):
    from matplotlib import font_manager, image

    from gateway.cli.charts import CJK_FAMILY, draw_month

    paths = draw_month(sample_report(), str(tmp_path))   # a missing glyph would warn, and warnings are errors here
    assert [os.path.basename(p) for p in paths] == ["clearing-202611-flows.png", "clearing-202611-net.png"]
    used = font_manager.findfont(font_manager.FontProperties(family=CJK_FAMILY), fallback_to_default=False)
    assert "NotoSansCJK" in os.path.basename(used), used
    for path in paths:
        assert os.path.getsize(path) > 20_000, path
        pixels = image.imread(path)
        colours = {tuple(px) for row in pixels[::4] for px in row[::4]}
        assert len(colours) >= 8, (path, len(colours))   # a heat map, bars of two signs, text: not a blank canvas


# ------------------------------------------------------------------ the commands
def test_month_end_commands(gw, tmp_path):
    file_person(gw.client("210000"), "P2101027001", "21010219700101701")
    fees = tmp_path / "fees.json"
    fees.write_text(json.dumps([{"code": DRUG_A, "unit_price_fen": 12500, "qty": "2"}]))
    out = yidi(gw.target, "national", "--request-id", "cli-prepaid", "prepaid", "set", "--province", "210000",
               "--amount-fen", "100000").stdout
    assert "210000" in out and "辽宁省" in out and "normal" in out
    settled = []
    for day in (3, 4):
        settled.append(json.loads(yidi(gw.target, "460000", "--json", "outpatient", "--psn-no", "P2101027001",
                                       "--institution", HK_L3, "--date", f"2026110{day}",
                                       "--file", str(fees)).stdout)["settlement"])
    assert "clearing month 202611" in yidi(gw.target, "460000", "show", "--setl-id", settled[0]["setl_id"]).stdout
    assert "closed" in yidi(gw.target, "national", "clearing", "close", "--month", "202611").stdout
    cancelled = yidi(gw.target, "460000", "cancel", "--setl-id", settled[1]["setl_id"], "--date", "20261130").stdout
    assert "cancellation booked in 202612" in cancelled
    report = yidi(gw.target, "national", "clearing", "report", "--month", "202611", "--institutions",
                  "--charts", str(tmp_path / "charts"))
    assert "辽宁省 → 海南省" in report.stdout.replace("  ", " ") or "辽宁省" in report.stdout
    assert "sum of net positions ¥0.00" in report.stdout and HK_L3 in report.stdout
    assert os.path.exists(tmp_path / "charts" / "clearing-202611-net.png")
    assert "confirmed by 460000" in yidi(gw.target, "460000", "clearing", "confirm", "--month", "202611").stdout
    assert "usage" in yidi(gw.target, "210000", "positions", "--province", "210000").stdout
    # 对账 from the province's books: totals match; a mistyped amount is found settlement by settlement.
    books = tmp_path / "books.jsonl"
    rows = [{"setl_id": s["setl_id"], "medfee_sumamt": int(s["breakdown"]["medfee_sumamt"]),
             "fund_pay_sumamt": int(s["breakdown"]["fund_pay_sumamt"]),
             "psn_cash_pay": int(s["breakdown"]["psn_cash_pay"]), "cancelled": i == 1} for i, s in enumerate(settled)]
    books.write_text("".join(json.dumps(r) + "\n" for r in rows))
    span = ["--institution", HK_L3, "--from", "20261101", "--to", "20261130", "--file", str(books)]
    assert "totals: match" in yidi(gw.target, "460000", "reconcile", *span).stdout
    rows[0]["fund_pay_sumamt"] += 1
    books.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = yidi(gw.target, "460000", "reconcile", *span).stdout
    assert "totals: MISMATCH" in out and "amount_differs" in out and settled[0]["setl_id"] in out
    # 报错处理: report, assign, resolve, list.
    problem = yidi(gw.target, "460000", "--field", "problem.problem_id", "problems", "report", "--setl-id",
                   settled[0]["setl_id"], "--category", "amount_dispute", "--text", "医院金额与平台不一致").stdout.strip()
    yidi(gw.target, "460000", "problems", "assign", "--id", problem, "--text", "王工")
    yidi(gw.target, "460000", "problems", "resolve", "--id", problem, "--text", "医院已更正")
    listed = yidi(gw.target, "210000", "problems", "list", "--province", "210000").stdout
    assert problem in listed and "resolved" in listed and "王工" in listed
    assert "opened" in yidi(gw.target, "national", "problems", "show", "--id", problem).stdout
    refused = yidi(gw.target, "440000", "positions", "--province", "210000", check=False)
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr


# ------------------------------------------------------------------ a month in the life
def test_simulate_month_keeps_every_invariant_and_lands_near_the_published_month(tmp_path):
    generate(str(tmp_path / "data"), persons=20_000, seed=2026)
    run = subprocess.run([sys.executable, "-m", "gateway", "simulate-month", "--seed", "11", "--settlements", "2500",
                          "--data-dir", str(tmp_path / "data"), "--charts", str(tmp_path / "charts")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, YIDI_TARGET=""))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["settlements"] >= 2000 and result["cancellations"] > 0 and result["cancellations_after_close"] > 0
    assert (result["net_positions_sum_fen"], result["reconciliation_mismatches"], result["lost"],
            result["duplicated"]) == (0, 0, 0, 0)
    assert result["report_matches_records"] and result["positions_consistent"] and result["retries"] > 0
    assert result["provinces_yellow"] + result["provinces_red"] + result["provinces_exhausted"] >= 2   # past their lines
    assert abs(result["inpatient_avg_fee_fen"] - 2_370_000) < 237_000
    assert abs(result["inpatient_fund_share_bp"] - 5980) < 598
    assert result["chronic_settlements"] > 50 and result["with_account_pay"] > 500   # SPEC §10 in the month
    assert "published 2019-09" in run.stdout
    assert os.path.getsize(tmp_path / "charts" / "clearing-202611-flows.png") > 20_000
