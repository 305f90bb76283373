"""The one validation path (core/validate.pxi): its Python faces, and that the loader,
eligibility, benefit and core.limits all refuse through it."""
from __future__ import annotations

import json

import pytest

from core import Index, InvariantError, LoadError, YidiError, _core, limits
from datagen.spec_fixture import DATE, INSTITUTIONS, PERSONS, load_spec_index, make_certno, write_spec_dataset
from builders import DRUG_A, TREATMENT_A

MAX_ID_LEN = _core.LIMITS["MAX_ID_LEN"]
MAX_NAME_BYTES = _core.LIMITS["MAX_NAME_BYTES"]
MAX_LINES = _core.LIMITS["MAX_LINES"]
MAX_PRICE = _core.LIMITS["MAX_UNIT_PRICE_FEN"]
MAX_QTY = _core.LIMITS["MAX_QTY_MILLI"]

# Names no clerk's screen, log line or file should receive: C0 controls, DEL, C1 controls.
BAD_NAMES = ["张\x00三", "张三\n", "\t张三", "张\x1b[31m三", "张三\x7f", "张\x85三", "张\x9b三"]


def refused(fn, *args) -> YidiError:
    with pytest.raises(YidiError) as e:
        fn(*args)
    return e.value


def test_limits_is_a_face_of_the_core():
    """core.limits re-exports the core's checks (no second implementation to drift)."""
    for name in ("check_id", "check_date", "check_year", "is_calendar_date", "check_line_count", "line_amount_fen"):
        assert getattr(limits, name) is getattr(_core, name), name
    assert limits.LIMITS == _core.LIMITS and limits.MAX_LINES_PER_VISIT == MAX_LINES


# ------------------------------------------------------------------ identifiers
@pytest.mark.parametrize("value", ["P1", "H46010000001", "a-b_c.d/e", "X" * MAX_ID_LEN])
def test_check_id_accepts(value):
    _core.check_id(value, "人员编号")


@pytest.mark.parametrize("value", ["", " ", "P 1", "P1\n", "张三", "X" * (MAX_ID_LEN + 1), "P\x00", 12, None, b"P1"])
def test_check_id_refuses(value):
    e = refused(_core.check_id, value, "人员编号")
    assert e.reason == "INVALID_ARGUMENT"
    assert e.message.startswith("人员编号「") and f"1–{MAX_ID_LEN} 位" in e.message
    e = refused(_core.check_id, value, "请求ID", "INVALID_REQUEST_ID")
    assert e.reason == "INVALID_REQUEST_ID"


def test_check_id_never_echoes_more_than_max_id_len():
    e = refused(_core.check_id, "A" * 10_000, "人员编号")
    assert "A" * MAX_ID_LEN in e.message and "A" * (MAX_ID_LEN + 1) not in e.message


# ------------------------------------------------------------------ dates
@pytest.mark.parametrize("d, ok", [
    (20260315, True), (20240229, True), (20000229, True), (19000101, True), (21001231, True),
    (20230229, False), (19000229, False), (20260230, False), (20261301, False), (20260001, False),
    (20260100, False), (18991231, False), (21010101, False), (0, False), (2026031, False),
    (True, False), ("20260315", False), (20260315.0, False), (None, False), (10**30, False), (-20260315, False),
])
def test_calendar_dates(d, ok):
    assert _core.is_calendar_date(d) is ok
    if ok:
        _core.check_date(d, "入院日期")
    else:
        e = refused(_core.check_date, d, "入院日期")
        assert e.reason == "INVALID_DATE" and e.message.startswith("入院日期 ")


def test_check_year():
    _core.check_year(1900)
    _core.check_year(2100)
    for y in (1899, 2101, 0, "2026", None, 2026.0, True):
        assert refused(_core.check_year, y).reason == "INVALID_DATE"


