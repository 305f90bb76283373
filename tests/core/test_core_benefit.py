"""SPEC §5 benefit calculation: worked examples E1–E5, accumulators, bounds, properties."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from core import ACCUMULATOR_KEYS, LIMITS, InvariantError, YidiError
from datagen.spec_fixture import DATE, YEAR, load_spec_index
from builders import DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, NOT_LISTED, TREATMENT_A

E1_LINES = [(DRUG_A, 1250, 20000), (DRUG_B, 8800, 3500), (DRUG_B_CAPPED, 7300, 10000),
            (DRUG_C, 45000, 1000), (TREATMENT_A, 1200000, 1000), (NOT_LISTED, 9999, 2000)]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return load_spec_index(tmp_path_factory.mktemp("spec"))


@pytest.fixture
def fresh(tmp_path):
    """A private Index for tests that change accumulators."""
    return load_spec_index(tmp_path)


def check(result: dict, **expected) -> None:
    got = {k: result[k] for k in expected}
    assert got == expected


def deltas(**moved) -> dict:
    """A settlement's deltas: what it moved, and 0 for every other declared accumulator."""
    return dict(dict.fromkeys(ACCUMULATOR_KEYS, 0), **moved)


def test_e1_retired_first_admission(spec):
    ix, n = spec
    r = ix.benefit(n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE, E1_LINES)
    check(r, medfee_sumamt=1393798, fulamt_ownpay_amt=64998, overlmt_selfpay=23000, preselfpay_amt=13080,
          inscp_scp_amt=1292720, act_pay_dedc=120000, pay_ratio_bp=8500, hifp_pay=996812, hifob_pay=0,
          hifmi_pay=0, maf_pay=0, fund_pay_sumamt=996812, psn_cash_pay=396986,
          policy_effective_from=20260101, high_cost=False, year=YEAR)
    assert r["deltas"] == deltas(inpatient_fund_paid_fen=996812, inpatient_admissions=1, crit_base_fen=295908)
    by_code = {lr["code"]: lr for lr in r["line_results"]}
    assert [lr["code"] for lr in r["line_results"]] == [c for c, _, _ in E1_LINES]
    assert by_code[DRUG_A] == {"code": DRUG_A, "amount_fen": 25000, "fulamt_ownpay_amt": 0, "overlmt_selfpay": 0,
                               "preselfpay_amt": 0, "inscp_scp_amt": 25000, "chrgitm_lv": "A"}
    # XB03: 7300 > cap 5000: 73000 - 50000 over the cap, then 20% of 50000 first self-paid
    check(by_code[DRUG_B_CAPPED], amount_fen=73000, overlmt_selfpay=23000, preselfpay_amt=10000, inscp_scp_amt=40000,
          chrgitm_lv="B")
    check(by_code[DRUG_C], fulamt_ownpay_amt=45000, inscp_scp_amt=0, chrgitm_lv="C")
    check(by_code[NOT_LISTED], amount_fen=19998, fulamt_ownpay_amt=19998, chrgitm_lv="")


def test_benefit_is_pure(spec):
    ix, n = spec
    before = ix.accumulators(n["psn"]["retired"], YEAR)
    a = ix.benefit(n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE, E1_LINES)
    b = ix.benefit(n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE, E1_LINES)
    assert a == b
    assert ix.accumulators(n["psn"]["retired"], YEAR) == before


def test_e2_second_admission(fresh):
    ix, n = fresh
    psn = n["psn"]["retired"]
    ix.apply_deltas(psn, YEAR, {"inpatient_fund_paid_fen": 1000000, "inpatient_admissions": 1,
                                "crit_base_fen": 1400000}, 1)
    r = ix.benefit(psn, n["inst"]["hk_l3"], "retired_relocation", True, DATE,
                   [(TREATMENT_A, 8000000, 1000), (DRUG_B, 50000, 20000)])
    check(r, medfee_sumamt=9000000, preselfpay_amt=100000, inscp_scp_amt=8900000, act_pay_dedc=60000,
          pay_ratio_bp=8500, hifp_pay=7514000, hifob_pay=771600, hifmi_pay=0, maf_pay=0,
          fund_pay_sumamt=8285600, psn_cash_pay=714400)
    assert r["deltas"]["crit_base_fen"] == 8900000 - 7514000
    assert r["deltas"]["crit_paid_fen"] == 771600
    assert r["deltas"]["inpatient_admissions"] == 1


