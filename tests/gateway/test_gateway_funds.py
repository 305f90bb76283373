"""SPEC §7 and §8 over real gRPC on loopback: risk flags, prepaid positions, clearing months,
reconciliation and problem reports, as the provinces and the national operator see them.

One gateway serves the module, on the SPEC fixture (persons insured in 辽宁 210000, treated in 海南
460000 and 广东 440000), with a ledger seeded with one problem report opened 40 days ago.  Each test
uses its own persons and its own months, so their order does not matter.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time

import grpc
import pytest

from core import events
from core.archive import ArchivedProblem, ProblemNote, PutProblem
from core.events import ProblemFacts, ProblemReported
from core.funds import on_site_check
from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import admin_pb2, common_pb2 as pb, funds_pb2 as fdpb, problems_pb2 as ppb
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.testing import seal_key
from gateway.store import Record, SqliteStore
from builders import DRUG_A, HK_L1, HK_L2, TREATMENT_A, admit, cancel, line, outpatient, rid, settle, upload
from gateway_harness import file_person

HAINAN, LIAONING, GUANGDONG, NATIONAL = "460000", "210000", "440000", "national"
DAY_MS = 86_400_000
OLD_PROBLEM = "R000000000000001"
_people = itertools.count(1)


def seed_old_problem(path: str) -> None:
    """A report opened 40 days ago, written as the gateway writes one (record, row and note together)."""
    opened = int(time.time() * 1000) - 40 * DAY_MS
    facts = ProblemFacts(OLD_PROBLEM, LIAONING, "settlement_missing", "结算数据未到参保地", "", "", HAINAN, LIAONING,
                         opened)
    event = ProblemReported(problem=facts)
    store = SqliteStore(path, seal_key())
    try:
        store.append([Record(event.kind, LIAONING, "seed-problem", b"s" * 16, event.key, events.encode(event), b"",
                             changes=(PutProblem(ArchivedProblem(facts, updated_at_ms=opened)),
                                      ProblemNote(OLD_PROBLEM, 1, "opened", LIAONING, facts.text, opened)))])
    finally:
        store.close()


@pytest.fixture(scope="module")
def spec_data(spec_data):
    """The module's gateway (conftest's gw) starts on a ledger that already holds an old problem report."""
    seed_old_problem(spec_data["ledger"])
    return spec_data


@pytest.fixture(scope="module")
def clients(gw):
    return {who: gw.client(who) for who in (HAINAN, LIAONING, GUANGDONG, NATIONAL)}


def new_person(liaoning, dest: str = "460000") -> str:
    n = next(_people)
    psn_no = f"P21010297{n:02d}"
    file_person(liaoning, psn_no, f"21010219700101{n:03d}", dest=dest)
    return psn_no


def settle_outpatient(client, psn_no, date, inst=HK_L1, price=30000) -> pb.Settlement:
    return client(client.settlement.OutpatientSettle, outpatient(rid("op"), psn_no, inst, date=date,
                                                                 lines=[line(1, DRUG_A, price, 1000)])).settlement


def inpatient(client, psn_no, adm, dscg, price, inst=HK_L2) -> pb.Settlement:
    visit = admit(client, psn_no, inst, rid("a"), adm)
    upload(client, visit.mdtrt_id, [line(1, TREATMENT_A, price, 1000)], rid("u"))
    return settle(client, visit.mdtrt_id, rid("s"), dscg)


def month(client, rpc, m, **kw):
    request = (fdpb.ConfirmStatementRequest if rpc == "ConfirmStatement" else fdpb.ClearingMonthRequest)(
        request_id=rid("m"), month=m, **kw)
    return client(getattr(client.funds, rpc), request)


def report(client, m, province="", with_institutions=False) -> fdpb.ClearingReport:
    return client(client.funds.GetClearingReport, fdpb.GetClearingReportRequest(
        month=m, province=province, with_institutions=with_institutions))


def position(client, province=LIAONING) -> fdpb.Position:
    return client(client.funds.GetPositions, fdpb.GetPositionsRequest(province=province)).positions[0]


def flags(s) -> set[str]:
    return {pb.RiskFlag.Name(f).removeprefix("RISK_FLAG_") for f in s.risk_flags}


# ------------------------------------------------------------------ SPEC §7 risk flags
def test_settlements_carry_their_risk_flags_and_clearing_month(clients):
    hainan, liaoning = clients[HAINAN], clients[LIAONING]
    psn = new_person(liaoning)
    long_and_costly = inpatient(hainan, psn, 20260301, 20260405, 25_000_000)
    assert {"LONG_STAY", "HIGH_COST"} <= flags(long_and_costly) and long_and_costly.clearing_month == 202604
    short = inpatient(hainan, psn, 20260406, 20260410, 100_000)
    assert not {"LONG_STAY", "HIGH_COST"} & flags(short)
    same_day = [settle_outpatient(hainan, psn, 20260412) for _ in range(4)]
    assert ["SAME_DAY_REPEAT" in flags(s) for s in same_day] == [False, False, True, True]
    for s in [long_and_costly, short, *same_day]:
        assert ("ON_SITE_CHECK" in flags(s)) == on_site_check(s.setl_id), s.setl_id
        shown = hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=s.setl_id)).settlement
        assert list(shown.risk_flags) == list(s.risk_flags) and shown.clearing_month == s.clearing_month
    # A cancelled same-day settlement no longer counts: the next one that day is the 4th live one, not the 5th.
    cancel(hainan, same_day[3].setl_id, date=20260412)
    assert "SAME_DAY_REPEAT" in flags(settle_outpatient(hainan, psn, 20260412))


def test_on_site_check_samples_about_a_fifth():
    hits = sum(on_site_check(f"S{n:015d}") for n in range(1, 20_001))
    assert 3_800 <= hits <= 4_200


# ------------------------------------------------------------------ SPEC §8 prepaid positions
def test_positions_warning_lines_and_top_up_never_block(clients):
    hainan, liaoning, national = clients[HAINAN], clients[LIAONING], clients[NATIONAL]
    psn = new_person(liaoning)
    before = position(national)
    s = inpatient(hainan, psn, 20260801, 20260805, 500_000)
    after = position(national)
    assert after.drawn_fen - before.drawn_fen == s.breakdown.fund_pay_sumamt > 0
    used = after.used_fen
    assert after.balance_fen == after.prepaid_fen - after.drawn_fen + after.given_back_fen
    for prepaid, level in ((used * 2, "NORMAL"), (used * 10000 // 7500, "YELLOW"), (used * 10000 // 9500, "RED"),
                           (used - 100, "EXHAUSTED")):
        p = national(national.funds.SetPrepaid, fdpb.SetPrepaidRequest(request_id=rid(), province=LIAONING,
                                                                        amount_fen=prepaid))
        assert fdpb.WarningLevel.Name(p.level) == f"WARNING_LEVEL_{level}", (prepaid, used, p)
        assert p.province_name == "辽宁省" and p.prepaid_fen == prepaid
    assert p.top_up_demand_fen == 100 and p.balance_fen == -100
    # Exhausted: the patient is never turned away; the settlement goes through and the demand grows.
    s2 = settle_outpatient(hainan, psn, 20260806)
    assert position(national).top_up_demand_fen == 100 + s2.breakdown.fund_pay_sumamt
    topped = national(national.funds.TopUpPrepaid, fdpb.TopUpPrepaidRequest(request_id=rid(), province=LIAONING,
                                                                             amount_fen=used))
    assert topped.topped_up_fen == used and topped.level == fdpb.WARNING_LEVEL_NORMAL
    # A cancellation gives the fund back to the same position.
    back = position(national).given_back_fen
    cancel(hainan, s.setl_id, date=20260810)
    assert position(national).given_back_fen == back + s.breakdown.fund_pay_sumamt
    # A province reads its own position only; only the national operator sets one.
    assert position(liaoning).province == LIAONING
    assert liaoning.refused(liaoning.funds.GetPositions, fdpb.GetPositionsRequest(province=HAINAN))[1] == "PERMISSION_DENIED"
    assert liaoning.refused(liaoning.funds.GetPositions, fdpb.GetPositionsRequest())[1] == "PERMISSION_DENIED"
    assert liaoning.refused(liaoning.funds.SetPrepaid, fdpb.SetPrepaidRequest(
        request_id=rid(), province=LIAONING, amount_fen=1))[1] == "PERMISSION_DENIED"
    listed = national(national.funds.GetPositions, fdpb.GetPositionsRequest()).positions
    assert LIAONING in {p.province for p in listed}


def test_warning_lines_at_their_boundaries_over_grpc(tmp_path, gateways):
    """SPEC §8: a line counts usage equal to it (达到).  On a gateway of its own, the fund used by 辽宁's
    persons is U fen, a multiple of 63, so that 70% and 90% of a prepaid amount can be met exactly: at
    P = 10U/7 usage is 70.00%, at P + 1 fen it is 69.99% (usage_bp from fen, rounded down); likewise 90%
    and 100%."""
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"))
    hainan, liaoning, national = gw.client(HAINAN), gw.client(LIAONING), gw.client(NATIONAL)
    fund = settle_outpatient(hainan, new_person(liaoning), 20260601, price=140_000).breakdown.fund_pay_sumamt
    assert fund > 0
    for _ in range(63 // math.gcd(fund, 63) - 1):   # the same bill for fresh persons pays the same
        assert settle_outpatient(hainan, new_person(liaoning), 20260601, price=140_000).breakdown.fund_pay_sumamt == fund
    used = position(national).used_fen
    assert used % 63 == 0
    for prepaid, usage_bp, level in ((used * 10 // 7 + 1, 6999, "NORMAL"), (used * 10 // 7, 7000, "YELLOW"),
                                     (used * 10 // 9 + 1, 8999, "YELLOW"), (used * 10 // 9, 9000, "RED"),
                                     (used + 1, 9999, "RED"), (used, 10000, "EXHAUSTED")):
        p = national(national.funds.SetPrepaid, fdpb.SetPrepaidRequest(request_id=rid(), province=LIAONING,
                                                                        amount_fen=prepaid))
        assert (p.usage_bp, fdpb.WarningLevel.Name(p.level)) == (usage_bp, f"WARNING_LEVEL_{level}"), (used, prepaid)
        assert p.usage_bp == used * 10000 // prepaid and (p.yellow_bp, p.red_bp) == (7000, 9000)
    assert p.top_up_demand_fen == 0 and p.balance_fen == 0  # exactly exhausted: nothing owed yet


# ------------------------------------------------------------------ SPEC §8 clearing months
def test_clearing_month_books_forward_freezes_confirms_and_reports(clients):
    hainan, liaoning, national = clients[HAINAN], clients[LIAONING], clients[NATIONAL]
    guangdong = clients[GUANGDONG]
    psn = new_person(liaoning)
    first = settle_outpatient(hainan, psn, 20260510)
    assert first.clearing_month == 202605
    assert month(national, "CloseMonth", 202605).closed
    frozen = report(national, 202605, with_institutions=True).SerializeToString()
    late = settle_outpatient(hainan, psn, 20260520)       # dated in the closed month: booked in the next open one
    assert late.clearing_month == 202606
    undo = cancel(hainan, first.setl_id, date=20260525)  # a reversal after its month closed is carried forward
    assert undo.cancel_clearing_month == 202606 and undo.clearing_month == 202605
    assert hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(
        setl_id=first.setl_id)).settlement.cancel_clearing_month == 202606
    assert report(national, 202605, with_institutions=True).SerializeToString() == frozen  # a closed month never changes
    r = report(national, 202605, with_institutions=True)
    fund = first.breakdown.fund_pay_sumamt
    assert (r.totals.settlements, r.totals.cancellations, r.totals.fund_pay_sumamt) == (1, 0, fund)
    assert [(p.insured_province, p.treatment_province, p.totals.medfee_sumamt) for p in r.pairs] == [
        (LIAONING, HAINAN, first.breakdown.medfee_sumamt)]
    assert {n.province: n.net_fen for n in r.net_positions} == {LIAONING: -fund, HAINAN: fund}
    assert sum(n.net_fen for n in r.net_positions) == 0
    assert [i.fixmedins_code for i in r.institutions] == [HK_L1] and r.institutions[0].fixmedins_name
    assert r.province_names[LIAONING] == "辽宁省" and r.province_names[HAINAN] == "海南省"
    # The open month has no report yet; a closed month cannot be closed again.
    assert national.refused(national.funds.GetClearingReport, fdpb.GetClearingReportRequest(
        month=202606))[1] == "CLEARING_MONTH_OPEN"
    assert national.refused(national.funds.CloseMonth, fdpb.ClearingMonthRequest(
        request_id=rid(), month=202605))[1] == "CLEARING_MONTH_CLOSED"
    # Reopen while nobody confirmed; once a province confirms, never.
    assert not month(national, "ReopenMonth", 202605).closed
    assert settle_outpatient(hainan, psn, 20260521).clearing_month == 202605   # open again: its own month
    month(national, "CloseMonth", 202605)
    assert list(month(liaoning, "ConfirmStatement", 202605, province=LIAONING).confirmed) == [LIAONING]
    assert liaoning.refused(liaoning.funds.ConfirmStatement, fdpb.ConfirmStatementRequest(
        request_id=rid(), month=202605, province=LIAONING))[1] == "CLEARING_MONTH_CONFIRMED"
    assert liaoning.refused(liaoning.funds.ConfirmStatement, fdpb.ConfirmStatementRequest(
        request_id=rid(), month=202605, province=HAINAN))[1] == "PERMISSION_DENIED"
    assert national.refused(national.funds.ReopenMonth, fdpb.ClearingMonthRequest(
        request_id=rid(), month=202605))[1] == "CLEARING_MONTH_CONFIRMED"
    assert liaoning.refused(liaoning.funds.ConfirmStatement, fdpb.ConfirmStatementRequest(
        request_id=rid(), month=202607, province=LIAONING))[1] == "CLEARING_MONTH_OPEN"
    # Each province reads what concerns it; 广东 sees nothing of 辽宁→海南, and cannot read 海南's view.
    mine = report(liaoning, 202605, province=LIAONING)
    assert [n.province for n in mine.net_positions] == [LIAONING] and len(mine.pairs) == 1
    assert not report(guangdong, 202605, province=GUANGDONG).pairs
    assert guangdong.refused(guangdong.funds.GetClearingReport, fdpb.GetClearingReportRequest(
        month=202605, province=HAINAN))[1] == "PERMISSION_DENIED"
    assert hainan.refused(hainan.funds.CloseMonth, fdpb.ClearingMonthRequest(
        request_id=rid(), month=202609))[1] == "PERMISSION_DENIED"


# ------------------------------------------------------------------ SPEC §8 reconciliation
def books(settlements, cancelled: set[str]) -> list[fdpb.ReconcileItem]:
    return [fdpb.ReconcileItem(setl_id=s.setl_id, fund_pay_sumamt=s.breakdown.fund_pay_sumamt,
                               cancelled=s.setl_id in cancelled) for s in sorted(settlements, key=lambda x: x.setl_id)]


def detail(client, span, items, per_message=7) -> fdpb.ReconcileDetailResponse:
    chunks = [items[i:i + per_message] for i in range(0, len(items), per_message)] or [[]]
    return client(client.funds.ReconcileDetail,
                  iter(fdpb.ReconcileDetailRequest(range=span if i == 0 else None, items=c) for i, c in enumerate(chunks)))


def test_reconciliation_totals_then_detail(clients):
    hainan, liaoning, guangdong = clients[HAINAN], clients[LIAONING], clients[GUANGDONG]
    people = [new_person(liaoning) for _ in range(3)]
    settled = [settle_outpatient(hainan, people[n % 3], 20260701 + n % 28, price=10_000 + 137 * n) for n in range(30)]
    cancelled = {s.setl_id for s in settled[::10]}
    for setl_id in cancelled:
        cancel(hainan, setl_id, date=20260730)
    live = [s for s in settled if s.setl_id not in cancelled]
    span = fdpb.ReconcileRange(fixmedins_code=HK_L1, date_from=20260701, date_to=20260731)
    ours = fdpb.ReconcileFigures(count=len(live), medfee_sumamt=sum(s.breakdown.medfee_sumamt for s in live),
                                 fund_pay_sumamt=sum(s.breakdown.fund_pay_sumamt for s in live),
                                 psn_cash_pay=sum(s.breakdown.psn_cash_pay for s in live))
    answer = hainan(hainan.funds.ReconcileTotals, fdpb.ReconcileTotalsRequest(range=span, figures=ours))
    assert answer.match and answer.platform == ours
    wrong = fdpb.ReconcileFigures(count=ours.count, medfee_sumamt=ours.medfee_sumamt + 1,
                                  fund_pay_sumamt=ours.fund_pay_sumamt, psn_cash_pay=ours.psn_cash_pay)
    assert not hainan(hainan.funds.ReconcileTotals, fdpb.ReconcileTotalsRequest(range=span, figures=wrong)).match
    items = books(settled, cancelled)
    exact = detail(hainan, span, items)
    assert exact.match and exact.province_items == exact.platform_items == 30 and not exact.differences
    # The province's books lost one, mistyped one amount, missed one cancellation and hold an id the platform never issued.
    spoiled = list(items)
    dropped = spoiled.pop(4)
    spoiled[5] = fdpb.ReconcileItem(setl_id=spoiled[5].setl_id, fund_pay_sumamt=spoiled[5].fund_pay_sumamt + 1,
                                    cancelled=spoiled[5].cancelled)
    flipped = next(i for i, x in enumerate(spoiled) if x.cancelled)
    spoiled[flipped] = fdpb.ReconcileItem(setl_id=spoiled[flipped].setl_id,
                                          fund_pay_sumamt=spoiled[flipped].fund_pay_sumamt, cancelled=False)
    spoiled.append(fdpb.ReconcileItem(setl_id="S999999999999999", fund_pay_sumamt=5))
    got = detail(hainan, span, spoiled)
    kinds = {(fdpb.DifferenceKind.Name(d.kind).removeprefix("DIFFERENCE_KIND_"), d.setl_id) for d in got.differences}
    assert kinds == {("MISSING_ON_PROVINCE", dropped.setl_id), ("AMOUNT_DIFFERS", spoiled[5].setl_id),
                     ("STATE_DIFFERS", spoiled[flipped].setl_id), ("MISSING_ON_PLATFORM", "S999999999999999")}
    assert (got.missing_on_province, got.missing_on_platform, got.amount_differs, got.state_differs) == (1, 1, 1, 1)
    assert not got.match and not got.truncated
    # Out of order is refused; another province cannot reconcile here; an unknown institution is named.
    code, reason, _ = hainan.refused(lambda r, **kw: hainan.funds.ReconcileDetail(iter(r), **kw), [
        fdpb.ReconcileDetailRequest(range=span, items=[items[3], items[2]])])
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert guangdong.refused(guangdong.funds.ReconcileTotals, fdpb.ReconcileTotalsRequest(
        range=span, figures=ours))[1] == "PERMISSION_DENIED"
    unknown = fdpb.ReconcileRange(fixmedins_code="H46019999999", date_from=20260701, date_to=20260731)
    assert hainan.refused(hainan.funds.ReconcileTotals, fdpb.ReconcileTotalsRequest(
        range=unknown, figures=ours))[1] == "INSTITUTION_UNKNOWN"
    # Flags can be listed per institution, as each settlement got them.
    listed = hainan(hainan.funds.ListFlagged, fdpb.ListFlaggedRequest(range=span))
    assert {s.setl_id for s in listed.settlements} == {s.setl_id for s in settled if s.risk_flags}
    sampled = hainan(hainan.funds.ListFlagged, fdpb.ListFlaggedRequest(range=span, flags=[pb.RISK_FLAG_ON_SITE_CHECK]))
    assert {s.setl_id for s in sampled.settlements} == {s.setl_id for s in settled if on_site_check(s.setl_id)}


# ------------------------------------------------------------------ SPEC §8 problem reports
def test_problem_reports_are_listed_oldest_first_flagged_when_overdue_and_never_deleted(clients):
    hainan, liaoning, guangdong, national = clients[HAINAN], clients[LIAONING], clients[GUANGDONG], clients[NATIONAL]
    psn = new_person(liaoning)
    s = settle_outpatient(hainan, psn, 20260901)
    opened = hainan(hainan.problems.ReportProblem, ppb.ReportProblemRequest(
        request_id=rid(), setl_id=s.setl_id, category=ppb.PROBLEM_CATEGORY_AMOUNT_DISPUTE, text="医院与平台金额不一致")).problem
    assert (opened.treatment_province, opened.insured_province, opened.state) == (HAINAN, LIAONING, ppb.PROBLEM_STATE_OPEN)
    by_visit = liaoning(liaoning.problems.ReportProblem, ppb.ReportProblemRequest(
        request_id=rid(), mdtrt_id=s.mdtrt_id, category=ppb.PROBLEM_CATEGORY_OTHER, text="参保地未收到结算数据")).problem
    listed = hainan(hainan.problems.ListProblems, ppb.ListProblemsRequest(
        province=HAINAN, state=ppb.PROBLEM_STATE_OPEN)).problems
    ids = [p.problem_id for p in listed]
    assert ids[0] == OLD_PROBLEM and ids.index(opened.problem_id) < ids.index(by_visit.problem_id)
    assert listed[0].overdue and listed[0].age_days >= 40 and not any(p.overdue for p in listed[1:])
    for action, text in (("AssignProblem", "海口市医保局 王工"), ("CommentProblem", "已调取医院明细"),
                         ("ResolveProblem", "医院重传明细后一致")):
        done = hainan(getattr(hainan.problems, action), ppb.UpdateProblemRequest(
            request_id=rid(), problem_id=opened.problem_id, text=text)).problem
    assert (done.state, done.assignee, done.resolution) == (ppb.PROBLEM_STATE_RESOLVED, "海口市医保局 王工", "医院重传明细后一致")
    assert hainan.refused(hainan.problems.AssignProblem, ppb.UpdateProblemRequest(
        request_id=rid(), problem_id=opened.problem_id, text="x"))[1] == "PROBLEM_RESOLVED"
    liaoning(liaoning.problems.CommentProblem, ppb.UpdateProblemRequest(
        request_id=rid(), problem_id=opened.problem_id, text="参保地确认"))
    shown = national(national.problems.GetProblem, ppb.GetProblemRequest(problem_id=opened.problem_id))
    assert [n.action for n in shown.notes] == ["opened", "assigned", "commented", "resolved", "commented"]
    assert [n.by for n in shown.notes] == [HAINAN, HAINAN, HAINAN, HAINAN, LIAONING]
    resolved = national(national.problems.ListProblems, ppb.ListProblemsRequest(state=ppb.PROBLEM_STATE_RESOLVED))
    assert opened.problem_id in {p.problem_id for p in resolved.problems}
    # Paging goes on after the last id seen; other provinces see nothing of it.
    page = national(national.problems.ListProblems, ppb.ListProblemsRequest(limit=1))
    nxt = national(national.problems.ListProblems, ppb.ListProblemsRequest(limit=1, after_problem_id=page.problems[0].problem_id))
    assert page.problems[0].problem_id == OLD_PROBLEM and nxt.problems[0].problem_id > OLD_PROBLEM
    assert not guangdong(guangdong.problems.ListProblems, ppb.ListProblemsRequest(province=GUANGDONG)).problems
    assert guangdong.refused(guangdong.problems.GetProblem, ppb.GetProblemRequest(
        problem_id=opened.problem_id))[1] == "PROBLEM_NOT_FOUND"  # as if it did not exist (SPEC §9)
    assert national.refused(national.problems.GetProblem, ppb.GetProblemRequest(
        problem_id="R000000099999999"))[1] == "PROBLEM_NOT_FOUND"


# ------------------------------------------------------------------ automatic reports, restarts
def wait_for_problem(client, fragment: str, province: str = "", timeout_s: float = 10) -> ppb.Problem:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in client(client.problems.ListProblems, ppb.ListProblemsRequest(province=province)).problems:
            if fragment in p.text:
                return p
        time.sleep(0.1)
    raise AssertionError(f"no problem report mentions {fragment!r}")


def test_an_internal_error_and_a_failed_apply_open_problem_reports(tmp_path, gateways, monkeypatch):
    names = write_spec_dataset(tmp_path / "data")
    ledger = str(tmp_path / "ledger.sqlite")
    with open(ledger + ".fatal.json", "w", encoding="utf-8") as f:  # what a failed apply leaves before the restart
        json.dump({"correlation_id": "feedc0ffee000001", "at_ms": 1,
                   "what": "账本记录应用失败（settled S000000000000009：InvariantError('x')）"}, f)
    monkeypatch.setenv("YIDI_FAIL_RPC", "FundsService/GetPositions")
    gw = gateways(names["dir"], ledger)
    national = gw.client(NATIONAL)
    assert wait_for_problem(national, "feedc0ffee000001").category == ppb.PROBLEM_CATEGORY_INTERNAL_ERROR
    assert not os.path.exists(ledger + ".fatal.json")
    hainan = gw.client(HAINAN)
    code, reason, message = hainan.refused(hainan.funds.GetPositions, fdpb.GetPositionsRequest(province=HAINAN))
    assert (code, reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    correlation_id = message.split("差错编号 ")[1][:16]
    report_ = wait_for_problem(national, correlation_id)
    assert (report_.reporter, report_.treatment_province) == ("gateway", HAINAN)
    assert wait_for_problem(hainan, correlation_id, HAINAN).problem_id == report_.problem_id  # 海南 sees its own


def test_positions_and_months_survive_restarts_with_and_without_a_snapshot(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    ledger = str(tmp_path / "ledger.sqlite")
    gw = gateways(names["dir"], ledger)
    hainan, liaoning, national = gw.client(HAINAN), gw.client(LIAONING), gw.client(NATIONAL)
    national(national.funds.SetPrepaid, fdpb.SetPrepaidRequest(request_id="p", province=LIAONING, amount_fen=10**8))
    psn = new_person(liaoning)
    settle_outpatient(hainan, psn, 20261001)
    month(national, "CloseMonth", 202610)
    national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
    for date in (20261002, 20261103):   # after the snapshot: the tail
        settle_outpatient(hainan, psn, date)
    month(national, "CloseMonth", 202611)
    expected = (position(national), report(national, 202610, with_institutions=True),
                report(national, 202611, with_institutions=True))
    assert gw.stop() == 0
    for snapshots in ("", str(tmp_path / "none")):   # from the snapshot + tail, then a full replay
        gw = gateways(names["dir"], ledger, *(("--snapshots", snapshots) if snapshots else ()))
        national = gw.client(NATIONAL)
        assert (position(national), report(national, 202610, with_institutions=True),
                report(national, 202611, with_institutions=True)) == expected
        assert gw.stop() == 0
