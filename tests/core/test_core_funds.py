"""core/funds.py: the rules, and the books balancing on thousands of generated settlements (SPEC §7, §8).

The long test drives the engine exactly as the gateway does (decide → the
event as the ledger keeps it → apply) through a generated national data set:
outpatient and inpatient settlements across three months, some back-dated
into closed months, cancellations (some after their month closed), prepaid
amounts set and topped up, months closed, reopened and confirmed.  Then it
recomputes everything from the event log alone and compares:

* each month's report totals = the month's settlement records − its cancellations;
* positions = prepaid − drawn + given back, drawn and given back summed from the records;
* every month's net positions sum to exactly 0;
* a closed month's report is what it was when it closed;
* replay, and a snapshot plus the tail, rebuild the same funds state.
"""
from __future__ import annotations

import gc
import random

import msgspec
import pytest

from core import DEBUG, Index, YidiError, events, province_code
from core import commands as cmd
from core.archive import MemoryArchive
from core.engine import Engine, EngineState
from core.funds import (
    MONEY_FIELDS, RISK_FLAGS, SAME_DAY_WINDOW_DAYS, Booking, DetailReconciliation, Funds, Item, Position,
    days_between, flag_names, next_month,
)
from datagen import generate
from datagen.workload import Workload

SEED = 20261
# Debug builds check every person's accumulators and the whole index after each settlement: fewer there.
SETTLEMENTS = 300 if DEBUG else 3000


# ------------------------------------------------------------------ the rules, one by one
def test_booking_month_is_its_own_if_open_else_the_earliest_open_after():
    funds = Funds()
    funds.close(202611)
    funds.close(202612)
    assert funds.booking_month(20261015) == 202610
    assert funds.booking_month(20261130) == 202701   # through two closed months, across the year
    funds.reopen(202612)
    assert funds.booking_month(20261101) == 202612
    assert next_month(202612) == 202701 and next_month(202601) == 202602


def test_warning_levels_and_top_up_demand():
    p = Position("210000", prepaid_fen=1000, drawn_fen=0)
    assert (p.level, p.usage_bp, p.balance_fen) == ("normal", 0, 1000)
    for drawn, level in ((699, "normal"), (700, "yellow"), (899, "yellow"), (900, "red"), (1000, "exhausted"),
                         (1500, "exhausted")):
        p.drawn_fen = drawn
        assert p.level == level, drawn
    assert p.top_up_demand_fen == 500 and p.balance_fen == -500
    p.given_back_fen = 600
    assert (p.used_fen, p.level, p.top_up_demand_fen) == (900, "red", 0)
    assert Position("x", drawn_fen=1).level == "exhausted" and Position("x").level == "normal"


def test_each_warning_line_counts_usage_equal_to_it():
    """SPEC §8: yellow when usage reaches 70%, red when it reaches 90% (达到: equal counts), exhausted at
    100%.  Integer fen in, basis points out: used × 10000 ≥ line × prepaid, no float and no rounding."""
    prepaid = 1_000_000
    for used, usage_bp, level in ((699_900, 6999, "normal"), (699_999, 6999, "normal"), (700_000, 7000, "yellow"),
                                  (899_900, 8999, "yellow"), (899_999, 8999, "yellow"), (900_000, 9000, "red"),
                                  (999_999, 9999, "red"), (1_000_000, 10000, "exhausted")):
        p = Position("210000", prepaid_fen=prepaid, drawn_fen=used)
        assert (p.usage_bp, p.level) == (usage_bp, level), used
    # Lines that fall between two fen (yellow at 1.0002 fen of 3, red at 2.0001): compared exactly.
    levels = [Position("x", prepaid_fen=3, drawn_fen=d, yellow_bp=3334, red_bp=6667).level for d in (0, 1, 2, 3)]
    assert levels == ["normal", "normal", "yellow", "exhausted"]


