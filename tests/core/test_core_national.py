"""SPEC §10 through the core (engine and index): personal accounts (E6) and what goes with them."""
from __future__ import annotations

import gc

import msgspec
import pytest

from core import Index, LoadError, YidiError, events
from core import commands as cmd
from core.engine import Engine, EngineState
from core.events import FeeLine
from datagen.spec_fixture import DATE, PERSONS, write_jsonl, write_spec_dataset
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from builders import DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, NOT_LISTED, TREATMENT_A

E1_LINES = (FeeLine("1", DRUG_A, "", 1250, 20000), FeeLine("2", DRUG_B, "", 8800, 3500),
            FeeLine("3", DRUG_B_CAPPED, "", 7300, 10000), FeeLine("4", DRUG_C, "", 45000, 1000),
            FeeLine("5", TREATMENT_A, "", 1200000, 1000), FeeLine("6", NOT_LISTED, "", 9999, 2000))


@pytest.fixture
def world(tmp_path):
    names = write_spec_dataset(tmp_path / "data")
    index = Index()
    index.load_dir(names["dir"])
    return Engine(index), names


class Run:
    """Commands through decide → ledger encoding → apply, as the gateway runs them."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.log = engine, []

    def __call__(self, command):
        decision = self.engine.decide(command, len(self.log) + 1)
        self.log.append(events.encode(decision.event))
        self.engine.apply(events.decode(self.log[-1]), len(self.log))
        return decision


def settlement_of(decision) -> spb.SettlementResponse:
    return spb.SettlementResponse.FromString(decision.result.data).settlement


def e6_stay(run: Run, names, **flags):
    admitted = run(cmd.Admit(request_id="a", person=cmd.PersonId(psn_no=names["psn"]["acct"]),
                             fixmedins_code=names["inst"]["hk_l3"], adm_date=20260310))
    mdtrt_id = admitted.event.visit.mdtrt_id
    run(cmd.UploadFees(request_id="f", mdtrt_id=mdtrt_id, lines=E1_LINES))
    return mdtrt_id, run(cmd.DischargeSettle(request_id="s", mdtrt_id=mdtrt_id, dscg_date=DATE, **flags))


def test_e6_own_and_family_accounts_pay_the_in_policy_personal_share(world):
    engine, names = world
    run = Run(engine)
    acct, family = names["psn"]["acct"], names["psn"]["family"]
    assert (engine.accounts.balance(acct), engine.accounts.balance(family)) == (100000, 300000)
    mdtrt_id, settled = e6_stay(run, names, acct_used_flag=True, acct_mulaid_flag=True)
    s = settlement_of(settled)
    b = s.breakdown
    # fund amounts as E1
    assert (b.medfee_sumamt, b.inscp_scp_amt, b.preselfpay_amt, b.hifp_pay, b.fund_pay_sumamt) == (
        1393798, 1292720, 13080, 996812, 996812)
    # acct_payable = 1292720 + 13080 − 996812 = 308988
    assert (b.acct_pay, b.acct_mulaid_pay, b.psn_cash_pay, s.balc) == (100000, 208988, 87998, 0)
    assert (engine.accounts.balance(acct), engine.accounts.balance(family)) == (0, 91012)
    assert settled.event.settlement.acct_draws == ((acct, 100000), (family, 208988))
    # cancelling gives exactly those amounts back to those accounts
    run(cmd.CancelSettlement(request_id="c", setl_id=s.setl_id, cancel_date=DATE))
    assert (engine.accounts.balance(acct), engine.accounts.balance(family)) == (100000, 300000)


def test_without_flags_no_account_pays_and_balc_is_the_balance(world):
    engine, names = world
    run = Run(engine)
    _, settled = e6_stay(run, names)
    s = settlement_of(settled)
    assert (s.breakdown.acct_pay, s.breakdown.acct_mulaid_pay, s.breakdown.psn_cash_pay, s.balc) == (
        0, 0, 396986, 100000)
    assert settled.event.settlement.acct_draws == ()


def test_own_account_only_and_presettlement_changes_nothing(world):
    engine, names = world
    run = Run(engine)
    admitted = run(cmd.Admit(request_id="a", person=cmd.PersonId(psn_no=names["psn"]["acct"]),
                             fixmedins_code=names["inst"]["hk_l3"], adm_date=20260310))
    mdtrt_id = admitted.event.visit.mdtrt_id
    run(cmd.UploadFees(request_id="f", mdtrt_id=mdtrt_id, lines=E1_LINES))
    pre = spb.SettlementResponse.FromString(engine.settlements.presettle(mdtrt_id, DATE, True, True)).settlement
    assert (pre.breakdown.acct_pay, pre.breakdown.acct_mulaid_pay, pre.balc) == (100000, 208988, 0)
    assert engine.accounts.balance(names["psn"]["acct"]) == 100000 and engine.accounts.balance(names["psn"]["family"]) == 300000
    s = settlement_of(run(cmd.DischargeSettle(request_id="s", mdtrt_id=mdtrt_id, dscg_date=DATE,
                                              acct_used_flag=True)))
    assert (s.breakdown.acct_pay, s.breakdown.acct_mulaid_pay, s.breakdown.psn_cash_pay) == (100000, 0, 296986)


def test_an_account_never_pays_fully_self_paid_or_over_cap_amounts(world):
    engine, names = world
    run = Run(engine)
    run(cmd.AdjustAccount(request_id="x", psn_no=names["psn"]["acct"], amount_fen=10_000_000, reason="年度划入"))
    _, settled = e6_stay(run, names, acct_used_flag=True, acct_mulaid_flag=True)
    b = settlement_of(settled).breakdown
    assert b.acct_pay == 308988 and b.acct_mulaid_pay == 0
    assert b.psn_cash_pay == b.fulamt_ownpay_amt + b.overlmt_selfpay == 87998


def test_adjust_account_credits_debits_and_refuses_below_zero(world):
    engine, names = world
    run = Run(engine)
    acct = names["psn"]["acct"]
    result = run(cmd.AdjustAccount(request_id="1", psn_no=acct, amount_fen=5000, reason="年度划入")).result
    assert (result.balance_fen, result.mulaid_psn_nos, result.mulaid_balances_fen) == (
        105000, (names["psn"]["family"],), (300000,))
    run(cmd.AdjustAccount(request_id="2", psn_no=acct, amount_fen=-105000, reason="清退"))
    assert engine.accounts.balance(acct) == 0
    with pytest.raises(YidiError) as err:
        engine.decide(cmd.AdjustAccount(request_id="3", psn_no=acct, amount_fen=-1, reason="清退"), 99)
    assert err.value.reason == "ACCOUNT_INSUFFICIENT" and "余额 0 分" in err.value.message
    for amount, reason in ((0, "年度划入"), (10 ** 11, "年度划入"), (5, "")):
        with pytest.raises(YidiError) as err:
            engine.decide(cmd.AdjustAccount(request_id="4", psn_no=acct, amount_fen=amount, reason=reason), 99)
        assert err.value.reason in ("INVALID_AMOUNT", "INVALID_ARGUMENT")
    with pytest.raises(YidiError) as err:
        engine.decide(cmd.AdjustAccount(request_id="5", psn_no="NOBODY", amount_fen=5, reason="x"), 99)
    assert err.value.reason == "PERSON_NOT_FILED"
    assert engine.accounts.balance(acct) == 0


def test_balances_survive_snapshots_and_a_reload_starts_from_the_new_opening_balances(world, tmp_path):
    engine, names = world
    run = Run(engine)
    e6_stay(run, names, acct_used_flag=True, acct_mulaid_flag=True)
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(engine.export_state()), type=EngineState)
    index = Index()
    index.load_dir(names["dir"])
    restored = Engine.restore(index, state)
    assert (restored.accounts.balance(names["psn"]["acct"]), restored.accounts.balance(names["psn"]["family"])) == (0, 91012)
    # A newly loaded data set's balances already include what came before: the changes start afresh.
    restored.apply(events.ReferenceLoaded(data_dir=names["dir"], meta={}), 99)
    assert restored.accounts.balance(names["psn"]["family"]) == 300000 and restored.accounts.changes == {}


def test_load_checks_family_accounts(tmp_path):
    names = write_spec_dataset(tmp_path / "data")
    rows = [dict(p) for p in PERSONS.values()]
    rows[-2]["mulaid_psn_nos"] = ["P999"]
    write_jsonl(f"{names['dir']}/persons.jsonl", rows)
    with pytest.raises(LoadError, match="P999"):
        Index().load_dir(names["dir"])
    rows[-2]["mulaid_psn_nos"] = [rows[-2]["psn_no"]]
    write_jsonl(f"{names['dir']}/persons.jsonl", rows)
    with pytest.raises(LoadError, match="本人"):
        Index().load_dir(names["dir"])
    rows[-2]["mulaid_psn_nos"] = [rows[-1]["psn_no"]]
    rows[-1]["insuplc_admdvs"] = "110100"
    write_jsonl(f"{names['dir']}/persons.jsonl", rows)
    with pytest.raises(LoadError, match="统筹区"):
        Index().load_dir(names["dir"])
    rows[-1]["insuplc_admdvs"] = "210102"
    rows[-1]["acct_balance_fen"] = -1
    write_jsonl(f"{names['dir']}/persons.jsonl", rows)
    with pytest.raises(LoadError, match="acct_balance_fen"):
        Index().load_dir(names["dir"])


def test_a_person_filed_by_rpc_keeps_the_data_sets_account(world):
    engine, names = world
    run = Run(engine)
    row = {k: PERSONS["acct"][k] for k in events.Person.__struct_fields__}
    person = events.Person(**row)
    filing = events.Filing(filing_id="F-NEW", psn_no=row["psn_no"], kind="retired_relocation", dest_admdvs="460000",
                           fixmedins_codes=(), valid_from=20260101, valid_to=0, status="active")
    run(cmd.FilePerson(request_id="file", person=person, filing=filing))
    assert engine.index.account(row["psn_no"]) == (100000, (names["psn"]["family"],))


# ------------------------------------------------------------------ SPEC §10.2 chronic diseases, E7
E7_LINES = (FeeLine("1", TREATMENT_A, "", 60000, 3000), FeeLine("2", DRUG_A, "", 1250, 10000),
            FeeLine("3", DRUG_C, "", 45000, 1000))


def chronic_visit(run: Run, names, who: str, inst: str, code: str, lines=E7_LINES, rid="op"):
    return run(cmd.OutpatientSettle(request_id=rid, person=cmd.PersonId(psn_no=names["psn"][who]),
                                    fixmedins_code=names["inst"][inst], setl_date=DATE, lines=lines,
                                    med_type="chronic", dise_codg=code))


def test_e7_dialysis_under_its_own_entry(world):
    engine, names = world
    run = Run(engine)
    settled = chronic_visit(run, names, "in_service", "hk_l3", "M07803")
    s = settlement_of(settled)
    b = s.breakdown
    assert (b.medfee_sumamt, b.fulamt_ownpay_amt, b.inscp_scp_amt, b.act_pay_dedc, b.pay_ratio_bp, b.hifp_pay,
            b.psn_cash_pay) == (237500, 45000, 192500, 0, 8500, 163625, 73875)
    assert (s.med_type, s.dise_codg) == (14, "M07803")
    psn_no = names["psn"]["in_service"]
    # its own accumulators, apart from general outpatient
    assert engine.settlements.chronic_accumulators(psn_no, 2026) == [("M07803", 0, 163625)]
    assert engine.settlements.accumulators(psn_no, 2026)["outpatient_fund_paid_fen"] == 0
    run(cmd.CancelSettlement(request_id="c", setl_id=s.setl_id, cancel_date=DATE))
    assert engine.settlements.chronic_accumulators(psn_no, 2026) == []


def test_e7_diabetes_under_the_default_entry_with_deductible_used(world):
    engine, names = world
    run = Run(engine)
    # 10000 of M01600's deductible used: an earlier visit whose 10000 in scope all went to the deductible
    first = settlement_of(chronic_visit(run, names, "retired", "hk_l2", "M01600",
                                        (FeeLine("1", DRUG_A, "", 1250, 8000),), rid="first"))
    assert (first.breakdown.act_pay_dedc, first.breakdown.hifp_pay) == (10000, 0)
    b = settlement_of(chronic_visit(run, names, "retired", "hk_l2", "M01600")).breakdown
    assert (b.act_pay_dedc, b.pay_ratio_bp, b.hifp_pay, b.psn_cash_pay) == (20000, 8000, 138000, 99500)
    psn_no = names["psn"]["retired"]
    assert engine.settlements.chronic_accumulators(psn_no, 2026) == [("M01600", 30000, 138000)]
    # general outpatient keeps its own deductible: untouched
    assert engine.settlements.accumulators(psn_no, 2026)["outpatient_deductible_used_fen"] == 0


@pytest.mark.parametrize("who, inst, code, reason, words", [
    ("in_service", "hk_l3", "M01600", "DISEASE_NOT_RECOGNISED", "参保地经办机构办理病种认定"),          # check 10
    ("retired", "hk_l2", "M03900", "INSTITUTION_NOT_ENABLED_FOR_DISEASE", "未开通门诊慢特病「M03900」"),  # check 11
    ("assist", "hk_l2", "M01600", "POLICY_MISSING", "没有生效的门诊慢特病待遇政策"),                     # check 12
    ("unfiled", "hk_l2", "M01600", "PERSON_NOT_FILED", ""),                                            # checks 1-8 first
])
def test_chronic_checks_10_to_12_in_order(world, who, inst, code, reason, words):
    engine, names = world
    before = engine.export_state()
    with pytest.raises(YidiError) as err:
        engine.decide(cmd.OutpatientSettle(request_id="x", person=cmd.PersonId(psn_no=names["psn"][who]),
                                           fixmedins_code=names["inst"][inst], setl_date=DATE, lines=E7_LINES,
                                           med_type="chronic", dise_codg=code), 1)
    assert err.value.reason == reason and words in err.value.message
    assert engine.export_state() == before


def test_chronic_snapshot_and_replay(world):
    engine, names = world
    run = Run(engine)
    chronic_visit(run, names, "in_service", "hk_l3", "M07803")
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(engine.export_state()), type=EngineState)
    index = Index()
    index.load_dir(names["dir"])
    assert Engine.restore(index, state).settlements.chronic == engine.settlements.chronic
    replayed = Engine(Index())
    replayed.index.load_dir(names["dir"])
    for seq, body in enumerate(run.log, 1):
        replayed.apply(events.decode(body), seq)
    assert (replayed.settlements.chronic == engine.settlements.chronic
            == {(names["psn"]["in_service"], 2026, "M07803"): (0, 163625)})


def test_chronic_accumulators_leave_the_collector_nothing_to_walk(world):
    """The collector does not track them (untracked tuples of ints and strs): a list per person and disease would
    be walked by every full collection while the gateway runs, and a tracked tuple would track the dict again at
    each settlement, so every young collection would walk it whole."""
    engine, names = world
    run = Run(engine)
    chronic_visit(run, names, "in_service", "hk_l3", "M07803")
    gc.collect()
    assert engine.settlements.chronic and not gc.is_tracked(engine.settlements.chronic)
    chronic_visit(run, names, "in_service", "hk_l3", "M07803", rid="op-2")   # no collection since
    assert not gc.is_tracked(engine.settlements.chronic)


# ------------------------------------------------------------------ SPEC §10.3 mid-stay settlement, E8
def dated(line: FeeLine, fee_date: int) -> FeeLine:
    return msgspec.structs.replace(line, fee_date=fee_date)


E8_FIRST = (dated(E1_LINES[0], 20260305), dated(E1_LINES[4], 20260308))    # DRUG_A, TREATMENT_A
E8_LATER = (dated(E1_LINES[1], 20260312), dated(E1_LINES[2], 20260314))    # DRUG_B, DRUG_B_CAPPED


def e8_stay(run: Run, names):
    admitted = run(cmd.Admit(request_id="a", person=cmd.PersonId(psn_no=names["psn"]["retired"]),
                             fixmedins_code=names["inst"]["hk_l3"], adm_date=20260301))
    mdtrt_id = admitted.event.visit.mdtrt_id
    run(cmd.UploadFees(request_id="f1", mdtrt_id=mdtrt_id, lines=E8_FIRST + E8_LATER))
    return mdtrt_id


def test_e8_mid_stay_then_final_settlement_share_the_stay_deductible(world):
    engine, names = world
    run = Run(engine)
    mdtrt_id = e8_stay(run, names)
    mid = settlement_of(run(cmd.DischargeSettle(request_id="m", mdtrt_id=mdtrt_id, dscg_date=20260310,
                                                mid_setl_flag=True)))
    b = mid.breakdown
    assert (b.inscp_scp_amt, b.act_pay_dedc, b.hifp_pay, b.psn_cash_pay) == (1225000, 120000, 939250, 285750)
    assert mid.mid_setl_flag and [ln.code for ln in mid.lines] == [DRUG_A, TREATMENT_A]
    assert engine.visits.open[mdtrt_id].status == "admitted"          # the stay stays admitted
    final = settlement_of(run(cmd.DischargeSettle(request_id="s", mdtrt_id=mdtrt_id, dscg_date=20260315)))
    b = final.breakdown
    assert (b.medfee_sumamt, b.overlmt_selfpay, b.preselfpay_amt, b.inscp_scp_amt, b.act_pay_dedc, b.hifp_pay,
            b.psn_cash_pay) == (103800, 23000, 13080, 67720, 0, 57562, 46238)
    acc = engine.settlements.accumulators(names["psn"]["retired"], 2026)
    assert (acc["inpatient_admissions"], acc["crit_base_fen"]) == (1, 295908)   # as E1 in total
    assert mdtrt_id not in engine.visits.open
    for s in (mid, final):   # SPEC §10.7: both parts of the stay explained, the shared deductible included
        x = engine.reads.explanation(s.setl_id)
        assert x["recomputed_equal"] and recompute(x) == recorded(x["breakdown"])
    assert engine.reads.explanation(final.setl_id)["deductible_fen"] == 0


def test_fee_dates_settled_and_only_the_latest_settlement_is_cancelled(world):
    engine, names = world
    run = Run(engine)
    mdtrt_id = e8_stay(run, names)
    mid = settlement_of(run(cmd.DischargeSettle(request_id="m", mdtrt_id=mdtrt_id, dscg_date=20260310,
                                                mid_setl_flag=True)))
    for fee_date in (20260310, 0):     # on the mid date, and undated (= the admission date)
        with pytest.raises(YidiError) as err:
            engine.decide(cmd.UploadFees(request_id="x", mdtrt_id=mdtrt_id,
                                         lines=(FeeLine("9", DRUG_A, "", 100, 1000, fee_date),)), 99)
        assert err.value.reason == "FEE_DATE_SETTLED" and "20260310" in err.value.message
    run(cmd.UploadFees(request_id="f2", mdtrt_id=mdtrt_id, lines=E8_FIRST))   # re-sent as it was: a no-op
    assert run.engine.decide(cmd.UploadFees(request_id="f3", mdtrt_id=mdtrt_id, lines=E8_FIRST), 99).event.lines == ()
    assert set(engine.visits.open[mdtrt_id].lines) == {"2", "3"}
    final = settlement_of(run(cmd.DischargeSettle(request_id="s", mdtrt_id=mdtrt_id, dscg_date=20260315)))
    with pytest.raises(YidiError) as err:
        engine.decide(cmd.CancelSettlement(request_id="c0", setl_id=mid.setl_id, cancel_date=20260320), 99)
    assert err.value.reason == "NOT_LATEST_SETTLEMENT" and final.setl_id not in err.value.message
    before = engine.settlements.accumulators(names["psn"]["retired"], 2026)
    run(cmd.CancelSettlement(request_id="c1", setl_id=final.setl_id, cancel_date=20260320))
    stay = engine.visits.open[mdtrt_id]               # the stay, with its mid settlement, as it was
    assert [m[0] for m in stay.mids] == [mid.setl_id] and set(stay.settled_lines) == {"1", "5"}
    assert set(stay.lines) == {"2", "3"} and before["inpatient_admissions"] == 1
    run(cmd.CancelSettlement(request_id="c2", setl_id=mid.setl_id, cancel_date=20260320))
    assert set(stay.lines) == {"1", "2", "3", "5"} and not stay.mids and stay.stay_deductible_fen == -1
    assert engine.settlements.accumulators(names["psn"]["retired"], 2026)["inpatient_admissions"] == 0
    # settled again at once, as E1
    again = settlement_of(run(cmd.DischargeSettle(request_id="s2", mdtrt_id=mdtrt_id, dscg_date=20260315)))
    assert (again.breakdown.act_pay_dedc, again.breakdown.inscp_scp_amt) == (120000, 1292720)
    # and replay rebuilds the same stay history
    replayed = Engine(Index())
    replayed.index.load_dir(names["dir"])
    for seq, body in enumerate(run.log, 1):
        replayed.apply(events.decode(body), seq)
    retired = names["psn"]["retired"]
    assert replayed.settlements.accumulators(retired, 2026) == engine.settlements.accumulators(retired, 2026)


# ------------------------------------------------------------------ SPEC §10.4 refund lines, E9
def refund(sn: str, of: FeeLine, qty_milli: int) -> FeeLine:
    return FeeLine(sn, of.code, "", of.unit_price_fen, qty_milli, 0, of.feedetl_sn)


def test_e9_refunds_net_the_original_lines(world):
    engine, names = world
    run = Run(engine)
    admitted = run(cmd.Admit(request_id="a", person=cmd.PersonId(psn_no=names["psn"]["in_service"]),
                             fixmedins_code=names["inst"]["hk_l1"], adm_date=20260310))
    mdtrt_id = admitted.event.visit.mdtrt_id
    xa, xb = FeeLine("1", DRUG_A, "", 1250, 20000), FeeLine("2", DRUG_B, "", 8800, 3500)
    run(cmd.UploadFees(request_id="f1", mdtrt_id=mdtrt_id, lines=(xa, xb)))
    visit = run(cmd.UploadFees(request_id="f2", mdtrt_id=mdtrt_id,
                               lines=(refund("3", xa, -5000), refund("4", xb, -3500)))).result
    assert (visit.line_count, visit.medfee_sumamt) == (4, 18750)
    s = settlement_of(run(cmd.DischargeSettle(request_id="s", mdtrt_id=mdtrt_id, dscg_date=DATE)))
    assert (s.breakdown.medfee_sumamt, s.breakdown.inscp_scp_amt) == (18750, 18750)
    assert [(ln.code, ln.det_item_fee_sumamt) for ln in s.lines] == [(DRUG_A, 18750)]   # DRUG_B refunded to 0
    # a refund of a settled line, after the settlement was cancelled and the stay opened again, is fine again
    run(cmd.CancelSettlement(request_id="c", setl_id=s.setl_id, cancel_date=DATE))
    assert set(engine.visits.open[mdtrt_id].lines) == {"1", "2", "3", "4"}


@pytest.mark.parametrize("lines, reason", [
    ((refund("3", FeeLine("1", DRUG_A, "", 1250, 20000), -20001),), "REFUND_EXCEEDS_ORIGINAL"),
    ((refund("3", FeeLine("1", DRUG_A, "", 1250, 20000), -15000),
      refund("4", FeeLine("1", DRUG_A, "", 1250, 20000), -5001)), "REFUND_EXCEEDS_ORIGINAL"),
    ((refund("3", FeeLine("9", DRUG_A, "", 1250, 20000), -1000),), "FEE_LINE_NOT_FOUND"),
    ((refund("3", FeeLine("1", DRUG_A, "", 1300, 20000), -1000),), "INVALID_ARGUMENT"),    # not the same price
    ((FeeLine("3", DRUG_A, "", 1250, 1000, 0, "1"),), "INVALID_QUANTITY"),                # a refund is negative
    ((FeeLine("3", DRUG_A, "", 1250, -1000),), "INVALID_QUANTITY"),                       # only a refund is
])
def test_refunds_refused(world, lines, reason):
    engine, names = world
    run = Run(engine)
    admitted = run(cmd.Admit(request_id="a", person=cmd.PersonId(psn_no=names["psn"]["in_service"]),
                             fixmedins_code=names["inst"]["hk_l1"], adm_date=20260310))
    mdtrt_id = admitted.event.visit.mdtrt_id
    run(cmd.UploadFees(request_id="f1", mdtrt_id=mdtrt_id, lines=(FeeLine("1", DRUG_A, "", 1250, 20000),)))
    before = engine.export_state()
    with pytest.raises(YidiError) as err:
        engine.decide(cmd.UploadFees(request_id="f2", mdtrt_id=mdtrt_id, lines=lines), 99)
    assert err.value.reason == reason and engine.export_state() == before


def test_a_settled_line_cannot_be_refunded_or_withdrawn(world):
    engine, names = world
    run = Run(engine)
    mdtrt_id = e8_stay(run, names)
    run(cmd.DischargeSettle(request_id="m", mdtrt_id=mdtrt_id, dscg_date=20260310, mid_setl_flag=True))
    for command in (cmd.UploadFees(request_id="r", mdtrt_id=mdtrt_id,
                                   lines=(dated(refund("9", E8_FIRST[0], -1000), 20260316),)),
                    cmd.WithdrawFees(request_id="w", mdtrt_id=mdtrt_id, sns=("1",))):
        with pytest.raises(YidiError) as err:
            engine.decide(command, 99)
        assert err.value.reason == "LINE_ALREADY_SETTLED" and "1" in err.value.message


def test_outpatient_refund_lines_in_one_request(world):
    engine, names = world
    run = Run(engine)
    xa = FeeLine("1", DRUG_A, "", 1250, 6000)
    s = settlement_of(run(cmd.OutpatientSettle(
        request_id="o", person=cmd.PersonId(psn_no=names["psn"]["in_service"]), fixmedins_code=names["inst"]["hk_l1"],
        setl_date=DATE, lines=(xa, FeeLine("2", DRUG_B, "", 8800, 1500), refund("3", xa, -1000)))))
    assert s.breakdown.medfee_sumamt == 1250 * 5 + 8800 * 3 // 2


# ------------------------------------------------------------------ SPEC §10.5 credentials
from datagen.spec_fixture import VOUCHER_KEYS  # noqa: E402
from datagen.voucher import token  # noqa: E402

KEY = bytes.fromhex(VOUCHER_KEYS["210000"])
NOW = 202603151030


def by_voucher(names, tok: str, **person) -> cmd.OutpatientSettle:
    return cmd.OutpatientSettle(request_id="v", person=cmd.PersonId(**person), fixmedins_code=names["inst"]["hk_l1"],
                                setl_date=DATE, lines=(FeeLine("1", DRUG_A, "", 1250, 6000),),
                                credential=cmd.Credential("01", tok, NOW))


def test_an_electronic_voucher_names_the_patient(world):
    engine, names = world
    psn_no = names["psn"]["in_service"]
    decision = engine.decide(by_voucher(names, token(KEY, psn_no, NOW + 5)), 1)
    assert decision.event.settlement.psn_no == psn_no
    assert engine.decide(by_voucher(names, token(KEY, psn_no, NOW), psn_no=psn_no), 1)   # valid to its minute


@pytest.mark.parametrize("make", [
    lambda p: token(KEY, p, NOW - 1),                                    # expired
    lambda p: token(b"another key of sixteen+", p, NOW + 5),              # not the insured province's key
    lambda p: token(KEY, p, NOW + 5)[:-1] + "0",                          # a wrong mac
    lambda p: token(KEY, p, NOW + 5).replace(p, "P210102000002"),         # another person's number, same mac
    lambda p: f"{p}.{NOW + 5}",                                           # no mac
    lambda p: "",
])
def test_a_bad_voucher_is_credential_invalid_and_says_nothing_of_it(world, make):
    engine, names = world
    tok = make(names["psn"]["in_service"])
    with pytest.raises(YidiError) as err:
        engine.decide(by_voucher(names, tok), 1)
    assert err.value.reason == "CREDENTIAL_INVALID" and (not tok or tok not in err.value.message)
    assert KEY.hex() not in err.value.message


def test_credential_types_02_and_03_need_their_fields(world):
    engine, names = world
    psn_no = names["psn"]["in_service"]
    with pytest.raises(YidiError) as err:   # a voucher for one person, a psn_no of another
        engine.decide(by_voucher(names, token(KEY, psn_no, NOW + 5), psn_no=names["psn"]["retired"]), 1)
    assert err.value.reason == "CREDENTIAL_INVALID"
    base = by_voucher(names, "")
    for credential, person, card, reason in (
            (cmd.Credential("02"), cmd.PersonId(psn_no=psn_no), None, "INVALID_ARGUMENT"),
            (cmd.Credential("03"), cmd.PersonId(psn_no=psn_no), None, "INVALID_ARGUMENT"),
            (cmd.Credential("04"), cmd.PersonId(psn_no=psn_no), None, "INVALID_ENUM")):
        with pytest.raises(YidiError) as err:
            engine.decide(msgspec.structs.replace(base, credential=credential, person=person, card=card), 1)
        assert err.value.reason == reason
    certno = PERSONS["in_service"]["certno"]
    ok = msgspec.structs.replace(base, credential=cmd.Credential("02"), person=cmd.PersonId(certno=certno))
    assert engine.decide(ok, 1).event.settlement.psn_no == psn_no
    card = cmd.Card(PERSONS["in_service"]["card_no"], "3.0")
    ok = msgspec.structs.replace(base, credential=cmd.Credential("03"), person=cmd.PersonId(psn_no=psn_no), card=card)
    assert engine.decide(ok, 1).event.settlement.psn_no == psn_no


def test_keys_are_in_the_image_and_never_in_python_hands(world, tmp_path):
    engine, names = world
    assert engine.index.voucher_provinces() == ["210000"]
    engine.index.save_image(str(tmp_path / "img"), "fp")
    copy = Index()
    copy.load_image(str(tmp_path / "img"), "fp")
    assert copy.verify_voucher(token(KEY, names["psn"]["retired"], NOW), NOW) == names["psn"]["retired"]


# ------------------------------------------------------------------ SPEC §10.6 emergency without a filing
@pytest.mark.parametrize("who, inst", [("unfiled", "hk_l2"),       # known, no filing at all
                                       ("assist", "sy_l3")])       # filed for 海口 only, treated in 三亚
def test_an_emergency_admission_implies_an_emergency_filing(world, who, inst):
    engine, names = world
    run = Run(engine)
    admit = cmd.Admit(request_id="a", person=cmd.PersonId(psn_no=names["psn"][who]),
                      fixmedins_code=names["inst"][inst], adm_date=DATE)
    with pytest.raises(YidiError) as err:
        engine.decide(admit, 1)
    assert err.value.reason in ("PERSON_NOT_FILED", "NOT_FILED_FOR_DESTINATION")
    visit = run(msgspec.structs.replace(admit, emergency=True)).event.visit
    assert (visit.filing_id, visit.filing_kind) == ("EMERGENCY", "emergency")
    run(cmd.UploadFees(request_id="f", mdtrt_id=visit.mdtrt_id, lines=(FeeLine("1", TREATMENT_A, "", 500000, 1000),)))
    s = settlement_of(run(cmd.DischargeSettle(request_id="s", mdtrt_id=visit.mdtrt_id, dscg_date=DATE)))
    assert s.filing_id == "EMERGENCY" and s.filing_kind == 5   # FILING_KIND_EMERGENCY: its reduction (0 here)


def test_an_emergency_of_an_unknown_or_suspended_person_is_still_refused(world):
    engine, names = world
    for psn_no, reason in (("NOBODY", "PERSON_NOT_FILED"), (names["psn"]["suspended"], "INSURANCE_SUSPENDED")):
        with pytest.raises(YidiError) as err:
            engine.decide(cmd.Admit(request_id="a", person=cmd.PersonId(psn_no=psn_no), emergency=True,
                                    fixmedins_code=names["inst"]["hk_l2"], adm_date=DATE), 1)
        assert err.value.reason == reason


# ------------------------------------------------------------------ SPEC §10.7 explanations
def _bp(x: int, b: int) -> int:
    return (x * b + 5000) // 10000


def recompute(x: dict) -> dict:
    """A province's recomputation of a settlement from its explanation alone (SPEC §10.7), in plain Python."""
    parts = dict.fromkeys(("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt",
                           "inscp_scp_amt"), 0)
    for ln in x["lines"]:
        amount = (ln["unit_price_fen"] * ln["qty_milli"] + 500) // 1000
        full = over = pre = 0
        if ln["chrgitm_lv"] in ("", "C"):
            full = amount
        else:
            capped = amount
            if ln["price_cap_fen"] and ln["unit_price_fen"] > ln["price_cap_fen"]:
                capped = (ln["price_cap_fen"] * ln["qty_milli"] + 500) // 1000
                over = amount - capped
            pre = _bp(capped, ln["selfpay_bp"]) if ln["chrgitm_lv"] == "B" else 0
        inscp = amount - full - over - pre
        for key, value in (("medfee_sumamt", amount), ("fulamt_ownpay_amt", full), ("overlmt_selfpay", over),
                           ("preselfpay_amt", pre), ("inscp_scp_amt", inscp)):
            parts[key] += value
    ratio = min(10000, max(0, x["base_ratio_bp"] + x["retired_bonus_bp"] - x["reduction_bp"]))
    inscp = parts["inscp_scp_amt"]
    dedc = min(inscp, x["deductible_fen"])
    layers = {layer["layer"]: layer for layer in x["layers"]}
    hifp = min(_bp(inscp - dedc, ratio), layers["basic"]["room_before_fen"])
    supp = 0
    if "critical_illness" in layers:
        ci = layers["critical_illness"]
        before = ci["cumulative_before_fen"]
        ex_b, ex_a = max(0, before - ci["threshold_fen"]), max(0, before + inscp - hifp - ci["threshold_fen"])
        for tier in ci["tiers"]:
            hi = tier["up_to_fen"] if tier["up_to_fen"] >= 0 else 10 ** 30
            overlap = min(ex_a, hi) - max(ex_b, tier["from_fen"])
            supp += _bp(overlap, tier["ratio_bp"]) if overlap > 0 else 0
        supp = min(supp, ci["room_before_fen"])
    maf = 0
    if "assistance" in layers:
        a = layers["assistance"]
        maf = min(_bp(inscp - hifp - supp, a["ratio_bp"]), a["room_before_fen"])
    fund = hifp + supp + maf
    accounts = sum(fen for _p, fen in x["accounts"])
    return dict(parts, act_pay_dedc=dedc, pay_ratio_bp=ratio, hifp_pay=hifp, supplementary=supp, maf_pay=maf,
                fund_pay_sumamt=fund, psn_cash_pay=parts["medfee_sumamt"] - fund - accounts)