def test_e3_assistance_other_temporary(spec):
    ix, n = spec
    r = ix.benefit(n["psn"]["assist"], n["inst"]["hk_l2"], "other_temporary", True, DATE,
                   [(DRUG_A, 1250, 20000), (TREATMENT_A, 500000, 1000)])
    check(r, medfee_sumamt=525000, inscp_scp_amt=525000, act_pay_dedc=60000, pay_ratio_bp=7500,
          hifp_pay=348750, hifmi_pay=0, hifob_pay=0, maf_pay=123375, fund_pay_sumamt=472125,
          psn_cash_pay=52875)
    assert r["deltas"]["assist_paid_fen"] == 123375


def test_e4_outpatient_annual_deductible(fresh):
    ix, n = fresh
    psn = n["psn"]["in_service"]
    ix.apply_deltas(psn, YEAR, {"outpatient_deductible_used_fen": 45000}, 1)
    r = ix.benefit(psn, n["inst"]["hk_l1"], "long_term_residence", False, DATE,
                   [(DRUG_A, 1250, 6000), (DRUG_B, 8800, 1500)])
    check(r, medfee_sumamt=20700, preselfpay_amt=1320, inscp_scp_amt=19380, act_pay_dedc=5000,
          pay_ratio_bp=7000, hifp_pay=10066, hifmi_pay=0, hifob_pay=0, maf_pay=0, fund_pay_sumamt=10066,
          psn_cash_pay=10634)
    assert r["deltas"] == deltas(outpatient_fund_paid_fen=10066, outpatient_deductible_used_fen=5000)


def test_e5_cap_reached_supplementary_pays(fresh):
    ix, n = fresh
    psn = n["psn"]["referral"]
    ix.apply_deltas(psn, YEAR, {"inpatient_fund_paid_fen": 29500000, "inpatient_admissions": 2,
                                "crit_base_fen": 9000000}, 1)
    r = ix.benefit(psn, n["inst"]["hk_l1"], "referral", True, DATE, [(TREATMENT_A, 2000000, 1000)])
    check(r, act_pay_dedc=15000, pay_ratio_bp=9000, hifp_pay=500000, hifob_pay=900000, hifmi_pay=0,
          fund_pay_sumamt=1400000, psn_cash_pay=600000)


def test_supplementary_reported_as_hifmi_for_390(fresh):
    ix, n = fresh
    psn = n["psn"]["assist"]       # insutype 390
    ix.apply_deltas(psn, YEAR, {"crit_base_fen": 1400000}, 1)
    r = ix.benefit(psn, n["inst"]["hk_l2"], "other_temporary", True, DATE, [(TREATMENT_A, 2000000, 1000)])
    assert r["hifmi_pay"] > 0 and r["hifob_pay"] == 0


def test_assistance_annual_cap_shared(fresh):
    ix, n = fresh
    psn = n["psn"]["assist"]
    ix.apply_deltas(psn, YEAR, {"assist_paid_fen": 5000000 - 1000}, 1)
    r = ix.benefit(psn, n["inst"]["hk_l2"], "other_temporary", False, DATE, [(TREATMENT_A, 500000, 1000)])
    assert r["maf_pay"] == 1000


def test_high_cost_flag_and_tiers_cross(fresh):
    ix, n = fresh
    psn = n["psn"]["retired"]
    r = ix.benefit(psn, n["inst"]["hk_l3"], "retired_relocation", True, DATE, [(TREATMENT_A, 30000000, 1000)])
    assert r["high_cost"] is True
    # s = 30,000,000 - hifp; excess over 1,500,000 spans both tiers
    hifp = (30000000 - 120000) * 8500 // 10000
    s = 30000000 - hifp
    ex = s - 1500000
    expect = (min(ex, 10000000) * 6000 + 5000) // 10000 + (max(0, ex - 10000000) * 7000 + 5000) // 10000
    assert r["hifp_pay"] == hifp and r["hifob_pay"] == expect


