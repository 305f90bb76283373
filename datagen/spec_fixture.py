"""The SPEC fixture: a tiny, fully specified reference data set (SPEC §3 and §5.6).

Tests and benchmarks of the core and the gateway load it; it is a data set
like the national one, so it lives beside the generator.

``write_spec_dataset(dir)`` writes regions, institutions, the SPEC §5.6
catalogue (in the treatment provinces), the SPEC §3 policy (pooling region
210100, insutype 310 and 390), persons and filings as JSONL into ``dir`` and
returns the chosen codes, so tests can name things instead of repeating
literals.  Every person is insured in 沈阳市和平区 (210102, pooling 210100,
province 210000) and treated in 海南 (460000), 广东 (440000) or 北京 (110000).

Dates: the policy is effective from 20260101; use ``DATE`` (20260315) as
"today" in tests.
"""
from __future__ import annotations

import copy
import json
import os

from core import certno_check_char

DATE = 20260315
YEAR = 2026


def make_certno(first17: str) -> str:
    """A GB 11643 resident ID number: 17 digits plus their mod-11 check character."""
    return first17 + certno_check_char(first17)


# SPEC §3, verbatim
SPEC_POLICY = {
    "admdvs": "210100", "insutype": "310", "effective_from": 20260101,
    "inpatient": {"deductible_fen": {"1": 30000, "2": 60000, "3": 120000},
                  "ratio_bp": {"1": 9000, "2": 8500, "3": 8000},
                  "retired_bonus_bp": 500, "annual_cap_fen": 30000000,
                  "subsequent_deductible_bp": 5000},
    "outpatient": {"annual_deductible_fen": 50000,
                   "ratio_bp": {"1": 7000, "2": 6000, "3": 5000},
                   "retired_bonus_bp": 1000, "annual_cap_fen": 400000},
    "critical_illness": {"threshold_fen": 1500000,
                         "tiers": [{"up_to_fen": 10000000, "ratio_bp": 6000},
                                   {"up_to_fen": None, "ratio_bp": 7000}],
                         "annual_cap_fen": 40000000},
    "assistance": {"ratio_bp": 7000, "annual_cap_fen": 5000000},
    "reduction_bp": {"referral": 0, "emergency": 0, "other_temporary": 1000},
    "high_cost_fen": 20000000,
}

# SPEC §10.2's chronic block, added to the 310 policy (the 390 policy has none: check 12)
SPEC_CHRONIC = {
    "default": {"annual_deductible_fen": 30000, "ratio_bp": {"1": 8000, "2": 7500, "3": 7000},
                "retired_bonus_bp": 500, "annual_cap_fen": 500000},
    "M07803": {"annual_deductible_fen": 0, "ratio_bp": {"1": 9000, "2": 9000, "3": 8500},
               "retired_bonus_bp": 0, "annual_cap_fen": 8000000},
}

# SPEC §5.6 catalogue: code -> (class, selfpay_bp, price_cap_fen)
SPEC_CATALOG = {
    "XA01": ("A", 0, 0),
    "XB02": ("B", 1000, 0),
    "XB03": ("B", 2000, 5000),
    "XC04": ("C", 0, 0),
    "T001": ("A", 0, 0),
}
NOT_IN_CATALOG = "ZZ99"

REGIONS = {
    "110000": "北京市", "110100": "北京市市辖区",
    "210000": "辽宁省", "210100": "沈阳市", "210102": "和平区",
    "440000": "广东省", "440100": "广州市",
    "460000": "海南省", "460100": "海口市", "460200": "三亚市",
}

# name -> (code, name, admdvs, kind, level, inpatient, outpatient)
INSTITUTIONS = {
    "hk_l3": ("H46010000001", "海南省人民医院", "460100", "hospital", 3, True, True),
    "hk_l2": ("H46010000002", "海口市人民医院", "460100", "hospital", 2, True, True),
    "hk_l1": ("H46010000003", "海口市秀英区人民医院", "460100", "hospital", 1, True, True),
    "hk_no_ip": ("H46010000004", "海口市骨科门诊部", "460100", "hospital", 2, False, True),
    "hk_clinic": ("C46010000001", "海口市龙华区社区卫生服务中心", "460100", "clinic", 1, False, True),
    "hk_pharmacy": ("P46010000001", "海口市大药房", "460100", "pharmacy", 1, False, True),
    "sy_l3": ("H46020000001", "三亚市人民医院", "460200", "hospital", 3, True, True),
    "gz_l3": ("H44010000001", "广东省人民医院", "440100", "hospital", 3, True, True),
    "gz_l2": ("H44010000002", "广州市第一人民医院", "440100", "hospital", 2, True, True),
    "bj_l3": ("H11010000001", "北京协和医院", "110100", "hospital", 3, True, True),
    "sy_home": ("H21010000001", "中国医科大学附属第一医院", "210100", "hospital", 3, True, True),
}

