"""SPEC §3 reference data: JSONL loading, validation with file and line, and the index itself."""
from __future__ import annotations

import json
import random

import pytest

from core import Index, LoadError, YidiError
from datagen.spec_fixture import (DATE, FILINGS, PERSONS, SPEC_POLICY, make_certno, load_spec_index,
                                  write_spec_dataset)
from builders import HK_L2, HK_L3, TREATMENT_A


def read_rows(path):
    return [json.loads(row) for row in path.read_text(encoding="utf-8").splitlines() if row.strip()]


def rewrite(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def load_with(tmp_path, file, mutate):
    """Write the spec dataset, let mutate(rows) change one file, and load it."""
    write_spec_dataset(tmp_path)
    rows = read_rows(tmp_path / file)
    mutate(rows)
    rewrite(tmp_path / file, rows)
    ix = Index()
    ix.load_dir(str(tmp_path))
    return ix


def test_loads_everything(tmp_path):
    seen = []
    ix, n = load_spec_index(tmp_path)
    assert ix.counts() == {"regions": 10, "institutions": 11, "catalog_items": 20, "policies": 2,
                           "persons": len(PERSONS), "filings": len(FILINGS)}
    assert ix.meta == {"name": "spec-fixture", "seed": 0}
    ix.meta["x"] = 1
    assert "x" not in ix.meta
    assert ix.region_name("460100") == "海口市" and ix.region_name("999999") is None
    assert ix.region_name("46010") is None
    assert ix.get_institution(n["inst"]["hk_no_ip"]) == {
        "fixmedins_code": "H46010000004", "name": "海口市骨科门诊部", "admdvs": "460100", "kind": "hospital",
        "level": 2, "inpatient": False, "outpatient": True, "chronic_diseases": []}
    assert ix.get_institution("H4601000000") is None
    p = PERSONS["retired"]
    assert ix.get_person(p["psn_no"]) == dict(p, acct_balance_fen=0, mulaid_psn_nos=[])   # SPEC §10 defaults
    assert p["chronic_diseases"] == ["M01600", "M03900"]
    p = PERSONS["acct"]   # SPEC §10.1
    assert ix.get_person(p["psn_no"]) == dict(p, chronic_diseases=[])
    assert ix.get_institution(n["inst"]["hk_l3"])["chronic_diseases"] == ["M07803", "M01600"]
    assert ix.psn_no_by_certno(p["certno"]) == p["psn_no"]
    assert ix.get_filing("F0004") == FILINGS["referral"]
    assert [f["filing_id"] for f in ix.filings_of(n["psn"]["multi"])] == ["F0007B", "F0007D", "F0007E",
                                                                         "F0007A", "F0007C"]
    ix2 = Index()
    ix2.load_dir(str(tmp_path), progress=lambda t, k: seen.append((t, k)))
    assert [t for t, _ in seen] == ["regions", "institutions", "catalog", "policies", "persons", "filings"]
    assert dict(seen)["persons"] == len(PERSONS)
    with pytest.raises(RuntimeError):
        ix2.load_dir(str(tmp_path))      # only into an empty Index


def _bad_certno(rows):
    c = rows[2]["certno"]
    rows[2]["certno"] = c[:17] + ("0" if c[17] != "0" else "1")


def _set(file_rows_index, key, value):
    def m(rows):
        rows[file_rows_index][key] = value
    return m


def _del(i, key):
    def m(rows):
        del rows[i][key]
    return m


def _policy(mut):
    def m(rows):
        mut(rows[1])
    return m


def _long_temporary(rows):
    rows[1]["valid_from"], rows[1]["valid_to"] = 20260101, 20270102   # 367 days inclusive


BAD = [
    ("persons.jsonl", 3, _bad_certno, "INVALID_CERTNO"),
    ("persons.jsonl", 2, _set(1, "person_type", "student"), "INVALID_ENUM"),
    ("persons.jsonl", 4, _del(3, "name"), "name"),
    ("persons.jsonl", 1, _set(0, "assistance", "no"), "assistance"),
    ("persons.jsonl", 2, _set(1, "psn_no", PERSONS["retired"]["psn_no"]), "PERSON_CONFLICT"),
    ("persons.jsonl", 2, _set(1, "certno", PERSONS["retired"]["certno"]), "PERSON_CONFLICT"),
    ("persons.jsonl", 1, _set(0, "insuplc_admdvs", "21010"), "INVALID_CODE"),
    ("policies.jsonl", 2, _policy(lambda p: p["reduction_bp"].update(referral=1001)), "referral"),
    ("policies.jsonl", 2, _policy(lambda p: p["reduction_bp"].update(other_temporary=2001)), "other_temporary"),
    ("policies.jsonl", 2, _policy(lambda p: p["critical_illness"]["tiers"].insert(
        1, {"up_to_fen": 10000000, "ratio_bp": 6500})), "递增"),
    ("policies.jsonl", 2, _policy(lambda p: p["critical_illness"]["tiers"][-1].update(up_to_fen=99999999)),
     "null"),
    ("policies.jsonl", 2, _policy(lambda p: p["inpatient"]["ratio_bp"].update({"2": 10001})), "ratio_bp.2"),
    ("policies.jsonl", 2, _policy(lambda p: p["inpatient"]["deductible_fen"].pop("3")), "deductible_fen.3"),
    ("policies.jsonl", 2, _policy(lambda p: p.update(insutype="320")), "INVALID_ENUM"),
    ("filings.jsonl", 2, _long_temporary, "366"),
    ("filings.jsonl", 2, _set(1, "valid_to", 0), "截止日期"),
    ("filings.jsonl", 1, _set(0, "kind", "holiday"), "INVALID_ENUM"),
    ("filings.jsonl", 3, _set(2, "dest_admdvs", "470000"), "dest_admdvs"),
    ("filings.jsonl", 3, _set(2, "psn_no", "P-NOBODY"), "PERSON_NOT_FOUND"),
    ("filings.jsonl", 3, _set(2, "valid_from", 20260230), "INVALID_DATE"),
    ("filings.jsonl", 2, _set(1, "filing_id", "F0001"), "FILING_CONFLICT"),
    ("institutions.jsonl", 6, _set(5, "inpatient", True), "药店"),
    ("institutions.jsonl", 1, _set(0, "level", 4), "level"),
    ("catalog.jsonl", 1, _set(0, "class", "D"), "INVALID_ENUM"),
    ("catalog.jsonl", 2, _set(1, "selfpay_bp", 10001), "selfpay_bp"),
    ("regions.jsonl", 1, _set(0, "admdvs", "11000X"), "INVALID_CODE"),
]


@pytest.mark.parametrize("file, line, mutate, text", BAD, ids=[f"{b[0]}:{b[3]}" for b in BAD])
def test_bad_row_names_file_and_line(tmp_path, file, line, mutate, text):
    with pytest.raises(LoadError) as e:
        load_with(tmp_path, file, mutate)
    assert (e.value.file, e.value.line) == (file, line)
    assert text in e.value.reason
    for p in PERSONS.values():
        assert p["certno"] not in str(e.value)


def test_bad_json_and_blank_lines(tmp_path):
    write_spec_dataset(tmp_path)
    text = (tmp_path / "regions.jsonl").read_text(encoding="utf-8")
    (tmp_path / "regions.jsonl").write_text("\n" + text + "{not json\n", encoding="utf-8")
    with pytest.raises(LoadError) as e:
        Index().load_dir(str(tmp_path))
    assert e.value.file == "regions.jsonl" and e.value.line == 12
    (tmp_path / "regions.jsonl").write_text("[1]\n", encoding="utf-8")
    with pytest.raises(LoadError) as e:
        Index().load_dir(str(tmp_path))
    assert e.value.line == 1


def test_optional_layers_and_unknown_fields(tmp_path):
    def m(rows):
        for p in rows:
            del p["critical_illness"], p["assistance"], p["inpatient"]["subsequent_deductible_bp"]
            p["some_future_field"] = {"x": 1}
    ix = load_with(tmp_path, "policies.jsonl", m)
    ix.apply_deltas(PERSONS["assist"]["psn_no"], 2026, {"inpatient_admissions": 1}, 1)
    r = ix.benefit(PERSONS["assist"]["psn_no"], HK_L2, "other_temporary", True, DATE,
                   [(TREATMENT_A, 2000000, 1000)])
    assert r["hifmi_pay"] == 0 and r["maf_pay"] == 0
    assert r["act_pay_dedc"] == 60000        # no subsequent_deductible_bp: full deductible again


def test_policy_versions_by_effective_date(tmp_path):
    def m(rows):
        later = json.loads(json.dumps(SPEC_POLICY))
        later["effective_from"] = 20260701
        later["inpatient"]["ratio_bp"]["3"] = 9000
        rows.append(later)
    ix = load_with(tmp_path, "policies.jsonl", m)
    psn = PERSONS["in_service"]["psn_no"]
    a = ix.benefit(psn, HK_L3, "long_term_residence", True, 20260630, [(TREATMENT_A, 100000, 1000)])
    b = ix.benefit(psn, HK_L3, "long_term_residence", True, 20260701, [(TREATMENT_A, 100000, 1000)])
    assert (a["pay_ratio_bp"], a["policy_effective_from"]) == (8000, 20260101)
    assert (b["pay_ratio_bp"], b["policy_effective_from"]) == (9000, 20260701)


# ------------------------------------------------------------------ runtime put / check
def test_check_and_put_person_errors(tmp_path):
    ix, n = load_spec_index(tmp_path)
    base = dict(PERSONS["unfiled"], psn_no="P-NEW", certno=make_certno("11010119900101123"))
    with pytest.raises(YidiError) as e:
        ix.check_person(dict(base, certno=base["certno"][:17] + "Y"))
    assert e.value.reason == "INVALID_CERTNO" and base["certno"][:17] not in e.value.message
    with pytest.raises(YidiError) as e:
        ix.check_person(dict(base, status="dead"))
    assert e.value.reason == "INVALID_ENUM"
    with pytest.raises(YidiError) as e:
        ix.check_person({k: v for k, v in base.items() if k != "card_no"})
    assert e.value.reason == "INVALID_ARGUMENT"
    with pytest.raises(YidiError) as e:
        ix.put_person(dict(base, certno=PERSONS["retired"]["certno"]))
    assert e.value.reason == "PERSON_CONFLICT"
    assert ix.get_person("P-NEW") is None
    ix.put_person(base)
    assert ix.psn_no_by_certno(base["certno"]) == "P-NEW"
    # changing the certno moves the person in the certno table
    new_cert = make_certno("11010119900101999")
    ix.put_person(dict(base, certno=new_cert))
    assert ix.psn_no_by_certno(base["certno"]) is None
    assert ix.psn_no_by_certno(new_cert) == "P-NEW"
    assert ix.counts()["persons"] == len(PERSONS) + 1


def test_check_and_put_filing_errors(tmp_path):
    ix, n = load_spec_index(tmp_path)
    f = dict(FILINGS["retired"])
    with pytest.raises(YidiError) as e:
        ix.put_filing(dict(f, psn_no=n["psn"]["assist"]))
    assert e.value.reason == "FILING_CONFLICT"
    with pytest.raises(YidiError) as e:
        ix.check_filing(dict(f, filing_id="F-NEW", psn_no="P-NOBODY"))
    assert e.value.reason == "PERSON_NOT_FOUND"
    # a person being filed in the same request satisfies the existence check
    ix.check_filing(dict(f, filing_id="F-NEW", psn_no="P-NOBODY"), person={"psn_no": "P-NOBODY"})
    with pytest.raises(YidiError) as e:
        ix.check_filing(dict(f, filing_id="F-NEW", dest_admdvs="990000"))
    assert e.value.reason == "INVALID_CODE"
    with pytest.raises(YidiError) as e:
        ix.check_filing(dict(f, filing_id="F-NEW", kind="emergency", valid_to=0))
    assert e.value.reason == "INVALID_DATE"
    with pytest.raises(YidiError) as e:
        ix.check_filing(dict(f, filing_id="F-NEW", fixmedins_codes=["H1", "bad code"]))
    assert e.value.reason == "INVALID_CODE"
    # replace by filing_id keeps one record
    ix.put_filing(dict(f, fixmedins_codes=[HK_L3, HK_L2]))
    assert ix.get_filing(f["filing_id"])["fixmedins_codes"] == [HK_L3, HK_L2]
    assert len(ix.filings_of(f["psn_no"])) == 1


def test_lookups_are_exact_and_tables_grow(tmp_path):
    """Many runtime inserts (several doublings); prefixes and near-misses never match."""
    ix, n = load_spec_index(tmp_path)
    rng = random.Random(20260315)
    print("seed", 20260315)
    psns = []
    for i in range(30000):
        psn = f"R{i:09d}"
        cert = make_certno(f"{rng.randrange(10**16, 10**17)}")
        if ix.psn_no_by_certno(cert) is not None:
            continue
        ix.put_person(dict(PERSONS["retired"], psn_no=psn, certno=cert, card_no=f"K{i}"))
        ix.put_filing(dict(FILINGS["retired"], filing_id=f"FR{i}", psn_no=psn))
        psns.append((psn, cert))
    for psn, cert in psns[::97]:
        assert ix.psn_no_by_certno(cert) == psn
        assert ix.get_person(psn)["certno"] == cert
        assert ix.get_person(psn + "0") is None and ix.get_person(psn[:-1]) is None
        assert ix.filings_of(psn)[0]["psn_no"] == psn
    assert ix.counts()["persons"] == len(PERSONS) + len(psns)
    assert ix.get_filing("FR") is None and ix.get_filing("FR0")["psn_no"] == "R000000000"
    mem = ix.memory_bytes()
    assert mem["tables"] > 0 and mem["persons"] >= len(psns) * 40
