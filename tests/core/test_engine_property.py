"""Money conservation, replay and snapshots, on random visit lifecycles (SPEC §5.5, §6).

Random sequences of admissions, fee uploads and withdrawals, settlements,
cancellations and outpatient visits run through the engine exactly as the
gateway runs them (decide → encode the event as the ledger keeps it → decode →
apply).  After every step:

* each person's accumulators equal the sum of the deltas of their live
  (not cancelled) settlements, per year;
* every settlement's parts add up: fund + cash = total, all ≥ 0;
* refusals change nothing.

At the end, replaying the event log into a fresh engine gives the same
accumulators, visits and settlements (what a restart does), and so does
restoring a snapshot taken at a random point and replaying only the tail.
"""
from __future__ import annotations

import copy

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from core import ACCUMULATOR_KEYS, Index, YidiError, events
from core import commands as cmd
from core.archive import MemoryArchive
from core.engine import Engine, EngineState
from core.visits import SETTLED
from core.events import FeeLine
from datagen.spec_fixture import write_spec_dataset
from builders import DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, NOT_LISTED, TREATMENT_A

PERSONS = ("retired", "assist", "in_service", "acct")   # "acct" has a personal and a family account
ACCOUNTS = ("acct", "family")
CODES = (DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, TREATMENT_A, NOT_LISTED)

fee_line = st.tuples(st.sampled_from(CODES), st.integers(0, 3_000_000), st.integers(1, 20_000))
step = st.one_of(
    st.tuples(st.just("admit"), st.sampled_from(PERSONS), st.sampled_from(("hk_l1", "hk_l2", "hk_l3"))),
    st.tuples(st.just("fees"), st.integers(0, 7), st.lists(fee_line, min_size=1, max_size=4)),
    st.tuples(st.just("withdraw"), st.integers(0, 7), st.integers(0, 3)),
    st.tuples(st.just("settle"), st.integers(0, 7), st.sampled_from((20260315, 20260901, 20270110))),
    st.tuples(st.just("cancel"), st.integers(0, 7), st.just(None)),
    st.tuples(st.just("outpatient"), st.sampled_from(PERSONS), st.lists(fee_line, min_size=1, max_size=3)),
    st.tuples(st.just("adjust"), st.sampled_from(ACCOUNTS), st.integers(-400_000, 400_000)),
    st.tuples(st.just("refund"), st.integers(0, 7), st.integers(1, 20_000)),   # SPEC §10.4
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_spec_dataset(tmp_path_factory.mktemp("prop") / "data")


def hypothesis_event(label: str) -> None:
    event(label)  # shown by --hypothesis-show-statistics: the steps really happen


def fresh_index(names) -> Index:
    index = Index()
    index.load_dir(names["dir"])
    return index


class DurableArchive(MemoryArchive):
    """The archive as the store holds it after the whole log: replay records nothing more (StoreArchive)."""

    def __init__(self, rows: MemoryArchive) -> None:
        super().__init__()
        self.visits, self.settlements = dict(rows.visits), dict(rows.settlements)

    def record(self, changes, seq) -> None:
        pass


def state_of(engine: Engine, psn_nos) -> dict:
    acc = {(p, y): engine.index.accumulators(p, y) for p in psn_nos for y in (2026, 2027)}
    acc["balances"] = {p: engine.accounts.balance(p) for p in sorted(psn_nos)}
    visits = {k: (v.status, v.setl_id, dict(v.lines), list(v.mids), v.stay_deductible_fen, dict(v.settled_lines))
              for k, v in engine.visits.open.items()}
    archive = (dict(engine.archive.visits), dict(engine.archive.settlements))
    return {"acc": acc, "visits": visits, "archive": archive, "open": copy.deepcopy(engine.visits.open_inpatient)}


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=40), st.integers(0, 40))
def test_accumulators_are_the_sum_of_live_settlements_and_replay_rebuilds_them(data_dir, steps, snap_at):
    names = data_dir
    engine = Engine(fresh_index(names))
    psn = {name: names["psn"][name] for name in PERSONS + ACCOUNTS}
    log: list[bytes] = []
    snapshot: tuple[int, bytes] | None = None
    sn = 0

    def run(command):
        before = state_of(engine, psn.values())
        try:
            decision = engine.decide(command, len(log) + 1)
        except YidiError as err:
            hypothesis_event("refused " + err.reason)
            assert state_of(engine, psn.values()) == before, "a refusal changed state"
            return
        log.append(events.encode(decision.event))
        engine.apply(events.decode(log[-1]), len(log))  # exactly what the ledger hands back on replay
        hypothesis_event(decision.event.kind)

    def lines_of(spec) -> tuple[FeeLine, ...]:
        nonlocal sn
        sn += len(spec)
        return tuple(FeeLine(str(sn - len(spec) + i), c, "", p, q, 20260310 + (sn - len(spec) + i) % 10)
                     for i, (c, p, q) in enumerate(spec))

    for n, (kind, a, b) in enumerate(steps):
        if n == snap_at:
            snapshot = (len(log), msgspec.msgpack.encode(engine.export_state()))
        visits = [v for v in engine.visits.open.values() if v.facts.visit_kind == "inpatient"]
        rid = f"r{n}"
        if kind == "admit":
            run(cmd.Admit(request_id=rid, person=cmd.PersonId(psn_no=psn[a]), fixmedins_code=names["inst"][b],
                          adm_date=20260310))
        elif kind == "outpatient":
            run(cmd.OutpatientSettle(request_id=rid, person=cmd.PersonId(psn_no=psn[a]),
                                     fixmedins_code=names["inst"]["hk_l1"], setl_date=20260320, lines=lines_of(b),
                                     acct_used_flag=n % 3 != 0, acct_mulaid_flag=n % 2 == 0))
        elif kind == "adjust":
            run(cmd.AdjustAccount(request_id=rid, psn_no=psn[a], amount_fen=b, reason="年度划入"))
        elif not visits:
            continue
        elif kind == "fees":
            run(cmd.UploadFees(request_id=rid, mdtrt_id=visits[a % len(visits)].mdtrt_id, lines=lines_of(b)))
        elif kind == "refund":
            visit = visits[a % len(visits)]
            originals = [ln for ln in visit.lines.values() if not ln.init_feedetl_sn]
            if originals:
                original = originals[b % len(originals)]
                sn += 1
                run(cmd.UploadFees(request_id=rid, mdtrt_id=visit.mdtrt_id, lines=(FeeLine(
                    f"r{sn}", original.code, "", original.unit_price_fen, -b, original.fee_date,
                    original.feedetl_sn),)))
        elif kind == "withdraw":
            visit = visits[a % len(visits)]
            run(cmd.WithdrawFees(request_id=rid, mdtrt_id=visit.mdtrt_id, sns=tuple(list(visit.lines)[:b])))
        elif kind == "settle":
            run(cmd.DischargeSettle(request_id=rid, mdtrt_id=visits[a % len(visits)].mdtrt_id, dscg_date=b,
                                    acct_used_flag=n % 3 != 0, acct_mulaid_flag=n % 2 == 0,
                                    mid_setl_flag=n % 4 == 1))   # SPEC §10.3 mid-stay settlements
        elif kind == "cancel" and engine.archive.settlements:
            setl_ids = sorted(engine.archive.settlements)
            run(cmd.CancelSettlement(request_id=rid, setl_id=setl_ids[a % len(setl_ids)], cancel_date=20270201))
        check_conservation(engine, psn.values(), log)

    expected = state_of(engine, psn.values())
    replayed = Engine(fresh_index(names))
    for seq, body in enumerate(log, 1):
        replayed.apply(events.decode(body), seq)
    assert state_of(replayed, psn.values()) == expected
    # A restart from a snapshot plus the tail of the log gives the same state as a full replay.
    if snapshot is not None:
        taken_at, blob = snapshot
        restored = Engine.restore(fresh_index(names), msgspec.msgpack.decode(blob, type=EngineState),
                                  DurableArchive(engine.archive))
        for seq, body in enumerate(log[taken_at:], taken_at + 1):
            restored.apply(events.decode(body), seq)
        assert state_of(restored, psn.values()) == expected