def recorded(b) -> dict:
    keys = ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
            "act_pay_dedc", "pay_ratio_bp", "hifp_pay", "maf_pay", "fund_pay_sumamt", "psn_cash_pay")
    return dict({k: getattr(b, k) for k in keys}, supplementary=b.hifmi_pay + b.hifob_pay)


def test_e1_explained(world):
    engine, names = world
    run = Run(engine)
    _, settled = e6_stay(run, names, acct_used_flag=True, acct_mulaid_flag=True)
    x = engine.reads.explanation(settled.event.settlement.setl_id)
    assert (x["policy_admdvs"], x["insutype"], x["policy_effective_from"], x["catalog_province"]) == (
        "210100", "310", 20260101, "460000")
    assert (x["base_ratio_bp"], x["retired_bonus_bp"], x["reduction_bp"], x["deductible_fen"]) == (8000, 500, 0, 120000)
    assert x["recomputed_equal"] and recompute(x) == recorded(x["breakdown"])
    xb03 = next(ln for ln in x["lines"] if ln["code"] == DRUG_B_CAPPED)
    assert (xb03["chrgitm_lv"], xb03["selfpay_bp"], xb03["price_cap_fen"], xb03["overlmt_selfpay"]) == (
        "B", 2000, 5000, 23000)
    basic, ci = x["layers"]
    assert (basic["base_fen"], basic["ratio_bp"], basic["room_before_fen"], basic["paid_fen"]) == (
        1172720, 8500, 30000000, 996812)
    assert (ci["base_fen"], ci["cumulative_before_fen"], ci["paid_fen"]) == (295908, 0, 0)
    assert x["accumulators_before"][1] == 0 and x["accumulators_after"][1] == 1
    assert x["accounts"] == ((names["psn"]["acct"], 100000), (names["psn"]["family"], 208988))