def test_every_date_refusal_is_the_same_rule(tmp_path):
    """Loader, eligibility, benefit, accumulators and limits refuse the same non-date."""
    ix, n = load_spec_index(tmp_path)
    psn, inst = n["psn"]["retired"], n["inst"]["hk_l3"]
    assert refused(ix.eligibility, psn, inst, True, 20260229).reason == "INVALID_DATE"
    assert refused(ix.benefit, psn, inst, "retired_relocation", True, 20260229, [(TREATMENT_A, 1, 1000)]).reason == \
        "INVALID_DATE"
    assert refused(ix.accumulators, psn, 2101).reason == "INVALID_DATE"
    assert refused(limits.check_date, 20260229, "结算日期").reason == "INVALID_DATE"
    e = refused(ix.check_filing, dict(_filing(), valid_from=20260229))
    assert e.reason == "INVALID_DATE" and e.metadata == {"field": "valid_from"}


def _filing():
    return dict(filing_id="F-NEW", psn_no=PERSONS["retired"]["psn_no"], kind="long_term_residence",
                dest_admdvs="460000", fixmedins_codes=[], valid_from=20260101, valid_to=0, status="active")


# ------------------------------------------------------------------ fee lines
GOOD_LINE = dict(sn="1", code=DRUG_A, name="阿莫西林胶囊 0.25g×24粒", unit_price_fen=1250, qty_milli=20000,
                 fee_date=20260315)


def _line(**changes):
    d = dict(GOOD_LINE, **changes)
    return d["sn"], d["code"], d["name"], d["unit_price_fen"], d["qty_milli"], d["fee_date"]