def test_no_policy_in_force(spec):
    ix, n = spec
    with pytest.raises(YidiError) as e:
        ix.benefit(n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, 20251231, E1_LINES)
    assert e.value.reason == "POLICY_MISSING"
    assert "210100" in e.value.message


@pytest.mark.parametrize("line, reason", [
    ((DRUG_A, -1, 1000), "INVALID_PRICE"),
    ((DRUG_A, LIMITS["MAX_UNIT_PRICE_FEN"] + 1, 1000), "INVALID_PRICE"),
    ((DRUG_A, 100, 0), "INVALID_QUANTITY"),
    ((DRUG_A, 100, -5), "INVALID_QUANTITY"),
    ((DRUG_A, 100, LIMITS["MAX_QTY_MILLI"] + 1), "INVALID_QUANTITY"),
    ((DRUG_A, 1.5, 1000), "INVALID_PRICE"),
    (("", 100, 1000), "INVALID_CODE"),
    (("bad code", 100, 1000), "INVALID_CODE"),
])
def test_bad_lines(spec, line, reason):
    ix, n = spec
    with pytest.raises(YidiError) as e:
        ix.benefit(n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE, [line])
    assert e.value.reason == reason


@pytest.mark.parametrize("lines", [[(DRUG_A, 100)], [(DRUG_A, 100, 1000, 0)], [DRUG_A], [None], DRUG_A, None])
def test_malformed_line_tuples_are_bugs(spec, lines):
    """The engine builds the (code, unit_price_fen, qty_milli) tuples: a bad shape is its bug, not a reason."""
    ix, n = spec
    with pytest.raises(InvariantError):
        ix.benefit(n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE, lines)


def test_fee_line_forms_read_alike(spec):
    """A bill reads events.FeeLine's fields in place (their slots' offsets, learned from the type): any other
    object with the same fields, slotted or not, and lines whose type changes from call to call, give the
    same answer as the tuples; a slot left unset is the caller's bug, as a missing attribute is."""
    import dataclasses

    from core.events import FeeLine

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        code: str
        unit_price_fen: int
        qty_milli: int

    class Plain:
        def __init__(self, code, unit_price_fen, qty_milli):
            self.code, self.unit_price_fen, self.qty_milli = code, unit_price_fen, qty_milli

    class Unset:
        __slots__ = ("code", "unit_price_fen", "qty_milli")

    ix, n = spec
    args = (n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE)
    expected = ix.benefit(*args, E1_LINES)
    fee_lines = [FeeLine(f"sn{i}", c, "名称", p, q) for i, (c, p, q) in enumerate(E1_LINES)]
    for form in (fee_lines, [Slotted(*t) for t in E1_LINES], fee_lines, tuple(Plain(*t) for t in E1_LINES),
                 [*fee_lines[:3], *(Slotted(*t) for t in E1_LINES[3:])]):
        assert ix.benefit(*args, form) == expected
    half = Unset()
    half.code, half.qty_milli = DRUG_A, 1000
    with pytest.raises(InvariantError):
        ix.benefit(*args, [half])
    with pytest.raises(YidiError) as e:
        ix.benefit(*args, [FeeLine("sn", DRUG_A, "名称", 100, 0)])
    assert e.value.reason == "INVALID_QUANTITY"


