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
from core.archive import MemoryArchive
from core.engine import Engine, EngineState
from core.visits import SETTLED
from datagen.spec_fixture import write_spec_dataset
from settle_traffic import Traffic, step


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
    traffic = Traffic(names)
    psn = traffic.psn
    log: list[bytes] = []
    snapshot: tuple[int, bytes] | None = None

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

    for n, (kind, a, b) in enumerate(steps):
        if n == snap_at:
            snapshot = (len(log), msgspec.msgpack.encode(engine.export_state()))
        command = traffic.command(engine, n, kind, a, b)
        if command is not None:
            run(command)
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