# name -> person row fields; every person insured in 210102
PERSONS = {
    # E1/E2: retired, relocated to 海南 (whole province), employee insurance
    "retired": dict(psn_no="P210102000001", certno=make_certno("21010219500101001"), name="张建国",
                    insutype="310", person_type="retired", status="active", assistance=False,
                    card_no="C21000000001", card_version="3.0", chronic_diseases=["M01600", "M03900"]),
    # E3: in service, medical assistance, other temporary to 海口, resident insurance
    "assist": dict(psn_no="P210102000002", certno=make_certno("21010219800202002"), name="李秀英",
                   insutype="390", person_type="in_service", status="active", assistance=True,
                   card_no="C21000000002", card_version="2.0", chronic_diseases=["M01600"]),
    # E4: in service, long-term residence in 海南
    "in_service": dict(psn_no="P210102000003", certno=make_certno("21010219850303003"), name="王伟",
                       insutype="310", person_type="in_service", status="active", assistance=False,
                       card_no="C21000000003", card_version="3.0", chronic_diseases=["M07803"]),
    # E5: in service, referral to 海口 level-1 hospital (named)
    "referral": dict(psn_no="P210102000004", certno=make_certno("21010219700404004"), name="刘洋",
                     insutype="310", person_type="in_service", status="active", assistance=False,
                     card_no="C21000000004", card_version="3.0"),
    # suspended insurance, filed for 海南
    "suspended": dict(psn_no="P210102000005", certno=make_certno("21010219600505005"), name="陈静",
                      insutype="310", person_type="in_service", status="suspended", assistance=False,
                      card_no="C21000000005", card_version="3.0"),
    # known person without any filing
    "unfiled": dict(psn_no="P210102000006", certno=make_certno("21010219900606006"), name="杨帆",
                    insutype="390", person_type="in_service", status="active", assistance=False,
                    card_no="C21000000006", card_version="1.0"),
    # several filings for 广东: choice by smallest reduction, then latest valid_from
    "multi": dict(psn_no="P210102000007", certno=make_certno("21010219750707007"), name="赵敏",
                  insutype="310", person_type="in_service", status="active", assistance=False,
                  card_no="C21000000007", card_version="3.0"),
    # E6 (SPEC §10.1): E1's circumstances, with a personal account and a family account that may pay (共济)
    "acct": dict(psn_no="P210102000008", certno=make_certno("21010219520808008"), name="孙桂兰",
                 insutype="310", person_type="retired", status="active", assistance=False,
                 card_no="C21000000008", card_version="3.0", acct_balance_fen=100000,
                 mulaid_psn_nos=["P210102000009"]),
    # the family member whose account pays for "acct" (not filed: their account is at home)
    "family": dict(psn_no="P210102000009", certno=make_certno("21010219800909009"), name="孙明",
                   insutype="310", person_type="in_service", status="active", assistance=False,
                   card_no="C21000000009", card_version="3.0", acct_balance_fen=300000),
}
for _p in PERSONS.values():
    _p["insuplc_admdvs"] = "210102"

# name -> filing row
FILINGS = {
    "retired": dict(filing_id="F0001", psn_no="P210102000001", kind="retired_relocation",
                    dest_admdvs="460000", fixmedins_codes=[], valid_from=20250601, valid_to=0),
    "assist": dict(filing_id="F0002", psn_no="P210102000002", kind="other_temporary",
                   dest_admdvs="460100", fixmedins_codes=[], valid_from=20260101, valid_to=20261231),
    "in_service": dict(filing_id="F0003", psn_no="P210102000003", kind="long_term_residence",
                       dest_admdvs="460000", fixmedins_codes=[], valid_from=20260101, valid_to=0),
    "referral": dict(filing_id="F0004", psn_no="P210102000004", kind="referral",
                     dest_admdvs="460100", fixmedins_codes=["H46010000003"],
                     valid_from=20260201, valid_to=20260731),
    "suspended": dict(filing_id="F0005", psn_no="P210102000005", kind="long_term_residence",
                      dest_admdvs="460000", fixmedins_codes=[], valid_from=20250101, valid_to=0),
    # "multi": other_temporary (reduction 1000) and emergency (0) and stationed_work (0) for 广东,
    # plus a revoked and an expired filing
    "multi_other": dict(filing_id="F0007A", psn_no="P210102000007", kind="other_temporary",
                        dest_admdvs="440100", fixmedins_codes=[], valid_from=20260301, valid_to=20260630),
    "multi_work": dict(filing_id="F0007B", psn_no="P210102000007", kind="stationed_work",
                       dest_admdvs="440000", fixmedins_codes=[], valid_from=20250101, valid_to=0),
    "multi_emergency": dict(filing_id="F0007C", psn_no="P210102000007", kind="emergency",
                            dest_admdvs="440000", fixmedins_codes=[], valid_from=20260310, valid_to=20260410),
    "multi_revoked": dict(filing_id="F0007D", psn_no="P210102000007", kind="long_term_residence",
                          dest_admdvs="110000", fixmedins_codes=[], valid_from=20250101, valid_to=0,
                          status="revoked"),
    "multi_expired": dict(filing_id="F0007E", psn_no="P210102000007", kind="other_temporary",
                          dest_admdvs="460000", fixmedins_codes=[], valid_from=20250101, valid_to=20251231),
    "acct": dict(filing_id="F0008", psn_no="P210102000008", kind="retired_relocation",
                 dest_admdvs="460000", fixmedins_codes=[], valid_from=20250601, valid_to=0),
}
for _f in FILINGS.values():
    _f.setdefault("status", "active")

