"""Core benchmarks on the national data set, over thousands of distinct persons (not one hot person).

Run by ``make bench`` (numbers) and in the default test run with
``--benchmark-disable`` (each body once: a smoke test that fails only on
errors).  The data set is ``$YIDI_BENCH_DATA``, else ``data/national`` if it
was generated (``make data``: 1.8M persons), else a 20,000-person set
generated here.

The index is the gateway's (``load_index``), its move into huge pages then
finished (``huge_pages_mib`` in huge pages, ``huge_pages_finish_s`` to finish
the move after the gateway's start-up budget, beside the eligibility figures):
what a gateway that has run a while holds, not whatever share of the move its
start-up budget reached on a busy machine.  The cases are drawn from persons
spread over the whole data set (``Workload(every=...)``).  Each round runs the
operation over ``N_CASES`` cases; ``extra_info["per_call_us"]`` is the round's
time divided by ``N_CASES`` (bench/report.py reads the median round), and
``cpu_per_call_us`` the same in the thread's CPU time (time the process waited
for a core on a shared machine left out).  Eligibility's rounds each take
cases not seen before (``fresh``): with the same 5,000 cases every round, the
rounds after the first find their persons in the cache, which a peak day's
stream of persons does not.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from types import SimpleNamespace

import pytest

from core import Index
from core.errors import YidiError
from datagen import generate
from datagen.workload import DATE, Workload
from gateway.transport import convert
from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_CASES = 5000
ROUNDS = 15
WORKLOAD_PERSONS = 200_000
HUGE_PAGE_FINISH_S = 60.0


@pytest.fixture(scope="module")
def national(tmp_path_factory):
    data_dir = os.environ.get("YIDI_BENCH_DATA") or os.path.join(ROOT, "data", "national")
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        data_dir = str(tmp_path_factory.mktemp("national"))
        generate(data_dir, persons=20_000, seed=2026)
    from gateway.app import load_index
    from gateway.config import Config

    index = load_index(Config(data_dir=data_dir), data_dir)
    begin = time.monotonic()
    moved = index.use_huge_pages(HUGE_PAGE_FINISH_S)
    huge = {"huge_pages_mib": round(moved / 2**20), "huge_pages_finish_s": round(time.monotonic() - begin, 2)}
    with open(os.path.join(data_dir, "manifest.json")) as f:
        every = max(1, json.load(f)["persons"] // WORKLOAD_PERSONS)
    return SimpleNamespace(index=index, workload=Workload(data_dir, seed=11, persons=WORKLOAD_PERSONS, every=every),
                           huge=huge)


def per_call(benchmark, fn, cases, fresh: bool = False) -> None:
    """``fresh``: ``cases`` holds a run of N_CASES for each round (the warm-up's too), each round takes the next."""
    batches = iter([cases[i:i + N_CASES] for i in range(0, len(cases), N_CASES)] if fresh else [cases] * (ROUNDS + 1))
    cpu_s = []

    def run(batch):
        begin = time.thread_time()
        for case in batch:
            fn(case)
        cpu_s.append(time.thread_time() - begin)
    benchmark.pedantic(run, setup=lambda: ((next(batches),), {}), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:
        n = N_CASES if fresh else len(cases)
        benchmark.extra_info["per_call_us"] = benchmark.stats.stats.median / n * 1e6
        benchmark.extra_info["cpu_per_call_us"] = statistics.median(cpu_s[1:]) / n * 1e6


def _eligibility(index: Index, case, inpatient: bool):
    try:
        return index.eligibility(case.psn_no, case.fixmedins_code, inpatient, DATE)
    except YidiError:
        return None


def _fresh_cases(workload) -> list:
    return [workload.outpatient() for _ in range(N_CASES * (ROUNDS + 1))]


def test_eligibility_distinct_persons(benchmark, national):
    index, cases = national.index, _fresh_cases(national.workload)
    assert sum(_eligibility(index, c, False) is not None for c in cases) > len(cases) * 0.95
    per_call(benchmark, lambda c: index.eligibility(c.psn_no, c.fixmedins_code, False, DATE), cases, fresh=True)


def test_admission_distinct_persons(benchmark, national):
    """The same checks with the compact answer the settle path uses (no dict, strings only on demand)."""
    index, cases = national.index, _fresh_cases(national.workload)
    per_call(benchmark, lambda c: index.admission(c.psn_no, c.fixmedins_code, False, DATE), cases, fresh=True)
    benchmark.extra_info.update(national.huge)


def _benefit_cases(index, workload, draw, inpatient: bool):
    out = []
    while len(out) < N_CASES:
        case = draw()
        elig = _eligibility(index, case, inpatient)
        if elig is not None:
            lines = [(x.code, x.unit_price_fen, x.qty_milli) for x in case.lines]
            out.append((case.psn_no, case.fixmedins_code, elig["filing_kind"], lines))
    return out


def test_benefit_inpatient_20_lines(benchmark, national):
    index, workload = national.index, national.workload
    cases = _benefit_cases(index, workload, workload.inpatient, True)
    assert all(len(c[3]) == 20 for c in cases)
    per_call(benchmark, lambda c: index.benefit(c[0], c[1], c[2], True, DATE, c[3]), cases)


def test_bill_inpatient_20_lines(benchmark, national):
    """The same computation as a compact Bill (what the settle path uses), its lines as events.FeeLine."""
    index, workload = national.index, national.workload
    cases = []
    while len(cases) < N_CASES:
        case = workload.inpatient()
        elig = _eligibility(index, case, True)
        if elig is not None:
            cases.append((case.psn_no, case.fixmedins_code, elig["filing_kind"], case.lines))
    per_call(benchmark, lambda c: index.bill(c[0], c[1], c[2], True, DATE, c[3]), cases)


def test_benefit_outpatient_3_lines(benchmark, national):
    index, workload = national.index, national.workload
    cases = [c for c in _benefit_cases(index, workload, workload.outpatient, False) if len(c[3]) == 3][:1000]
    per_call(benchmark, lambda c: index.benefit(c[0], c[1], c[2], False, DATE, c[3]), cases)


def test_decode_settle_request_from_wire_bytes(benchmark, national):
    """Request bytes → the typed command the engine takes (upb parse + translation)."""
    workload = national.workload
    raws = []
    for n in range(N_CASES):
        case = workload.outpatient()
        raws.append(spb.OutpatientSettleRequest(
            request_id=f"r{n}", psn_no=case.psn_no, fixmedins_code=case.fixmedins_code, setl_date=DATE,
            lines=[pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen,
                              qty_milli=x.qty_milli) for x in case.lines]).SerializeToString())
    command = convert.outpatient_command(spb.OutpatientSettleRequest.FromString(raws[0]))
    assert command.lines and command.person.psn_no
    per_call(benchmark, lambda raw: convert.outpatient_command(spb.OutpatientSettleRequest.FromString(raw)), raws)