def test_check_line_accepts():
    _core.check_line(*_line())
    _core.check_line(*_line(name="", fee_date=0))           # a line may be unnamed and undated
    _core.check_line(*_line(unit_price_fen=0, qty_milli=MAX_QTY))
    _core.check_line(*_line(unit_price_fen=MAX_PRICE, qty_milli=1))
    _core.check_line(*_line(name="药" * (MAX_NAME_BYTES // 3)))


@pytest.mark.parametrize("changes, reason, fragment", [
    (dict(sn=""), "INVALID_ARGUMENT", "费用明细流水号"),
    (dict(sn="1 2"), "INVALID_ARGUMENT", "费用明细流水号"),
    (dict(code=""), "INVALID_CODE", "明细 1 的项目编码"),
    (dict(code="X Y"), "INVALID_CODE", "明细 1 的项目编码"),
    (dict(unit_price_fen=-1), "INVALID_PRICE", "明细 1 的单价 -1 分"),
    (dict(unit_price_fen=MAX_PRICE + 1), "INVALID_PRICE", "单价"),
    (dict(unit_price_fen=1.5), "INVALID_PRICE", "单价"),
    (dict(unit_price_fen=True), "INVALID_PRICE", "单价"),
    (dict(qty_milli=0), "INVALID_QUANTITY", "明细 1 的数量 0"),
    (dict(qty_milli=-5), "INVALID_QUANTITY", "数量"),
    (dict(qty_milli=MAX_QTY + 1), "INVALID_QUANTITY", "数量"),
    (dict(fee_date=20260230), "INVALID_DATE", "明细 1 的费用日期"),
    (dict(name="药" * (MAX_NAME_BYTES // 3 + 1)), "INVALID_ARGUMENT", "项目名称"),
    (dict(name=None), "INVALID_ARGUMENT", "项目名称"),
    (dict(name="\ud800"), "INVALID_ARGUMENT", "项目名称"),
])
def test_check_line_refuses(changes, reason, fragment):
    e = refused(_core.check_line, *_line(**changes))
    assert e.reason == reason and fragment in e.message, e.message


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_line_refuses_control_characters_without_echoing_the_name(name):
    e = refused(_core.check_line, *_line(name=name))
    assert e.reason == "INVALID_ARGUMENT" and "控制字符" in e.message
    assert name not in e.message and "张" not in e.message


def test_limits_check_line_keeps_the_engines_argument_order():
    assert limits.check_line is _core.check_line  # the Python face re-exports the core's one rule
    limits.check_line("1", DRUG_A, "阿莫西林", 1250, 20000, 20260315)
    assert refused(limits.check_line, "1", DRUG_A, "", -1, 20000, 0).reason == "INVALID_PRICE"
    assert refused(limits.check_line, "1", DRUG_A, "a\x00", 1, 1, 0).reason == "INVALID_ARGUMENT"


def test_benefit_refuses_a_line_as_check_line_does(tmp_path):
    ix, n = load_spec_index(tmp_path)
    for code, price, qty in [(DRUG_A, -1, 1000), (DRUG_A, 1, 0), ("", 1, 1000), (DRUG_A, 1.5, 1000)]:
        a = refused(ix.benefit, n["psn"]["retired"], n["inst"]["hk_l3"], "retired_relocation", True, DATE,
                    [(code, price, qty)])
        b = refused(_core.check_line, "1", code, "", price, qty, 0)
        assert a.reason == b.reason


def test_check_line_count():
    _core.check_line_count(MAX_LINES, "一次住院")
    e = refused(_core.check_line_count, MAX_LINES + 1, "一次住院")
    assert e.reason == "TOO_MANY_LINES"
    assert e.message == f"一次住院的费用明细不能超过 {MAX_LINES} 条，本次 {MAX_LINES + 1} 条。"


def test_line_amount_fen():
    """SPEC §5.1: (unit_price_fen * qty_milli + 500) // 1000, half up; exact at the bounds."""
    assert _core.line_amount_fen(1250, 20000) == 25000          # DRUG_A of E1
    assert _core.line_amount_fen(9999, 2000) == 19998           # ZZ99 of E1
    assert _core.line_amount_fen(8800, 3500) == 30800
    assert _core.line_amount_fen(1, 500) == 1 and _core.line_amount_fen(1, 499) == 0
    assert _core.line_amount_fen(7, 0) == 0                      # refunded to zero
    assert _core.line_amount_fen(MAX_PRICE, MAX_QTY) == (MAX_PRICE * MAX_QTY + 500) // 1000
    for price, qty in ((-1, 1000), (MAX_PRICE + 1, 1000), (1, -1), (1, MAX_QTY + 1), (1.0, 1000), ("1", 1000)):
        with pytest.raises(InvariantError):
            _core.line_amount_fen(price, qty)


# ------------------------------------------------------------------ person conflicts
def test_check_person_conflicts(tmp_path):
    ix, _ = load_spec_index(tmp_path)
    retired = PERSONS["retired"]
    ix.check_person_conflicts(dict(retired))                              # the same person again
    ix.check_person_conflicts(dict(retired, name="张建国", status="suspended"))
    ix.check_person_conflicts(dict(retired, psn_no="P-NEW", certno=make_certno("11010119900101123")))
    e = refused(ix.check_person_conflicts, dict(retired, certno=make_certno("11010119900101123")))
    assert (e.reason, e.message) == ("PERSON_CONFLICT", "人员编号已登记了另一个身份证号，请核对人员信息。")
    e = refused(ix.check_person_conflicts, dict(retired, psn_no="P-NEW"))
    assert (e.reason, e.message) == ("PERSON_CONFLICT", "该身份证号已登记在另一个人员编号下，请核对人员信息。")
    assert retired["certno"] not in str(e) and retired["certno"] not in str(e.metadata)
    # the row itself is validated first
    assert refused(ix.check_person_conflicts, dict(retired, status="dead")).reason == "INVALID_ENUM"
    assert ix.get_person("P-NEW") is None                                  # checking changes nothing


def test_put_person_shares_the_certno_rule(tmp_path):
    ix, _ = load_spec_index(tmp_path)
    e = refused(ix.put_person, dict(PERSONS["unfiled"], psn_no="P-NEW"))
    assert e.message == "该身份证号已登记在另一个人员编号下，请核对人员信息。"


@pytest.mark.parametrize("row, message", [
    (1, "人员编号已登记了另一个身份证号"),     # psn_no of row 1, another certno
    (2, "该身份证号已登记在另一个人员编号下"),   # certno of row 1, another psn_no
    (3, "重复"),                               # row 1 exactly, twice
])
def test_load_refuses_person_conflicts_with_the_same_messages(tmp_path, row, message):
    write_spec_dataset(tmp_path)
    rows = list(PERSONS.values())
    first = rows[0]
    dup = {1: dict(first, certno=make_certno("11010119900101123")), 2: dict(first, psn_no="P-NEW"),
           3: dict(first)}[row]
    _write(tmp_path / "persons.jsonl", rows + [dup])
    with pytest.raises(LoadError) as e:
        Index().load_dir(str(tmp_path))
    assert (e.value.file, e.value.line) == ("persons.jsonl", len(rows) + 1)
    assert "PERSON_CONFLICT" in e.value.reason and message in e.value.reason


# ------------------------------------------------------------------ names
def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_person_name_with_control_characters_refused_at_runtime(tmp_path, name):
    ix, _ = load_spec_index(tmp_path)
    for call in (ix.check_person, ix.put_person, ix.check_person_conflicts):
        e = refused(call, dict(PERSONS["retired"], name=name))
        assert e.reason == "INVALID_ARGUMENT" and e.metadata == {"field": "name"} and name not in e.message
    assert ix.get_person(PERSONS["retired"]["psn_no"])["name"] == PERSONS["retired"]["name"]


@pytest.mark.parametrize("file, name_of", [
    ("persons.jsonl", lambda rows: rows[2]),
    ("institutions.jsonl", lambda rows: rows[2]),
    ("catalog.jsonl", lambda rows: rows[2]),
    ("regions.jsonl", lambda rows: rows[2]),
])
@pytest.mark.parametrize("name", ["张\x00三", "张三\r\n", "张\x85三"])
def test_names_with_control_characters_refused_at_load(tmp_path, file, name_of, name):
    write_spec_dataset(tmp_path)
    rows = [json.loads(r) for r in (tmp_path / file).read_text(encoding="utf-8").splitlines()]
    name_of(rows)["name"] = name
    _write(tmp_path / file, rows)
    with pytest.raises(LoadError) as e:
        Index().load_dir(str(tmp_path))
    assert (e.value.file, e.value.line) == (file, 3)
    assert "INVALID_ARGUMENT" in e.value.reason and "控制字符" in e.value.reason and name not in e.value.reason


def test_real_names_load(tmp_path):
    """Names as they are written: CJK, middle dots, spaces, Latin letters, long hospital names."""
    ix, n = load_spec_index(tmp_path)
    for name in ("阿卜杜拉·买买提", "Zhang San", "欧阳 娜娜", "医" * (MAX_NAME_BYTES // 3)):
        ix.put_person(dict(PERSONS["retired"], name=name))
        assert ix.get_person(PERSONS["retired"]["psn_no"])["name"] == name
    assert ix.get_institution(INSTITUTIONS["hk_l3"][0])["name"] == INSTITUTIONS["hk_l3"][1]


def test_checking_rows_does_not_use_up_card_versions(tmp_path):
    """Only stored persons intern their card_version: checked or refused rows leave no trace."""
    ix, _ = load_spec_index(tmp_path)
    retired = PERSONS["retired"]
    for i in range(1000):
        ix.check_person(dict(retired, card_version=f"v{i}"))
        with pytest.raises(YidiError):
            ix.put_person(dict(retired, psn_no=f"P-X{i}", card_version=f"w{i}"))     # someone else's certno
    ix.put_person(dict(retired, card_version="4.0"))
    assert ix.get_person(retired["psn_no"])["card_version"] == "4.0"