TREATMENT_PROVINCES = ("110000", "440000", "460000", "210000")

# SPEC §10.5: the insured province's electronic-voucher key (a test key, published here on purpose)
VOUCHER_KEYS = {"210000": "6b65792d6f662d6c69616f6e696e672d666f722d74657374732d6f6e6c792121"}


def policy_rows() -> list[dict]:
    """The SPEC §3 policy for 210100, once as 310 and once as 390."""
    p310 = copy.deepcopy(SPEC_POLICY)
    p390 = copy.deepcopy(SPEC_POLICY)
    p390["insutype"] = "390"
    p310["chronic"] = copy.deepcopy(SPEC_CHRONIC)
    return [p310, p390]


def catalog_rows() -> list[dict]:
    rows = []
    for prov in TREATMENT_PROVINCES:
        for code, (cls, selfpay, cap) in SPEC_CATALOG.items():
            rows.append({"province": prov, "code": code, "name": f"项目{code}",
                         "category": "treatment" if code.startswith("T") else "drug",
                         "class": cls, "selfpay_bp": selfpay, "price_cap_fen": cap})
    return rows


# institution name -> the chronic diseases it is open for (SPEC §10.2)
INSTITUTION_CHRONIC = {"hk_l3": ["M07803", "M01600"], "hk_l2": ["M01600"]}


def institution_rows() -> list[dict]:
    rows = []
    for name, (c, n, a, k, lv, ip, op) in INSTITUTIONS.items():
        rows.append(dict(fixmedins_code=c, name=n, admdvs=a, kind=k, level=lv, inpatient=ip, outpatient=op))
        if name in INSTITUTION_CHRONIC:
            rows[-1]["chronic_diseases"] = INSTITUTION_CHRONIC[name]
    return rows


def write_jsonl(path: str, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_spec_dataset(dirpath, manifest: dict | None = None) -> dict:
    """Write the dataset into dirpath; return the names of things.

    Returned keys: ``inst`` (name -> fixmedins_code), ``psn`` (name -> psn_no),
    ``filing`` (name -> filing_id), ``certno`` (name -> certno), ``date``,
    ``year``, and ``dir``.
    """
    dirpath = os.fspath(dirpath)
    os.makedirs(dirpath, exist_ok=True)
    write_jsonl(os.path.join(dirpath, "regions.jsonl"),
                [{"admdvs": k, "name": v} for k, v in REGIONS.items()])
    write_jsonl(os.path.join(dirpath, "institutions.jsonl"), institution_rows())
    write_jsonl(os.path.join(dirpath, "catalog.jsonl"), catalog_rows())
    write_jsonl(os.path.join(dirpath, "policies.jsonl"), policy_rows())
    write_jsonl(os.path.join(dirpath, "persons.jsonl"), PERSONS.values())
    write_jsonl(os.path.join(dirpath, "filings.jsonl"), FILINGS.values())
    write_jsonl(os.path.join(dirpath, "voucher_keys.jsonl"), [{"province": p, "key_hex": k}
                                                              for p, k in VOUCHER_KEYS.items()])
    with open(os.path.join(dirpath, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest if manifest is not None else {"name": "spec-fixture", "seed": 0}, f)
    return {
        "dir": dirpath,
        "inst": {k: v[0] for k, v in INSTITUTIONS.items()},
        "psn": {k: v["psn_no"] for k, v in PERSONS.items()},
        "certno": {k: v["certno"] for k, v in PERSONS.items()},
        "filing": {k: v["filing_id"] for k, v in FILINGS.items()},
        "date": DATE,
        "year": YEAR,
    }


def load_spec_index(dirpath, **index_kwargs):
    """Write the dataset and load it into a fresh Index; returns (index, names)."""
    from core import Index

    names = write_spec_dataset(dirpath)
    ix = Index(**index_kwargs)
    ix.load_dir(names["dir"])
    return ix, names
