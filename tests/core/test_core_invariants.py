"""Index.check_invariants(): it passes on every state the public API can reach, and it
notices a broken one (debug builds corrupt state on purpose through Index._debug_corrupt)."""
from __future__ import annotations

import random

import pytest

import core
from core import ACCUMULATOR_KEYS, Index, InvariantError, _core
from datagen.spec_fixture import DATE, FILINGS, PERSONS, YEAR, load_spec_index, make_certno
from builders import TREATMENT_A

debug_only = pytest.mark.skipif(not _core.DEBUG, reason="needs a debug build (make test-debug)")


@pytest.fixture
def spec(tmp_path):
    return load_spec_index(tmp_path)


def test_debug_flag_is_exported():
    assert core.DEBUG is _core.DEBUG and type(core.DEBUG) is bool


def test_holds_on_an_empty_and_a_loaded_index(spec):
    Index().check_invariants()
    ix, _ = spec
    ix.check_invariants()


def test_holds_after_runtime_puts_and_deltas(spec):
    ix, n = spec
    base = dict(PERSONS["unfiled"], psn_no="P-NEW", certno=make_certno("11010119900101123"))
    ix.put_person(base)
    ix.put_person(dict(base, name="杨帆帆", status="suspended"))                  # update in place
    ix.put_person(dict(base, certno=make_certno("11010119900101999")))          # certno moves tables
    ix.put_filing(dict(FILINGS["retired"], filing_id="F-NEW", psn_no="P-NEW"))
    ix.put_filing(dict(FILINGS["retired"], filing_id="F-NEW", psn_no="P-NEW", status="revoked"))
    ix.check_invariants()
    psn = n["psn"]["retired"]
    r = ix.benefit(psn, n["inst"]["hk_l3"], "retired_relocation", True, DATE, [(TREATMENT_A, 1200000, 1000)])
    for year in (YEAR, YEAR + 1, YEAR - 1):
        ix.apply_deltas(psn, year, r["deltas"], 1)
    ix.check_invariants()
    ix.apply_deltas(psn, YEAR, r["deltas"], -1)
    assert ix.accumulators(psn, YEAR) == dict.fromkeys(ACCUMULATOR_KEYS, 0)
    ix.check_invariants()


def test_holds_after_many_inserts_and_refusals(spec):
    """Several table doublings, refused puts in between: still consistent."""
    ix, _ = spec
    rng = random.Random(20260316)
    print("seed", 20260316)
    for i in range(3000):
        psn = f"R{i:09d}"
        cert = make_certno(f"{rng.randrange(10**16, 10**17)}")
        if ix.psn_no_by_certno(cert) is not None:
            continue
        ix.put_person(dict(PERSONS["retired"], psn_no=psn, certno=cert, card_no=f"K{i}"))
        ix.put_filing(dict(FILINGS["retired"], filing_id=f"FR{i}", psn_no=psn))
        with pytest.raises(core.YidiError):         # someone else's certno: refused, nothing stored
            ix.put_person(dict(PERSONS["retired"], psn_no=f"X{i}", certno=cert))
        if i % 7 == 0:
            ix.apply_deltas(psn, 2000 + i % 50, {"crit_base_fen": i}, 1)
    ix.check_invariants()


# ------------------------------------------------------------------ broken on purpose (debug builds)
@debug_only
@pytest.mark.parametrize("what", ["certno_table", "filing_cycle", "filing_person", "filing_unlinked",
                                  "person_slot_extra", "accumulator_negative", "accumulator_year_twice"])
def test_notices_corruption(spec, what):
    ix, n = spec
    ix.check_invariants()
    ix._debug_corrupt(what, n["psn"]["multi"])
    with pytest.raises(InvariantError):
        ix.check_invariants()


@debug_only
def test_debug_build_checks_after_each_change(spec):
    """The touched person's rows are checked after apply_deltas / put_filing / put_person."""
    ix, n = spec
    psn = n["psn"]["multi"]
    ix._debug_corrupt("accumulator_negative", psn)
    with pytest.raises(InvariantError):
        ix.apply_deltas(psn, YEAR - 1, {"crit_base_fen": 1}, 1)
    ix, n = load_spec_index(spec[1]["dir"] + "-2")
    ix._debug_corrupt("filing_cycle", psn)
    with pytest.raises(InvariantError):
        ix.put_filing(dict(FILINGS["multi_work"], status="revoked"))
    ix, n = load_spec_index(spec[1]["dir"] + "-3")
    ix._debug_corrupt("accumulator_year_twice", psn)
    with pytest.raises(InvariantError):
        ix.put_person(dict(PERSONS["multi"], name="赵敏敏"))


@pytest.mark.skipif(_core.DEBUG, reason="release builds only")
def test_no_corruption_hook_in_release_builds(spec):
    ix, n = spec
    with pytest.raises(RuntimeError):
        ix._debug_corrupt("certno_table", n["psn"]["multi"])
    ix.check_invariants()
