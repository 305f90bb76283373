"""SPEC §4 eligibility: every reason code with its message, the order of checks, filing choice."""
from __future__ import annotations

import pytest

from core import YidiError
from datagen.spec_fixture import DATE, FILINGS, PERSONS, load_spec_index
from builders import HK_L1, HK_L2


@pytest.fixture
def spec(tmp_path):
    return load_spec_index(tmp_path)


def refuse(ix, *args, **kw) -> YidiError:
    with pytest.raises(YidiError) as e:
        ix.eligibility(*args, **kw)
    assert e.value.status_name  # the reason is in the shared table
    return e.value


def no_certno(err: YidiError) -> None:
    for p in PERSONS.values():
        assert p["certno"] not in err.message
        assert p["certno"] not in str(err.metadata)


def test_ok_returns_the_visit_facts(spec):
    ix, n = spec
    r = ix.eligibility(n["psn"]["retired"], n["inst"]["hk_l3"], True, DATE, card_no="C21000000001",
                       card_version="3.0")
    assert r == {"filing_id": "F0001", "filing_kind": "retired_relocation", "insuplc_admdvs": "210102",
                 "mdtrtarea_admdvs": "460100", "fixmedins_level": 3, "insutype": "310",
                 "person_type": "retired", "assistance": False}
    r = ix.eligibility(n["psn"]["assist"], n["inst"]["hk_pharmacy"], False, DATE)
    assert r["filing_kind"] == "other_temporary" and r["assistance"] is True and r["fixmedins_level"] == 1


def test_1_person_not_filed(spec):
    ix, n = spec
    for psn in (n["psn"]["unfiled"], "P999999999999"):
        e = refuse(ix, psn, n["inst"]["hk_l3"], True, DATE)
        assert e.reason == "PERSON_NOT_FILED"
        assert "线上" in e.message and "即时生效" in e.message and "出院结算前" in e.message
        no_certno(e)


def test_2_insurance_suspended(spec):
    ix, n = spec
    e = refuse(ix, n["psn"]["suspended"], n["inst"]["hk_l3"], True, DATE)
    assert e.reason == "INSURANCE_SUSPENDED" and "暂停" in e.message


def test_3_card_invalid(spec):
    ix, n = spec
    psn = n["psn"]["retired"]
    e = refuse(ix, psn, n["inst"]["hk_l3"], True, DATE, card_no="C99999999999", card_version="3.0")
    assert e.reason == "CARD_INVALID" and "卡号" in e.message and "不一致" in e.message
    assert e.metadata["cause"] == "card_no_mismatch"
    e = refuse(ix, psn, n["inst"]["hk_l3"], True, DATE, card_no="C21000000001", card_version="1.0")
    assert e.reason == "CARD_INVALID" and "版本 1.0" in e.message and "2.0、3.0" in e.message
    assert e.metadata["cause"] == "card_version_not_accepted"
    # no card presented: no card check
    ix.eligibility(psn, n["inst"]["hk_l3"], True, DATE)
    # only a number presented: the person's recorded version is checked (unfiled person has 1.0, but
    # a retired person's 3.0 is accepted)
    ix.eligibility(psn, n["inst"]["hk_l3"], True, DATE, card_no="C21000000001")


def test_3_accepted_card_versions_configurable(tmp_path):
    ix, n = load_spec_index(tmp_path, accepted_card_versions=["3.0"])
    e = refuse(ix, n["psn"]["assist"], n["inst"]["hk_l2"], True, DATE, card_no="C21000000002",
               card_version="2.0")
    assert e.reason == "CARD_INVALID" and "受理版本：3.0" in e.message


def test_4_institution_unknown(spec):
    ix, n = spec
    e = refuse(ix, n["psn"]["retired"], "H00000000000", True, DATE)
    assert e.reason == "INSTITUTION_UNKNOWN" and "H00000000000" in e.message


def test_5_not_cross_province(spec):
    ix, n = spec
    e = refuse(ix, n["psn"]["retired"], n["inst"]["sy_home"], True, DATE)
    assert e.reason == "NOT_CROSS_PROVINCE" and "辽宁省" in e.message and "省内" in e.message


