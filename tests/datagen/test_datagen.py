"""The synthetic data generator: determinism, SPEC §3 shapes, realism."""

from __future__ import annotations

import collections
import datetime
import filecmp
import os

import orjson
import pytest

from core import LIMITS, LONG_TERM_KINDS, TEMPORARY_KINDS, certno_check_char, certno_valid, pooling_code, province_code
from datagen import generate
from datagen import geo

PERSONS = 2000
SEED = 2026
STEMS = ("regions", "institutions", "catalog", "policies", "persons", "filings")
LONG_TERM = set(LONG_TERM_KINDS)
TEMPORARY = set(TEMPORARY_KINDS)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("datagen") / "a"
    calls = []
    manifest = generate(str(out), persons=PERSONS, seed=SEED, progress=lambda *a: calls.append(a))
    assert {c[0] for c in calls} == set(STEMS)
    assert manifest["counts"]["persons"] == PERSONS
    return str(out)


def load(data_dir, stem):
    with open(os.path.join(data_dir, f"{stem}.jsonl"), "rb") as f:
        return [orjson.loads(line) for line in f]


@pytest.fixture(scope="module")
def data(data_dir):
    return {stem: load(data_dir, stem) for stem in STEMS}


def is_date(x) -> bool:
    if type(x) is not int:
        return False
    try:
        datetime.date(x // 10000, x // 100 % 100, x % 100)
    except ValueError:
        return False
    return True


def days_inclusive(a: int, b: int) -> int:
    def d(x):
        return datetime.date(x // 10000, x // 100 % 100, x % 100)
    return (d(b) - d(a)).days + 1


def is_admdvs(x) -> bool:
    return isinstance(x, str) and len(x) == 6 and x.isascii() and x.isdigit()


def is_certno(x) -> bool:
    """A certno the core accepts whose birth date (digits 7-14) is a real date."""
    return certno_valid(x) and is_date(int(x[6:14]))


def is_province(x: str) -> bool:
    return province_code(x) == x


def is_pooling(x: str) -> bool:
    """A prefecture (pooling region) code, not a province's."""
    return pooling_code(x) == x and not is_province(x)


def is_bp(x) -> bool:
    return type(x) is int and 0 <= x <= 10000


def is_fen(x) -> bool:
    return type(x) is int and x >= 0


# ---------------------------------------------------------------------------


def test_certno_check_digit():
    assert certno_check_char("11010519491231002") == "X"
    assert is_certno("11010519491231002X")
    assert not is_certno("110105194912310021")
    month13 = "11010519491331002"
    assert not is_certno(month13 + certno_check_char(month13))  # a valid check character, but month 13
    assert not is_certno("11010519491231002")
    assert not is_certno("1101051949123100 X")


def test_determinism(tmp_path, data_dir):
    again = tmp_path / "b"
    other = tmp_path / "c"
    generate(str(again), persons=PERSONS, seed=SEED)
    generate(str(other), persons=PERSONS, seed=SEED + 1)
    names = [f"{s}.jsonl" for s in STEMS] + ["manifest.json"]
    match, mismatch, errors = filecmp.cmpfiles(data_dir, again, names, shallow=False)
    assert not mismatch and not errors
    _m, differ, _e = filecmp.cmpfiles(data_dir, other, names, shallow=False)
    assert {"persons.jsonl", "filings.jsonl", "institutions.jsonl", "catalog.jsonl",
            "policies.jsonl", "manifest.json"} <= set(differ)


def test_manifest(data_dir, data):
    with open(os.path.join(data_dir, "manifest.json"), "rb") as f:
        m = orjson.loads(f.read())
    figures = m.pop("figures")
    assert m == {"generator": "yidi-datagen", "version": 1, "seed": SEED, "persons": PERSONS,
                 "counts": {**{s: len(data[s]) for s in STEMS}, "voucher_keys": len(geo.PROVINCES)},
                 "as_of": 20261122}
    keys = load(data_dir, "voucher_keys")   # SPEC §10.5: one key per province, all different
    assert sorted(k["province"] for k in keys) == sorted(p[0] for p in geo.PROVINCES)
    assert len({k["key_hex"] for k in keys}) == len(keys) and all(len(k["key_hex"]) == 64 for k in keys)
    random_persons = data["persons"][5:]   # the figures are of the random persons (not the 5 demo ones)
    assert figures["chronic_persons"] == sum("chronic_diseases" in p for p in random_persons)
    assert figures["persons_with_account"] == sum("acct_balance_fen" in p for p in random_persons)


def test_regions(data):
    regions = {r["admdvs"]: r["name"] for r in data["regions"]}
    assert len(regions) == len(data["regions"])
    provinces = {c: n for c, n in regions.items() if is_province(c)}
    assert len(provinces) == 31
    for code, name in [("110000", "北京市"), ("310000", "上海市"), ("440000", "广东省"),
                       ("460000", "海南省"), ("530000", "云南省"), ("650000", "新疆维吾尔自治区"),
                       ("210100", "沈阳市"), ("210200", "大连市"), ("460100", "海口市"),
                       ("460200", "三亚市"), ("440300", "深圳市"), ("530700", "丽江市")]:
        assert regions[code] == name
    for code in regions:
        assert is_admdvs(code)
        assert province_code(code) in provinces
        assert pooling_code(code) in regions  # districts sit under an emitted city
    # Every province has at least one city.
    for p in provinces:
        assert any(province_code(c) == p and is_pooling(c) for c in regions)


def test_institutions(data):
    regions = {r["admdvs"] for r in data["regions"]}
    insts = data["institutions"]
    assert len(insts) == 36_000
    codes = set()
    for i in insts:
        code = i["fixmedins_code"]
        assert len(code) == 12 and code[0] in "HCP" and code[1:].isdigit()
        assert code not in codes
        codes.add(code)
        assert code[1:7] == i["admdvs"] and i["admdvs"] in regions and is_pooling(i["admdvs"])
        assert i["kind"] == {"H": "hospital", "C": "clinic", "P": "pharmacy"}[code[0]]
        assert i["level"] in (1, 2, 3)
        assert isinstance(i["name"], str) and i["name"]
        assert type(i["inpatient"]) is bool and type(i["outpatient"]) is bool
        if i["kind"] != "hospital":
            assert i["level"] == 1
        if i["kind"] == "pharmacy":
            assert i["inpatient"] is False
    by_code = {i["fixmedins_code"]: i for i in insts}
    assert by_code["H11010000001"]["name"] == "北京协和医院"
    assert by_code["H11010000001"]["level"] == 3
    assert by_code["H11010000001"]["inpatient"] and by_code["H11010000001"]["outpatient"]
    assert by_code["H31010000001"]["name"] == "复旦大学附属中山医院"
    assert by_code["H44010000001"]["name"] == "中山大学附属第一医院"
    assert by_code["P46010000001"]["kind"] == "pharmacy"
    assert by_code["P46010000001"]["admdvs"] == "460100"
    hospitals = [i for i in insts if i["kind"] == "hospital"]
    gaps = sum(1 for i in hospitals if not (i["inpatient"] and i["outpatient"])) / len(hospitals)
    assert 0.04 <= gaps <= 0.11
    assert {i["level"] for i in hospitals} == {1, 2, 3}
    # Every city has at least one institution.
    cities = {c for c in regions if is_pooling(c)}
    assert cities <= {i["admdvs"] for i in insts}


def test_institutions_override(tmp_path):
    m = generate(str(tmp_path / "i"), persons=10, seed=1, institutions=1000)
    assert m["counts"]["institutions"] == 1000
    with pytest.raises(ValueError):
        generate(str(tmp_path / "j"), persons=10, seed=1, institutions=50)


def test_catalog(data):
    rows = data["catalog"]
    provinces = [p[0] for p in geo.PROVINCES]
    by_prov = collections.defaultdict(dict)
    for r in rows:
        assert set(r) == {"province", "code", "name", "category", "class", "selfpay_bp", "price_cap_fen"}
        assert r["province"] in provinces
        code = r["code"]
        assert isinstance(code, str) and 0 < len(code) <= 30 and code.isascii() and code.isalnum()
        assert r["category"] in ("drug", "treatment", "material", "service")
        assert r["class"] in ("A", "B", "C")
        assert is_bp(r["selfpay_bp"]) and is_fen(r["price_cap_fen"])
        if r["class"] == "B":
            assert 500 <= r["selfpay_bp"] <= 3000
        else:
            assert r["selfpay_bp"] == 0
        assert code not in by_prov[r["province"]]
        by_prov[r["province"]][code] = r
    assert set(by_prov) == set(provinces)
    base = set(by_prov["110000"])
    assert len(base) >= 5000
    for p in provinces:
        assert set(by_prov[p]) == base
    assert {r["category"] for r in by_prov["110000"].values()} == {"drug", "treatment", "material", "service"}
    # Provincial differences exist but are small.
    diff = sum(1 for c in base if by_prov["110000"][c]["class"] != by_prov["460000"][c]["class"])
    assert 0 < diff < 0.1 * len(base)
    assert len({by_prov[p][c]["price_cap_fen"] for p in provinces for c in list(base)[:2000]}) > 10
    assert any(r["class"] == "C" for r in by_prov["210000"].values())


def check_policy(p):
    assert is_admdvs(p["admdvs"]) and pooling_code(p["admdvs"]) == p["admdvs"]
    assert p["insutype"] in ("310", "390")
    assert is_date(p["effective_from"])
    inp = p["inpatient"]
    ded, ratio = inp["deductible_fen"], inp["ratio_bp"]
    assert set(ded) == set(ratio) == {"1", "2", "3"}
    assert all(20_000 <= ded[k] <= 120_000 for k in ded)
    assert ded["1"] <= ded["2"] <= ded["3"]
    assert all(6500 <= ratio[k] <= 9200 for k in ratio)
    assert ratio["1"] >= ratio["2"] >= ratio["3"]
    assert 0 <= inp["retired_bonus_bp"] <= 1000
    assert 13_000_000 <= inp["annual_cap_fen"] <= 40_000_000
    assert inp.get("subsequent_deductible_bp", 5000) == 5000
    out = p["outpatient"]
    assert 20_000 <= out["annual_deductible_fen"] <= 200_000
    assert set(out["ratio_bp"]) == {"1", "2", "3"}
    assert all(5000 <= v <= 8000 for v in out["ratio_bp"].values())
    assert is_bp(out["retired_bonus_bp"])
    assert 200_000 <= out["annual_cap_fen"] <= 800_000
    if p["insutype"] == "390":
        assert inp["retired_bonus_bp"] == 0 and out["retired_bonus_bp"] == 0
    for k in ("1", "2", "3"):
        assert is_bp(ratio[k] + inp["retired_bonus_bp"])
    if "critical_illness" in p:
        ci = p["critical_illness"]
        assert 1_000_000 <= ci["threshold_fen"] <= 2_000_000
        tiers = ci["tiers"]
        assert tiers and tiers[-1]["up_to_fen"] is None
        ups = [t["up_to_fen"] for t in tiers[:-1]]
        assert all(type(u) is int and u > 0 for u in ups) and ups == sorted(set(ups))
        assert all(is_bp(t["ratio_bp"]) for t in tiers)
        assert 30_000_000 <= ci["annual_cap_fen"] <= 60_000_000
    if "assistance" in p:
        assert 6000 <= p["assistance"]["ratio_bp"] <= 9000
        assert 2_000_000 <= p["assistance"]["annual_cap_fen"] <= 10_000_000
    red = p["reduction_bp"]
    assert set(red) == {"referral", "emergency", "other_temporary"}
    assert 0 <= red["referral"] <= 1000 and 0 <= red["emergency"] <= 1000
    assert 1000 <= red["other_temporary"] <= 2000
    assert 10_000_000 <= p["high_cost_fen"] <= 30_000_000


def test_policies(data):
    regions = {r["admdvs"] for r in data["regions"]}
    cities = {c for c in regions if is_pooling(c)}
    keys = set()
    for p in data["policies"]:
        check_policy(p)
        key = (p["admdvs"], p["insutype"], p["effective_from"])
        assert key not in keys
        keys.add(key)
    assert keys == {(c, t, d) for c in cities for t in ("310", "390") for d in (20250101, 20260101)}
    assert any("subsequent_deductible_bp" not in p["inpatient"] for p in data["policies"])
    spec_example = ["admdvs", "insutype", "effective_from", "inpatient", "outpatient",
                    "critical_illness", "assistance", "reduction_bp", "high_cost_fen", "chronic"]  # + SPEC §10.2
    assert list(data["policies"][0]) == spec_example


def test_persons(data):
    regions = {r["admdvs"] for r in data["regions"]}
    persons = data["persons"]
    assert len(persons) == PERSONS
    fields = {"psn_no", "certno", "name", "insuplc_admdvs", "insutype", "person_type", "status",
              "assistance", "card_no", "card_version"}
    optional = {"acct_balance_fen", "mulaid_psn_nos", "chronic_diseases"}   # SPEC §10
    for p in persons:
        assert fields <= set(p) <= fields | optional
        psn = p["psn_no"]
        assert psn.isascii() and psn.isdigit() and len(psn) <= 20
        assert psn[:2] == p["insuplc_admdvs"][:2]
        assert is_certno(p["certno"])
        assert p["certno"][:6] == p["insuplc_admdvs"]
        year = int(p["certno"][6:10])
        if p["person_type"] == "retired":
            assert 1940 <= year <= 1966
        elif p["insutype"] == "310":
            assert 1966 <= year <= 2004
        assert 2 <= len(p["name"]) <= 4
        assert p["insuplc_admdvs"] in regions and not is_province(p["insuplc_admdvs"])
        assert pooling_code(p["insuplc_admdvs"]) in regions
        assert p["insutype"] in ("310", "390")
        assert p["person_type"] in ("retired", "in_service")
        assert p["status"] in ("active", "suspended")
        assert type(p["assistance"]) is bool
        card = p["card_no"]
        assert len(card) == 9 and card[0].isalpha() and card[0].isupper() and card[1:].isdigit()
        assert p["card_version"] in ("1.0", "2.0", "3.0")
    for key in ("psn_no", "certno", "card_no"):
        assert len({p[key] for p in persons}) == PERSONS, key
    c = collections.Counter
    assert c(p["insutype"] for p in persons)["310"] > PERSONS * 0.6
    assert 0.95 < c(p["status"] for p in persons)["active"] / PERSONS < 1
    assert 0.005 < c(p["assistance"] for p in persons)[True] / PERSONS < 0.05
    assert c(p["card_version"] for p in persons).most_common(1)[0][0] == "3.0"
    # Sex from the sequence digit roughly balanced.
    males = sum(int(p["certno"][16]) % 2 for p in persons)
    assert 0.4 < males / PERSONS < 0.6
    # Big senders: 河南, 四川, 黑龙江 each outweigh 北京, 上海, 广东, 海南.
    by_prov = c(province_code(p["insuplc_admdvs"]) for p in persons)
    assert min(by_prov["410000"], by_prov["510000"], by_prov["230000"]) > max(
        by_prov["110000"], by_prov["310000"], by_prov["440000"], by_prov["460000"])


def test_filings(data):
    regions = {r["admdvs"] for r in data["regions"]}
    insts = {i["fixmedins_code"]: i for i in data["institutions"]}
    persons = {p["psn_no"]: p for p in data["persons"]}
    filings = data["filings"]
    fields = {"filing_id", "psn_no", "kind", "dest_admdvs", "fixmedins_codes", "valid_from",
              "valid_to", "status"}
    ids = set()
    per_person = collections.Counter()
    for f in filings:
        assert set(f) == fields
        assert f["filing_id"] not in ids
        ids.add(f["filing_id"])
        p = persons[f["psn_no"]]
        per_person[f["psn_no"]] += 1
        assert f["kind"] in LONG_TERM | TEMPORARY
        dest = f["dest_admdvs"]
        assert dest in regions and pooling_code(dest) == dest
        assert province_code(dest) != province_code(p["insuplc_admdvs"])
        assert f["status"] in ("active", "revoked")
        assert is_date(f["valid_from"])
        assert f["valid_to"] == 0 or (is_date(f["valid_to"]) and f["valid_to"] >= f["valid_from"])
        for code in f["fixmedins_codes"]:
            assert code in insts
            inst_region = insts[code]["admdvs"]
            assert dest in (inst_region, province_code(inst_region))
        assert len(set(f["fixmedins_codes"])) == len(f["fixmedins_codes"]) <= 3
        if f["kind"] in TEMPORARY:
            assert f["valid_to"] != 0
            assert days_inclusive(f["valid_from"], f["valid_to"]) <= LIMITS["MAX_TEMPORARY_FILING_DAYS"]
            assert 20260101 <= f["valid_from"] <= 20261231
        else:
            assert 20190101 <= f["valid_from"] <= 20261122
        if f["kind"] == "referral":
            assert len(f["fixmedins_codes"]) == 1
    assert set(per_person) == set(persons)  # everyone is filed
    multi = sum(1 for n in per_person.values() if n > 1) / len(persons)
    assert 0.03 < multi < 0.12
    assert any(f["status"] == "revoked" for f in filings)
    # Every person has an active filing.
    active = {f["psn_no"] for f in filings if f["status"] == "active"}
    assert active == set(persons)
    # Most temporary filings are valid on as_of.
    temps = [f for f in filings if f["kind"] in TEMPORARY and f["status"] == "active"]
    valid_now = sum(1 for f in temps if f["valid_from"] <= 20261122 <= f["valid_to"])
    assert valid_now / len(temps) > 0.7


def test_flows_are_realistic(data):
    persons = {p["psn_no"]: p for p in data["persons"]}
    filings = [f for f in data["filings"] if f["status"] == "active"]
    retiree_lt = collections.Counter(
        province_code(f["dest_admdvs"]) for f in filings
        if f["kind"] in LONG_TERM and persons[f["psn_no"]]["person_type"] == "retired")
    sunny = retiree_lt["460000"] + retiree_lt["440000"] + retiree_lt["530000"]
    total = sum(retiree_lt.values())
    assert sunny / total > 0.4
    assert retiree_lt["460000"] == max(retiree_lt.values())
    referrals = collections.Counter(province_code(f["dest_admdvs"]) for f in filings if f["kind"] == "referral")
    top = referrals["110000"] + referrals["310000"] + referrals["440000"]
    assert top / sum(referrals.values()) > 0.7
    workers = collections.Counter(
        province_code(f["dest_admdvs"]) for f in filings if f["kind"] == "stationed_work")
    assert {k for k, _n in workers.most_common(4)} <= {"110000", "310000", "440000", "320000", "330000"}
    kinds = collections.Counter(f["kind"] for f in filings)
    assert set(kinds) == LONG_TERM | TEMPORARY
    assert kinds["stationed_work"] > 0
    assert all(persons[f["psn_no"]]["insutype"] == "310" for f in filings
               if f["kind"] in ("stationed_work", "retired_relocation"))


def test_demo_entities_stable(tmp_path, data):
    """The documented demo entities do not depend on seed or size."""
    generate(str(tmp_path / "d"), persons=10, seed=7, institutions=1000)
    small = {s: load(str(tmp_path / "d"), s) for s in ("persons", "filings", "institutions")}
    for stem in ("persons", "filings"):
        assert data[stem][:5] == small[stem][:5]
    big = {i["fixmedins_code"]: i for i in data["institutions"]}
    little = {i["fixmedins_code"]: i for i in small["institutions"]}
    for code in ("H11010000001", "H31010000001", "H44010000001", "H51010000001",
                 "P46010000001", "C46020000001"):
        assert big[code] == little[code]
    assert big["H11010000001"] == {"fixmedins_code": "H11010000001", "name": "北京协和医院",
                                   "admdvs": "110100", "kind": "hospital", "level": 3,
                                   "inpatient": True, "outpatient": True,
                                   "chronic_diseases": ["M03900", "M01600", "M07803"]}
    assert data["persons"][0]["psn_no"] == "2100000000000001"
    assert data["persons"][0]["name"] == "王建国"
    assert data["filings"][2]["fixmedins_codes"] == ["H11010000001"]


# ------------------------------------------------------------------ SPEC §10
def test_accounts_and_family_links(data):
    persons = data["persons"]
    by_psn = {p["psn_no"]: p for p in persons}
    employees = [p for p in persons if p["insutype"] == "310"]
    residents = [p for p in persons if p["insutype"] == "390"]
    assert not any("acct_balance_fen" in p for p in residents)              # residents have no personal account
    with_account = [p["acct_balance_fen"] for p in employees if "acct_balance_fen" in p]
    assert 0.85 < len(with_account) / len(employees) < 0.99
    assert 2_000_00 < sum(with_account) // len(with_account) < 12_000_00     # an average of ¥2,000–12,000
    linked = [p for p in persons if "mulaid_psn_nos" in p]
    assert 0.02 < len(linked) / len(persons) < 0.15
    for p in linked:
        (relative,) = p["mulaid_psn_nos"]
        assert relative != p["psn_no"] and by_psn[relative]["insutype"] == "310"
        assert pooling_code(by_psn[relative]["insuplc_admdvs"]) == pooling_code(p["insuplc_admdvs"])


def test_chronic_diseases_among_filed_persons(data):
    persons = data["persons"]
    chronic = {p["psn_no"] for p in persons if "chronic_diseases" in p}
    retired = [p for p in persons if p["person_type"] == "retired"]
    in_service = [p for p in persons if p["person_type"] == "in_service"]
    share = lambda group: sum(p["psn_no"] in chronic for p in group) / len(group)  # noqa: E731
    assert 0.15 < share(retired) < 0.3 and share(in_service) < 0.12
    # relocated retirees in 海南/云南 are chronic patients more often than relocated retirees elsewhere
    relocated = {f["psn_no"]: f["dest_admdvs"][:2] for f in data["filings"]
                 if f["kind"] == "retired_relocation" and f["status"] == "active"}
    south = [p for p, d in relocated.items() if d in ("46", "53")]
    other = [p for p, d in relocated.items() if d not in ("46", "53")]
    assert sum(p in chronic for p in south) / len(south) > 1.3 * sum(p in chronic for p in other) / len(other)


def test_institutions_and_policies_for_chronic_diseases(data):
    enabled = [i for i in data["institutions"] if i.get("chronic_diseases")]
    assert enabled and not any(i["kind"] == "pharmacy" for i in enabled)
    assert sum(i["level"] >= 2 for i in enabled) / len(enabled) > 0.6      # mostly level 2–3 hospitals
    level3 = [i for i in data["institutions"] if i["level"] == 3 and i["outpatient"]]
    assert sum("M07803" in i.get("chronic_diseases", ()) for i in level3) / len(level3) > 0.5
    blocks = [p["chronic"] for p in data["policies"] if "chronic" in p]
    assert 0.9 < len(blocks) / len(data["policies"]) < 1
    assert all("default" in b and "M07803" in b for b in blocks)