def check_conservation(engine: Engine, psn_nos, log) -> None:
    expected = {(p, y): dict.fromkeys(ACCUMULATOR_KEYS, 0) for p in psn_nos for y in (2026, 2027)}
    balances = {p: engine.index.account(p)[0] for p in psn_nos}   # opening balances (SPEC §10.1)
    for body in log:
        settled = events.decode(body)
        if isinstance(settled, events.AccountAdjusted):
            balances[settled.psn_no] += settled.amount_fen
        if not isinstance(settled, events.Settled):
            continue
        s = settled.settlement
        b = msgspec.structs.asdict(s.breakdown)
        assert b["fund_pay_sumamt"] + b["acct_pay"] + b["acct_mulaid_pay"] + b["psn_cash_pay"] == b["medfee_sumamt"]
        assert b["acct_pay"] + b["acct_mulaid_pay"] <= b["inscp_scp_amt"] + b["preselfpay_amt"] - b["fund_pay_sumamt"]
        assert sum(fen for _, fen in s.acct_draws) == b["acct_pay"] + b["acct_mulaid_pay"]
        assert b["fund_pay_sumamt"] == b["hifp_pay"] + b["hifmi_pay"] + b["hifob_pay"] + b["maf_pay"]
        assert min(b.values()) >= 0
        if engine.archive.settlements[s.setl_id].status == SETTLED:
            for key, delta in s.deltas_dict().items():
                expected[(s.psn_no, s.year)][key] += delta
            for p, fen in s.acct_draws:
                balances[p] -= fen
    assert {p: engine.accounts.balance(p) for p in psn_nos} == balances
    assert min(balances.values()) >= 0
    for (p, y), acc in expected.items():
        assert engine.index.accumulators(p, y) == acc, (p, y)
    engine.check_invariants(engine.archive.settlements.values())  # the engine's own debug invariant agrees