def test_6_institution_not_enabled(spec):
    ix, n = spec
    e = refuse(ix, n["psn"]["retired"], n["inst"]["hk_no_ip"], True, DATE)
    assert e.reason == "INSTITUTION_NOT_ENABLED" and "住院" in e.message and "海口市骨科门诊部" in e.message
    ix.eligibility(n["psn"]["retired"], n["inst"]["hk_no_ip"], False, DATE)   # outpatient is open
    e = refuse(ix, n["psn"]["retired"], n["inst"]["hk_pharmacy"], True, DATE)
    assert e.reason == "INSTITUTION_NOT_ENABLED"


def test_7_not_filed_for_destination_names_destinations(spec):
    ix, n = spec
    e = refuse(ix, n["psn"]["retired"], n["inst"]["gz_l3"], True, DATE)
    assert e.reason == "NOT_FILED_FOR_DESTINATION"
    assert "海南省（460000）" in e.message and "异地安置退休" in e.message and "长期有效" in e.message
    assert "广州市（440100）" in e.message
    no_certno(e)
    # destination 海口 (city) does not cover 三亚
    e = refuse(ix, n["psn"]["assist"], n["inst"]["sy_l3"], True, DATE)
    assert e.reason == "NOT_FILED_FOR_DESTINATION" and "海口市（460100）" in e.message
    assert "2026年1月1日至2026年12月31日" in e.message
    # the province-wide filing covers 三亚
    assert ix.eligibility(n["psn"]["retired"], n["inst"]["sy_l3"], True, DATE)["filing_id"] == "F0001"


def test_7_revoked_expired_not_yet_valid(spec):
    ix, n = spec
    psn = n["psn"]["multi"]
    e = refuse(ix, psn, n["inst"]["bj_l3"], True, DATE)          # only a revoked filing for 北京
    assert e.reason == "NOT_FILED_FOR_DESTINATION" and "已撤销" in e.message
    e = refuse(ix, psn, n["inst"]["hk_l3"], True, DATE)          # the 海南 filing ended 20251231
    assert e.reason == "NOT_FILED_FOR_DESTINATION" and "已过期" in e.message
    # referral filing valid from 20260201: not yet valid in January
    e = refuse(ix, n["psn"]["referral"], n["inst"]["hk_l1"], True, 20260115)
    assert e.reason == "NOT_FILED_FOR_DESTINATION" and "尚未生效" in e.message
    assert ix.eligibility(n["psn"]["referral"], n["inst"]["hk_l1"], True, 20260201)["filing_id"] == "F0004"
    assert ix.eligibility(n["psn"]["referral"], n["inst"]["hk_l1"], True, 20260731)["filing_id"] == "F0004"
    e = refuse(ix, n["psn"]["referral"], n["inst"]["hk_l1"], True, 20260801)
    assert "已过期" in e.message
    # revoking at runtime takes effect at once
    ix.put_filing(dict(FILINGS["retired"], status="revoked"))
    e = refuse(ix, n["psn"]["retired"], n["inst"]["hk_l3"], True, DATE)
    assert e.reason == "NOT_FILED_FOR_DESTINATION" and "已撤销" in e.message


def test_8_institution_not_designated_names_them(spec):
    ix, n = spec
    e = refuse(ix, n["psn"]["referral"], n["inst"]["hk_l2"], True, DATE)
    assert e.reason == "INSTITUTION_NOT_DESIGNATED"
    assert HK_L1 in e.message and "海口市秀英区人民医院" in e.message
    assert HK_L2 in e.message     # the institution asked about


def test_9_duplicate_admission(spec):
    ix, n = spec
    e = refuse(ix, n["psn"]["retired"], n["inst"]["hk_l3"], True, DATE, has_open_inpatient=True)
    assert e.reason == "DUPLICATE_ADMISSION"
    # outpatient is not limited by an open admission
    ix.eligibility(n["psn"]["retired"], n["inst"]["hk_l3"], False, DATE, has_open_inpatient=True)