def test_too_many_lines_and_bounds(spec):
    ix, n = spec
    psn, inst = n["psn"]["retired"], n["inst"]["hk_l3"]
    with pytest.raises(YidiError) as e:
        ix.benefit(psn, inst, "retired_relocation", True, DATE, [(DRUG_A, 1, 1000)] * (LIMITS["MAX_LINES"] + 1))
    assert e.value.reason == "TOO_MANY_LINES"
    # the largest allowed lines do not overflow: bill total bound refuses instead
    big = (TREATMENT_A, LIMITS["MAX_UNIT_PRICE_FEN"], LIMITS["MAX_QTY_MILLI"])
    with pytest.raises(YidiError) as e:
        ix.benefit(psn, inst, "retired_relocation", True, DATE, [big])
    assert e.value.reason == "INVALID_PRICE"
    r = ix.benefit(psn, inst, "retired_relocation", True, DATE, [(TREATMENT_A, 10**9, 10**5)] * 1000)
    assert r["medfee_sumamt"] == 10**11 * 1000
    assert r["fund_pay_sumamt"] + r["psn_cash_pay"] == r["medfee_sumamt"]
    with pytest.raises(YidiError) as e:
        ix.benefit(psn, inst, "bogus", True, DATE, [(TREATMENT_A, 1, 1000)])
    assert e.value.reason == "INVALID_ENUM"
    with pytest.raises(YidiError) as e:
        ix.benefit(psn, inst, "retired_relocation", True, 20260230, [(TREATMENT_A, 1, 1000)])
    assert e.value.reason == "INVALID_DATE"
    with pytest.raises(YidiError) as e:
        ix.benefit("NOPE", inst, "retired_relocation", True, DATE, [(TREATMENT_A, 1, 1000)])
    assert e.value.reason == "PERSON_NOT_FOUND"


