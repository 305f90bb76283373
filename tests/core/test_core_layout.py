"""The C layout and its Python names agree: accumulator and breakdown names, their C positions, array sizes.

The accumulators live in a C array indexed by an enum generated from
core/money.py; Python knows them by name.  _core.LAYOUT is written from the C
side (enum values, sizeof-derived array lengths), so a struct, the generated
enum and the declaration that drift apart fail here rather than as a wrong
amount.
"""
from __future__ import annotations

import pytest

from core import ACCUMULATOR_KEYS, _core
from core.money import BREAKDOWN_KEYS
from datagen.spec_fixture import DATE, YEAR, load_spec_index
from builders import TREATMENT_A

LAYOUT = _core.LAYOUT


def test_sizes_are_the_named_constants():
    assert LAYOUT["N_ACCUMULATORS"] == len(ACCUMULATOR_KEYS)
    assert LAYOUT["N_LEVELS"] == 4          # levels 1..3, slot 0 unused
    assert LAYOUT["N_FILING_KINDS"] == len(_core.FILING_KINDS) == len(_core.KIND_NAMES_ZH) == 6
    assert LAYOUT["MAX_TIERS"] == _core.LIMITS["MAX_TIERS"]
    arrays = LAYOUT["array_len"]
    assert arrays["Acc.value"] == LAYOUT["N_ACCUMULATORS"]
    for name in ("inpatient_deductible_fen", "inpatient_ratio_bp", "outpatient_ratio_bp"):
        assert arrays[f"Policy.{name}"] == LAYOUT["N_LEVELS"], name
    assert arrays["Policy.crit_up_to_fen"] == arrays["Policy.crit_ratio_bp"] == LAYOUT["MAX_TIERS"]
    assert arrays["Policy.reduction_bp"] == LAYOUT["N_FILING_KINDS"] == LAYOUT["enum_len"]["FILING_KINDS"]


def test_the_money_names_are_the_c_enums_in_order():
    index = LAYOUT["index"]
    assert [index[k] for k in ACCUMULATOR_KEYS] == list(range(LAYOUT["N_ACCUMULATORS"]))
    assert [index[k] for k in BREAKDOWN_KEYS] == list(range(LAYOUT["N_BREAKDOWN"]))


@pytest.fixture
def fresh(tmp_path):
    return load_spec_index(tmp_path)


def _bill(ix, n, inpatient):
    return ix.benefit(n["psn"]["assist"], n["inst"]["hk_l2"], "other_temporary", inpatient, DATE,
                      [(TREATMENT_A, 3000000, 1000)])


# accumulator name -> (state before, its value, whether the bill is inpatient, what the benefit must show)
EFFECTS = {
    "inpatient_fund_paid_fen": ({}, 30000000, True, lambda r: r["hifp_pay"] == 0),
    "inpatient_admissions": ({}, 1, True, lambda r: r["act_pay_dedc"] == 30000),
    "crit_base_fen": ({}, 20000000, True, lambda r: r["hifmi_pay"] > 0),
    "crit_paid_fen": ({"crit_base_fen": 20000000}, 40000000, True, lambda r: r["hifmi_pay"] == 0),
    "assist_paid_fen": ({}, 5000000, False, lambda r: r["maf_pay"] == 0),
    "outpatient_fund_paid_fen": ({}, 400000, False, lambda r: r["hifp_pay"] == 0),
    "outpatient_deductible_used_fen": ({}, 50000, False, lambda r: r["act_pay_dedc"] == 0),
}


@pytest.mark.parametrize("key", ACCUMULATOR_KEYS)
def test_each_name_is_read_by_the_rule_it_names(fresh, key):
    """The C code reads the slot the Python name writes: each accumulator changes its own rule."""
    if key not in EFFECTS:
        pytest.skip(f"{key}: a made-up accumulator of a test build (tests/money_layer.py), read by no rule")
    ix, n = fresh
    psn = n["psn"]["assist"]
    state, value, inpatient, shows = EFFECTS[key]
    ix.apply_deltas(psn, YEAR, state, 1)
    assert not shows(_bill(ix, n, inpatient)), key
    ix.apply_deltas(psn, YEAR, {key: value}, 1)
    assert ix.accumulators(psn, YEAR) == dict(dict.fromkeys(ACCUMULATOR_KEYS, 0), **state, **{key: value})
    after = _bill(ix, n, inpatient)
    assert shows(after), (key, after)
    assert list(after["deltas"]) == list(ACCUMULATOR_KEYS)