def test_random_settlements_are_recomputed_from_their_explanation_alone(world):
    import random

    engine, names = world
    run = Run(engine)
    seed = 20261123
    rng = random.Random(seed)
    codes = (DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, TREATMENT_A, NOT_LISTED)
    setl_ids = []
    for n in range(120):
        lines = tuple(FeeLine(str(i + 1), rng.choice(codes), "", rng.randint(0, 3_000_000), rng.randint(1, 20_000))
                      for i in range(rng.randint(1, 6)))
        who = rng.choice(("retired", "assist", "in_service", "acct", "referral"))
        flags = dict(acct_used_flag=rng.random() < 0.5, acct_mulaid_flag=rng.random() < 0.3)
        try:
            if rng.random() < 0.4:
                code = "M07803" if who == "in_service" else "M01600"
                inst = "hk_l3" if who == "in_service" else "hk_l2"
                chronic = dict(med_type="chronic", dise_codg=code) if who in ("in_service", "retired") else {}
                d = run(cmd.OutpatientSettle(request_id=f"o{n}", person=cmd.PersonId(psn_no=names["psn"][who]),
                                             fixmedins_code=names["inst"][inst], setl_date=DATE, lines=lines,
                                             **chronic, **flags))
            else:
                a = run(cmd.Admit(request_id=f"a{n}", person=cmd.PersonId(psn_no=names["psn"][who]),
                                  fixmedins_code=names["inst"]["hk_l1" if who == "referral" else "hk_l2"],
                                  adm_date=20260310))
                run(cmd.UploadFees(request_id=f"f{n}", mdtrt_id=a.event.visit.mdtrt_id, lines=lines))
                d = run(cmd.DischargeSettle(request_id=f"s{n}", mdtrt_id=a.event.visit.mdtrt_id, dscg_date=DATE,
                                            **flags))
        except YidiError:
            continue
        setl_ids.append(d.event.settlement.setl_id)
    assert len(setl_ids) > 60, seed
    for setl_id in setl_ids:
        x = engine.reads.explanation(setl_id)
        assert x["recomputed_equal"], (seed, setl_id)
        assert recompute(x) == recorded(x["breakdown"]), (seed, setl_id)


def test_a_settlement_recorded_without_its_inputs_has_no_explanation(world):
    engine, names = world
    run = Run(engine)
    _, settled = e6_stay(run, names)
    facts = settled.event.settlement
    ref = engine.archive.settlements[facts.setl_id]
    engine.archive.settlements[facts.setl_id] = msgspec.structs.replace(
        ref, facts=msgspec.structs.replace(facts, acc_before=()))
    with pytest.raises(YidiError) as err:
        engine.reads.explanation(facts.setl_id)
    assert err.value.reason == "EXPLANATION_UNAVAILABLE"