def test_catalogue_is_the_treatment_provinces(tmp_path):
    """就医地目录: an item missing from the treatment province's catalogue is fully self-paid."""
    import json
    from datagen.spec_fixture import write_spec_dataset
    from core import Index
    names = write_spec_dataset(tmp_path)
    rows = [json.loads(row) for row in (tmp_path / "catalog.jsonl").read_text().splitlines()]
    rows = [r for r in rows if not (r["province"] == "440000" and r["code"] == TREATMENT_A)]
    with open(tmp_path / "catalog.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    ix = Index()
    ix.load_dir(str(tmp_path))
    psn = names["psn"]["multi"]
    r_gd = ix.benefit(psn, names["inst"]["gz_l3"], "stationed_work", True, DATE, [(TREATMENT_A, 100000, 1000)])
    r_hn = ix.benefit(psn, names["inst"]["hk_l3"], "stationed_work", True, DATE, [(TREATMENT_A, 100000, 1000)])
    assert r_gd["fulamt_ownpay_amt"] == 100000 and r_gd["line_results"][0]["chrgitm_lv"] == ""
    assert r_hn["inscp_scp_amt"] == 100000


# ------------------------------------------------------------------ accumulators
def test_apply_then_revert_restores_zeros(fresh):
    ix, n = fresh
    psn = n["psn"]["retired"]
    assert ix.accumulators(psn, YEAR) == dict.fromkeys(ACCUMULATOR_KEYS, 0)
    r = ix.benefit(psn, n["inst"]["hk_l3"], "retired_relocation", True, DATE, E1_LINES)
    ix.apply_deltas(psn, YEAR, r["deltas"], 1)
    assert ix.accumulators(psn, YEAR)["crit_base_fen"] == 295908
    assert ix.accumulators(psn, YEAR)["inpatient_admissions"] == 1
    assert ix.accumulators(psn, YEAR + 1) == dict.fromkeys(ACCUMULATOR_KEYS, 0)
    ix.apply_deltas(psn, YEAR, r["deltas"], -1)
    assert ix.accumulators(psn, YEAR) == dict.fromkeys(ACCUMULATOR_KEYS, 0)


def test_cancellation_order_independent(fresh):
    ix, n = fresh
    psn, inst = n["psn"]["retired"], n["inst"]["hk_l3"]
    deltas = []
    for lines in (E1_LINES, [(TREATMENT_A, 8000000, 1000)], [(DRUG_A, 1250, 20000)]):
        r = ix.benefit(psn, inst, "retired_relocation", True, DATE, lines)
        ix.apply_deltas(psn, YEAR, r["deltas"], 1)
        deltas.append(r["deltas"])
    # the second admission saw the first: subsequent deductible applied
    assert ix.accumulators(psn, YEAR)["inpatient_admissions"] == 3
    for d in (deltas[1], deltas[0], deltas[2]):
        ix.apply_deltas(psn, YEAR, d, -1)
    assert ix.accumulators(psn, YEAR) == dict.fromkeys(ACCUMULATOR_KEYS, 0)


def test_apply_deltas_refuses_bad_input_and_changes_nothing(fresh):
    """Deltas and sign come from the core's own settlements: a bad one is a bug (InvariantError)."""
    ix, n = fresh
    psn = n["psn"]["retired"]
    ix.apply_deltas(psn, YEAR, {"crit_base_fen": 10}, 1)
    for deltas, sign in (({"crit_base_fen": 11}, -1), ({"bogus": 1}, 1), ({"crit_base_fen": 1}, 2),
                         ({"crit_base_fen": "1"}, 1), ([("crit_base_fen", 1)], 1), ({"crit_base_fen": 1}, True)):
        with pytest.raises(InvariantError):
            ix.apply_deltas(psn, YEAR, deltas, sign)
    assert ix.accumulators(psn, YEAR)["crit_base_fen"] == 10
    with pytest.raises(YidiError) as e:
        ix.apply_deltas("UNKNOWN", YEAR, {}, 1)
    assert e.value.reason == "PERSON_NOT_FOUND"


# ------------------------------------------------------------------ properties
codes = st.sampled_from([DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, TREATMENT_A, NOT_LISTED])
line = st.tuples(codes, st.integers(0, 5_000_000), st.integers(1, 50_000))
acc_state = st.fixed_dictionaries({
    "inpatient_fund_paid_fen": st.integers(0, 31_000_000),
    "inpatient_admissions": st.integers(0, 3),
    "crit_base_fen": st.integers(0, 20_000_000),
    "crit_paid_fen": st.integers(0, 41_000_000),
    "assist_paid_fen": st.integers(0, 5_100_000),
    "outpatient_fund_paid_fen": st.integers(0, 410_000),
    "outpatient_deductible_used_fen": st.integers(0, 60_000),
})
who = st.sampled_from([("retired", "hk_l3", "retired_relocation"), ("assist", "hk_l2", "other_temporary"),
                       ("in_service", "hk_l1", "long_term_residence"), ("referral", "hk_l1", "referral")])


@pytest.fixture(scope="module")
def prop_index(tmp_path_factory):
    return load_spec_index(tmp_path_factory.mktemp("prop"))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(lines=st.lists(line, min_size=0, max_size=30), acc=acc_state, who=who, inpatient=st.booleans())
def test_property_conservation(prop_index, lines, acc, who, inpatient):
    ix, n = prop_index
    psn = n["psn"][who[0]]
    ix.apply_deltas(psn, YEAR, acc, 1)
    try:
        r = ix.benefit(psn, n["inst"][who[1]], who[2], inpatient, DATE, lines)
    finally:
        ix.apply_deltas(psn, YEAR, acc, -1)
    money = ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
             "act_pay_dedc", "hifp_pay", "hifmi_pay", "hifob_pay", "maf_pay", "fund_pay_sumamt", "psn_cash_pay")
    assert all(r[k] >= 0 for k in money)
    assert r["medfee_sumamt"] == (r["fulamt_ownpay_amt"] + r["overlmt_selfpay"] + r["preselfpay_amt"]
                                  + r["inscp_scp_amt"])
    assert r["fund_pay_sumamt"] + r["psn_cash_pay"] == r["medfee_sumamt"]
    assert r["fund_pay_sumamt"] == r["hifp_pay"] + r["hifmi_pay"] + r["hifob_pay"] + r["maf_pay"]
    assert r["fund_pay_sumamt"] <= r["inscp_scp_amt"]
    cap, used = (30_000_000, acc["inpatient_fund_paid_fen"]) if inpatient else (400_000, acc["outpatient_fund_paid_fen"])
    assert r["hifp_pay"] <= max(0, cap - used)
    assert r["maf_pay"] <= max(0, 5_000_000 - acc["assist_paid_fen"])
    assert r["hifmi_pay"] + r["hifob_pay"] <= max(0, 40_000_000 - acc["crit_paid_fen"])
    assert sum(lr["amount_fen"] for lr in r["line_results"]) == r["medfee_sumamt"]
    assert all(v >= 0 for v in r["deltas"].values())