def test_month_aggregates_leave_the_collector_nothing_to_walk():
    """A month's rows are tuples of ints the collector does not track: a list per institution and month would be
    walked by every full collection while the gateway runs, and a tracked tuple would track the dict again at each
    booking, so every young collection would walk it whole."""
    funds = Funds()
    money = tuple(range(1, len(MONEY_FIELDS) + 1))
    for n in range(200):
        funds.book(Booking("210000", "440000", f"H{n:04d}", money, 0b101), 202611, 1)
    funds.book(Booking("210000", "440000", "H0007", money, 0), 202611, -1)
    gc.collect()
    month = funds.months[202611]
    assert len(month.institutions) == 200 and not any(gc.is_tracked(rows) for rows in (month.pairs, month.institutions))
    h7 = next(i.totals for i in funds.report(202611).institutions if i.fixmedins_code == "H0007")
    assert (h7["settlements"], h7["cancellations"], h7["long_stay"], h7["on_site_check"]) == (1, 1, 1, 1)
    assert h7[MONEY_FIELDS[0]] == 0 and funds.report(202611).totals["settlements"] == 200
    funds.book(Booking("210000", "440000", "H0201", money, 0), 202611, 1)   # no collection since
    assert not any(gc.is_tracked(rows) for rows in (month.pairs, month.institutions))


def test_stay_days_and_flag_names():
    assert days_between(20260301, 20260331) == 30 and days_between(20261231, 20270101) == 1
    assert flag_names(0b1010) == [RISK_FLAGS[1], RISK_FLAGS[3]]


def test_same_day_counts_keep_a_window_of_recent_dates():
    funds = Funds()
    for day in range(1, SAME_DAY_WINDOW_DAYS + 1):
        funds.count_outpatient("P", 20261100 + day, 1)
    assert funds.same_day_count("P", 20261101) == 1
    funds.count_outpatient("P", 20261110, 1)          # a new date pushes the oldest out
    assert funds.same_day_count("P", 20261101) is None and funds.same_day_count("P", 20261110) == 1
    funds.count_outpatient("P", 20261101, 1)          # back-dated past the window: not counted
    assert 20261101 not in funds.same_day
    funds.count_outpatient("P", 20261110, -1)
    assert funds.same_day_count("P", 20261110) == 0


@pytest.mark.parametrize("seed", range(20))
def test_detail_reconciliation_finds_exactly_the_differences_in_any_chunking(seed):
    rng = random.Random(seed)
    platform = {n: (rng.randrange(10**6), rng.random() < 0.1) for n in rng.sample(range(1, 5000), 300)}
    province = dict(platform)
    for n in rng.sample(sorted(province), 30):
        del province[n]
    for n in rng.sample(sorted(province), 20):
        province[n] = (province[n][0] + rng.choice((-1, 1)), province[n][1])
    for n in rng.sample(sorted(province), 10):
        province[n] = (province[n][0], not province[n][1])
    for n in rng.sample(range(5000, 6000), 15):
        province[n] = (1, False)
    merge = DetailReconciliation(max_listed=50)
    items = [Item(n, f"S{n:015d}", *province[n]) for n in sorted(province)]
    rows = [Item(n, f"S{n:015d}", *platform[n]) for n in sorted(platform)]
    while items or not merge.finished:
        k = rng.randrange(0, 40)
        merge.feed_province(items[:k])
        items = items[k:]
        if not items:
            merge.province_done()
        merge.run()
        while merge.needs_platform:
            k = rng.randrange(1, 40)
            merge.feed_platform(rows[:k])
            rows = rows[k:]
            merge.run()
    wrong_amount = {n for n in platform.keys() & province.keys()
                    if platform[n][1] == province[n][1] and platform[n][0] != province[n][0]}
    assert merge.counts == {"missing_on_province": 30, "missing_on_platform": 15, "amount_differs": len(wrong_amount),
                            "state_differs": 10}, seed
    assert len(merge.differences) == 50 and (merge.province_items, merge.platform_items) == (len(province), 300)
    with pytest.raises(YidiError):
        merge.feed_province([Item(1, "S000000000000001", 0, False)])   # not ascending


def test_detail_reconciliation_compares_the_accounts_share_only_when_the_province_sends_it():
    platform = [Item(n, f"S{n:015d}", 1000, False, 300) for n in (1, 2, 3)]
    province = [Item(1, "S000000000000001", 1000, False),          # accounts not sent: not compared
                Item(2, "S000000000000002", 1000, False, 300),     # sent and equal
                Item(3, "S000000000000003", 1000, False, 299)]     # sent and different
    merge = DetailReconciliation()
    merge.feed_province(province)
    merge.province_done()
    merge.feed_platform(platform)
    merge.feed_platform([])
    merge.run()
    assert merge.finished and merge.counts["amount_differs"] == 1
    assert [(d.kind, d.setl_id, d.platform.acct_pay_sumamt, d.province.acct_pay_sumamt) for d in merge.differences] \
        == [("amount_differs", "S000000000000003", 300, 299)]