def test_order_of_checks(spec):
    """Each failing check hides the later ones."""
    ix, n = spec
    bad_card = dict(card_no="WRONG", card_version="3.0")
    # 1 before 2..9
    assert refuse(ix, "NOBODY", "NOWHERE", True, DATE, has_open_inpatient=True, **bad_card).reason == "PERSON_NOT_FILED"
    # 2 before 3, 4
    assert refuse(ix, n["psn"]["suspended"], "NOWHERE", True, DATE, **bad_card).reason == "INSURANCE_SUSPENDED"
    # 3 before 4
    assert refuse(ix, n["psn"]["retired"], "NOWHERE", True, DATE, **bad_card).reason == "CARD_INVALID"
    # 4 before 9
    assert refuse(ix, n["psn"]["retired"], "NOWHERE", True, DATE, has_open_inpatient=True).reason == "INSTITUTION_UNKNOWN"
    # 5 before 6: a same-province institution that is also not enabled
    ix.put_filing(dict(FILINGS["retired"], filing_id="F-X", dest_admdvs="210000"))
    assert refuse(ix, n["psn"]["retired"], n["inst"]["sy_home"], True, DATE).reason == "NOT_CROSS_PROVINCE"
    # 6 before 7: not enabled and not filed for 海口 (multi has no valid 海南 filing)
    assert refuse(ix, n["psn"]["multi"], n["inst"]["hk_no_ip"], True, DATE).reason == "INSTITUTION_NOT_ENABLED"
    # 7 before 9, 8 before 9
    assert refuse(ix, n["psn"]["multi"], n["inst"]["hk_l3"], True, DATE,
                  has_open_inpatient=True).reason == "NOT_FILED_FOR_DESTINATION"
    assert refuse(ix, n["psn"]["referral"], n["inst"]["hk_l2"], True, DATE,
                  has_open_inpatient=True).reason == "INSTITUTION_NOT_DESIGNATED"


def test_filing_choice_smallest_reduction_then_latest(spec):
    ix, n = spec
    psn, gz = n["psn"]["multi"], n["inst"]["gz_l3"]
    # stationed_work (0, from 2025) and emergency (0, from 20260310) and other_temporary (1000): tie on 0 ->
    # the latest valid_from
    assert ix.eligibility(psn, gz, True, DATE)["filing_id"] == "F0007C"
    # before the emergency filing starts: stationed_work (0) beats other_temporary (1000) although later
    assert ix.eligibility(psn, gz, True, 20260305)["filing_id"] == "F0007B"
    # without the long-term one, reduction 0 (emergency) still beats 1000 (other_temporary)
    ix.put_filing(dict(FILINGS["multi_work"], status="revoked"))
    assert ix.eligibility(psn, gz, True, DATE)["filing_id"] == "F0007C"
    ix.put_filing(dict(FILINGS["multi_emergency"], status="revoked"))
    assert ix.eligibility(psn, gz, True, DATE)["filing_kind"] == "other_temporary"


def test_filing_choice_skips_undesignated(spec):
    ix, n = spec
    psn = n["psn"]["referral"]
    # a province-wide other_temporary filing (reduction 1000) next to the named referral (0)
    ix.put_filing(dict(filing_id="F0004B", psn_no=psn, kind="other_temporary", dest_admdvs="460000",
                       fixmedins_codes=[], valid_from=20260101, valid_to=20261231, status="active"))
    assert ix.eligibility(psn, n["inst"]["hk_l1"], True, DATE)["filing_id"] == "F0004"
    assert ix.eligibility(psn, n["inst"]["hk_l2"], True, DATE)["filing_id"] == "F0004B"


def test_invalid_date(spec):
    ix, n = spec
    e = refuse(ix, n["psn"]["retired"], n["inst"]["hk_l3"], True, 20260231)
    assert e.reason == "INVALID_DATE"


def test_runtime_person_and_filing(spec):
    ix, n = spec
    row = dict(PERSONS["unfiled"])
    ix.put_filing(dict(filing_id="F-NEW", psn_no=row["psn_no"], kind="long_term_residence",
                       dest_admdvs="440000", fixmedins_codes=[], valid_from=20260301, valid_to=0, status="active"))
    assert ix.eligibility(row["psn_no"], n["inst"]["gz_l2"], False, DATE)["filing_id"] == "F-NEW"
    # replacing the person keeps the filings and changes attributes
    ix.put_person(dict(row, status="suspended", name="杨帆帆"))
    assert ix.get_person(row["psn_no"])["name"] == "杨帆帆"
    assert refuse(ix, row["psn_no"], n["inst"]["gz_l2"], False, DATE).reason == "INSURANCE_SUSPENDED"
    assert [f["filing_id"] for f in ix.filings_of(row["psn_no"])] == ["F-NEW"]
