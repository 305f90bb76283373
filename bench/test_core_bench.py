"""Core micro-benchmarks: eligibility check and the benefit of a 20-line inpatient bill.

Run ``pytest bench --benchmark-only`` for numbers, or ``pytest bench
--benchmark-disable`` as a smoke test (each benchmark body runs once).
"""
from __future__ import annotations

import pytest

from datagen.spec_fixture import DATE, load_spec_index

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
