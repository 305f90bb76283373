"""Money conservation and replay, on random visit lifecycles (SPEC §5.5, §6).

Random sequences of admissions, fee uploads and withdrawals, settlements,
cancellations and outpatient visits run through the engine exactly as the
gateway runs them (decide → apply, events kept as the ledger would keep
them).  After every step:

* each person's accumulators equal the sum of the deltas of their live
  (not cancelled) settlements, per year;
* every settlement's parts add up: fund + cash = total, all ≥ 0;
* refusals change nothing.

At the end, replaying the event log into a fresh engine gives the same
accumulators, visits and settlements (what a restart does).
"""
from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from core import ACCUMULATOR_KEYS, Index, YidiError
from core.engine import SETTLED, Engine
from datagen.spec_fixture import write_spec_dataset

PERSONS = ("retired", "assist", "in_service")
CODES = ("XA01", "XB02", "XB03", "XC04", "T001", "ZZ99")

fee_line = st.tuples(st.sampled_from(CODES), st.integers(0, 3_000_000), st.integers(1, 20_000))
step = st.one_of(
    st.tuples(st.just("admit"), st.sampled_from(PERSONS), st.sampled_from(("hk_l1", "hk_l2", "hk_l3"))),
    st.tuples(st.just("fees"), st.integers(0, 7), st.lists(fee_line, min_size=1, max_size=4)),
    st.tuples(st.just("withdraw"), st.integers(0, 7), st.integers(0, 3)),
    st.tuples(st.just("settle"), st.integers(0, 7), st.sampled_from((20260315, 20260901, 20270110))),
    st.tuples(st.just("cancel"), st.integers(0, 7), st.just(None)),
    st.tuples(st.just("outpatient"), st.sampled_from(PERSONS), st.lists(fee_line, min_size=1, max_size=3)),
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_spec_dataset(tmp_path_factory.mktemp("prop") / "data")


def hypothesis_event(label: str) -> None:
    event(label)  # shown by --hypothesis-show-statistics: the steps really happen


def fresh_engine(names) -> Engine:
    index = Index()
    index.load_dir(names["dir"])
    return Engine(index)


def snapshot(engine: Engine, psn_nos) -> dict:
    acc = {(p, y): engine.index.accumulators(p, y) for p in psn_nos for y in (2026, 2027)}
    visits = {k: (v.status, v.setl_id, dict(v.lines)) for k, v in engine.visits.items()}
    setls = {k: (s.status, s.deltas) for k, s in engine.settlements.items()}
    return {"acc": acc, "visits": visits, "settlements": setls, "open": copy.deepcopy(engine.open_inpatient)}


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=40))
def test_accumulators_are_the_sum_of_live_settlements_and_replay_rebuilds_them(data_dir, steps):
    names = data_dir
    engine = fresh_engine(names)
    psn = {name: names["psn"][name] for name in PERSONS}
    log: list[bytes] = []
    sn = 0

    def run(decide, *args):
        before = snapshot(engine, psn.values())
        try:
            event = decide(*args)
        except YidiError as err:
            hypothesis_event("refused " + err.reason)
            assert snapshot(engine, psn.values()) == before, "a refusal changed state"
            return None
        log.append(orjson.dumps(event))
        engine.apply(orjson.loads(log[-1]))
        hypothesis_event(event["type"])  # exactly what the ledger hands back on replay
        return event

    for kind, a, b in steps:
        visits = [v for v in engine.visits.values() if v.visit_kind == "inpatient"]
        if kind == "admit":
            run(engine.decide_admit, psn[a], names["inst"][b], 20260310)
        elif kind == "outpatient":
            lines = [(str(sn + i), c, "", p, q, 0) for i, (c, p, q) in enumerate(b)]
            sn += len(b)
            run(engine.decide_outpatient_settle, psn[a], names["inst"]["hk_l1"], 20260320, lines)
        elif not visits:
            continue
        elif kind == "fees":
            lines = [(str(sn + i), c, "", p, q, 0) for i, (c, p, q) in enumerate(b)]
            sn += len(b)
            run(engine.decide_upload_fees, visits[a % len(visits)].mdtrt_id, lines)
        elif kind == "withdraw":
            visit = visits[a % len(visits)]
            run(engine.decide_withdraw_fees, visit.mdtrt_id, list(visit.lines)[:b])
        elif kind == "settle":
            run(engine.decide_discharge_settle, visits[a % len(visits)].mdtrt_id, b)
        elif kind == "cancel" and engine.settlements:
            setl_ids = sorted(engine.settlements)
            ref = engine.settlements[setl_ids[a % len(setl_ids)]]
            run(engine.decide_cancel_settlement, ref.setl_id, 20270201)
        check_conservation(engine, psn.values(), log)

    replayed = fresh_engine(names)
    for body in log:
        replayed.apply(orjson.loads(body))
    assert snapshot(replayed, psn.values()) == snapshot(engine, psn.values())


def check_conservation(engine: Engine, psn_nos, log) -> None:
    expected = {(p, y): dict.fromkeys(ACCUMULATOR_KEYS, 0) for p in psn_nos for y in (2026, 2027)}
    for body in log:
        event = orjson.loads(body)
        if event["type"] != "settled":
            continue
        s = event["settlement"]
        b = s["breakdown"]
        assert b["fund_pay_sumamt"] + b["psn_cash_pay"] == b["medfee_sumamt"]
        assert b["fund_pay_sumamt"] == b["hifp_pay"] + b["hifmi_pay"] + b["hifob_pay"] + b["maf_pay"]
        assert min(b.values()) >= 0
        if engine.settlements[s["setl_id"]].status == SETTLED:
            for key, delta in s["deltas"].items():
                expected[(s["psn_no"], s["year"])][key] += delta
    for (p, y), acc in expected.items():
        assert engine.index.accumulators(p, y) == acc, (p, y)