# ------------------------------------------------------------------ the books balance, at length
@pytest.fixture(scope="module")
def national(tmp_path_factory):
    out = tmp_path_factory.mktemp("funds-national") / "data"
    generate(str(out), persons=4000, seed=SEED)
    index = Index()
    index.load_dir(str(out))
    return str(out), index


def test_the_books_balance_after_thousands_of_generated_settlements(national):
    data_dir, index = national
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    engine = Engine(index)
    workload = Workload(data_dir, seed=SEED, persons=4000)
    log: list[bytes] = []
    snapshot: tuple[int, bytes] | None = None
    closed_reports: dict[int, object] = {}
    live: list[events.SettlementFacts] = []
    n = 0

    def run(command) -> events.Event | None:
        try:
            decision = engine.decide(command, len(log) + 1)
        except YidiError:
            return None
        log.append(events.encode(decision.event))
        engine.apply(events.decode(log[-1]), len(log))
        return decision.event

    def settle(today: int) -> bool:
        nonlocal n
        date = today - rng.choice((0, 0, 0, 0, 1, 3, 9))   # a few are back-dated, some into a closed month
        date = date if date % 100 else today
        case = workload.outpatient() if rng.random() < 0.75 else workload.inpatient()
        if len(case.lines) > 5:
            visit = run(cmd.Admit(request_id=f"a{n}", person=cmd.PersonId(psn_no=case.psn_no),
                                  fixmedins_code=case.fixmedins_code, adm_date=date - rng.choice((2, 5, 40))))
            if visit is None:
                return False
            run(cmd.UploadFees(request_id=f"f{n}", mdtrt_id=visit.key, lines=case.lines))
            settled = run(cmd.DischargeSettle(request_id=f"s{n}", mdtrt_id=visit.key, dscg_date=date))
        else:
            settled = run(cmd.OutpatientSettle(request_id=f"o{n}", person=cmd.PersonId(psn_no=case.psn_no),
                                               fixmedins_code=case.fixmedins_code, setl_date=date, lines=case.lines))
        if settled is not None:
            live.append(settled.settlement)
            n += 1
        return settled is not None

    days = [d for m in (202609, 202610, 202611) for d in range(m * 100 + 1, m * 100 + 29)]
    per_day = SETTLEMENTS // len(days) + 1
    for today in days:
        if today % 100 == 1 and today // 100 > 202609:
            previous = (today // 100) - 1 if today // 100 % 100 != 1 else today // 100 - 89
            run(cmd.ChangeClearingMonth(request_id=f"close{previous}", month=previous, action="close"))
            closed_reports[previous] = engine.funds.report(previous)
        if today == 20261005:   # a month reopened for a correction, closed again, then confirmed
            run(cmd.ChangeClearingMonth(request_id="reopen", month=202609, action="reopen"))
            settle(20260928)
            run(cmd.ChangeClearingMonth(request_id="close-again", month=202609, action="close"))
            closed_reports[202609] = engine.funds.report(202609)
            for province in sorted({p for pair in closed_reports[202609].pairs for p in pair[:2]})[:5]:
                run(cmd.ChangeClearingMonth(request_id=f"confirm{province}", month=202609, action="confirm",
                                            province=province))
        if today == 20261015:
            snapshot = (len(log), msgspec.msgpack.encode(engine.export_state()))
            for province in sorted({province_code(s.insuplc_admdvs) for s in live})[:8]:
                run(cmd.SetPrepaid(request_id=f"pre{province}", province=province,
                                   amount_fen=rng.randrange(1, 10**8), yellow_bp=6000))
                run(cmd.TopUpPrepaid(request_id=f"top{province}", province=province, amount_fen=rng.randrange(1, 10**6)))
        for _ in range(per_day):
            for _attempt in range(5):   # a drawn case may be refused (a filing not valid that day): draw another
                if settle(today):
                    break
            if live and rng.random() < 0.08:
                victim = live.pop(rng.randrange(len(live)))
                run(cmd.CancelSettlement(request_id=f"c{n}-{len(log)}", setl_id=victim.setl_id,
                                         cancel_date=max(today, victim.setl_date)))
    run(cmd.ChangeClearingMonth(request_id="close202611", month=202611, action="close"))
    assert n >= SETTLEMENTS * 0.9, n
    check_books_against_the_log(engine, log)
    for month, at_close in closed_reports.items():
        # A closed month never changes (only provinces' confirmations are added to it).
        assert engine.funds.report(month)._replace(confirmed=[]) == at_close._replace(confirmed=[]), month
    engine.funds.check_invariants()
    # What a restart does: a full replay, and a snapshot plus the tail, give the same funds.
    expected = msgspec.msgpack.encode(engine.funds.export())
    replayed = Engine(fresh(data_dir))
    for seq, body in enumerate(log, 1):
        replayed.apply(events.decode(body), seq)
    assert msgspec.msgpack.encode(replayed.funds.export()) == expected
    taken_at, blob = snapshot
    restored = Engine.restore(fresh(data_dir), msgspec.msgpack.decode(blob, type=EngineState),
                              DurableArchive(replayed.archive))
    for seq, body in enumerate(log[taken_at:], taken_at + 1):
        restored.apply(events.decode(body), seq)
    assert msgspec.msgpack.encode(restored.funds.export()) == expected


class DurableArchive(MemoryArchive):
    """The archive as the store holds it after the whole log (a restart's view): replay records nothing more."""

    def __init__(self, rows: MemoryArchive) -> None:
        super().__init__()
        self.visits, self.settlements, self.problems = dict(rows.visits), dict(rows.settlements), dict(rows.problems)

    def record(self, changes, seq) -> None:
        pass


def fresh(data_dir: str) -> Index:
    index = Index()
    index.load_dir(data_dir)
    return index


def check_books_against_the_log(engine: Engine, log: list[bytes]) -> None:
    """Recompute months and positions from the records alone and compare with what the engine reports."""
    months: dict[int, dict[tuple[str, str], list[int]]] = {}
    prepaid: dict[str, int] = {}
    drawn: dict[str, int] = {}
    given_back: dict[str, int] = {}
    settlements = 0
    for body in log:
        event = events.decode(body)
        if isinstance(event, (events.Settled, events.SettlementCancelled)):
            facts, sign = (event.settlement, 1) if isinstance(event, events.Settled) else (event.settlement, -1)
            insured, treatment = province_code(facts.insuplc_admdvs), province_code(facts.mdtrtarea_admdvs)
            row = months.setdefault(event.clearing_month, {}).setdefault((insured, treatment),
                                                                         [0] * (2 + len(MONEY_FIELDS)))
            row[0 if sign > 0 else 1] += 1
            for i, field in enumerate(MONEY_FIELDS, 2):
                row[i] += sign * getattr(facts.breakdown, field)
            totals = drawn if sign > 0 else given_back
            totals[insured] = totals.get(insured, 0) + facts.breakdown.fund_pay_sumamt
            settlements += sign > 0
        elif isinstance(event, events.PrepaidSet):
            prepaid[event.province] = event.amount_fen
        elif isinstance(event, events.PrepaidToppedUp):
            prepaid[event.province] += event.amount_fen
    assert settlements >= SETTLEMENTS * 0.9 and len(months) >= 3
    for month, pairs in months.items():
        report = engine.funds.report(month)
        got = {(p.insured, p.treatment): [p.totals[k] for k in ("settlements", "cancellations", *MONEY_FIELDS)]
               for p in report.pairs}
        assert got == pairs, month
        assert sum(net.net_fen for net in report.nets) == 0
        assert [report.totals[k] for k in MONEY_FIELDS] == [sum(r[i] for r in pairs.values())
                                                            for i in range(2, 2 + len(MONEY_FIELDS))]
    for province in drawn.keys() | prepaid.keys():
        p = engine.funds.position(province)
        assert (p.prepaid_fen, p.drawn_fen, p.given_back_fen) == (
            prepaid.get(province, 0), drawn.get(province, 0), given_back.get(province, 0)), province
        assert p.balance_fen == prepaid.get(province, 0) - drawn.get(province, 0) + given_back.get(province, 0)
