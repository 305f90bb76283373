"""The index's tables moved into huge pages (Index.use_huge_pages) answer exactly as before and stay a table."""
from __future__ import annotations

import os
import re

import pytest

from core import Index
from core.errors import YidiError
from datagen import generate
from datagen.workload import DATE, Workload

THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_offered() -> bool:
    """Transparent huge pages on request (madvise or always) and MADV_COLLAPSE (Linux 6.1+)."""
    try:
        with open(THP) as f:
            enabled = f.read()
    except OSError:
        return False
    release = tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    return "[never]" not in enabled and release >= (6, 1)


def anon_huge_bytes() -> int:
    with open("/proc/self/smaps_rollup") as f:
        return int(re.search(r"AnonHugePages:\s+(\d+) kB", f.read()).group(1)) * 1024


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("huge"))
    generate(out, persons=4000, seed=2026)   # its catalogue and arena span several 2 MiB pages
    return out


def answers(ix: Index, data_dir: str) -> list:
    workload = Workload(data_dir, seed=5, persons=4000)
    out = []
    for case in [workload.outpatient() for _ in range(300)] + [workload.inpatient() for _ in range(100)]:
        inpatient = len(case.lines) == 20
        try:
            facts = ix.eligibility(case.psn_no, case.fixmedins_code, inpatient, DATE)
            lines = [(x.code, x.unit_price_fen, x.qty_milli) for x in case.lines]
            out.append((facts, ix.benefit(case.psn_no, case.fixmedins_code, facts["filing_kind"], inpatient, DATE,
                                          lines)))
        except YidiError as err:   # a refusal is an answer to compare too
            out.append(err.reason)
    return out


def loaded(data_dir: str) -> Index:
    ix = Index()
    ix.load_dir(data_dir)
    return ix


@pytest.mark.skipif(not huge_pages_offered(), reason="no transparent huge pages on request here (THP never, or "
                                                     "a kernel before 6.1 without MADV_COLLAPSE)")
def test_tables_in_huge_pages_answer_as_before(data_dir):
    plain, huge = loaded(data_dir), loaded(data_dir)
    before = anon_huge_bytes()
    moved = huge.use_huge_pages(30.0)
    assert moved >= 8 * 2**20 and moved % (2 * 2**20) == 0
    assert anon_huge_bytes() - before >= moved
    huge.check_invariants()
    assert answers(huge, data_dir) == answers(plain, data_dir)


def test_no_budget_moves_nothing_now_and_changes_no_answer(data_dir):
    plain, advised = loaded(data_dir), loaded(data_dir)
    assert advised.use_huge_pages(0.0) == 0
    assert answers(advised, data_dir) == answers(plain, data_dir)


def certno(n: int) -> str:
    """A distinct GB 11643 number (17 digits and their mod-11 check character) for each n."""
    body = f"1101011990{n:07d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


def test_tables_in_huge_pages_still_grow(data_dir):
    """Persons filed at runtime after the move, past the persons' array capacity (reallocated): all found."""
    ix = loaded(data_dir)
    ix.use_huge_pages(30.0)
    person = ix.get_person(Workload(data_dir, seed=5, persons=4000).outpatient().psn_no)
    added = [f"99{n:014d}" for n in range(5000)]
    for n, psn_no in enumerate(added):
        ix.put_person(dict(person, psn_no=psn_no, certno=certno(n), card_no=f"N{n:08d}"))
    ix.check_invariants()
    assert all(ix.get_person(psn_no)["psn_no"] == psn_no for psn_no in added)
