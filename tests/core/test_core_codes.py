"""The domain facts the core exports for Python callers: filing kind groups, region codes, certnos."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

import core
from core import (LONG_TERM_KINDS, TEMPORARY_KINDS, YidiError, certno_check_char, certno_valid, pooling_code,
                  province_code)


def test_filing_kinds_split_into_long_term_and_temporary():
    assert LONG_TERM_KINDS == ("retired_relocation", "long_term_residence", "stationed_work")
    assert TEMPORARY_KINDS == ("referral", "emergency", "other_temporary")
    assert LONG_TERM_KINDS + TEMPORARY_KINDS == core._core.FILING_KINDS


@pytest.mark.parametrize("admdvs, province, pooling", [
    ("210102", "210000", "210100"),
    ("210100", "210000", "210100"),
    ("210000", "210000", "210000"),
    ("110105", "110000", "110100"),
    ("532901", "530000", "532900"),
])
def test_province_and_pooling_codes(admdvs, province, pooling):
    assert province_code(admdvs) == province
    assert pooling_code(admdvs) == pooling


@pytest.mark.parametrize("bad", ["", "21010", "2101020", "010102", "21010a", " 10102", "２１０１０２", 210102, None])
def test_malformed_region_codes_are_refused(bad):
    for fn in (province_code, pooling_code):
        with pytest.raises(YidiError) as e:
            fn(bad)
        assert e.value.reason == "INVALID_CODE"


def _iso7064_mod11_2(first17: str) -> str:
    """The check character by the standard's own definition (weights 2**(17-i) mod 11), not the core's table."""
    s = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(first17))
    return "0123456789X"[(12 - s % 11) % 11]


def test_certno_known_answers():
    # the examples printed in GB 11643-1999
    assert certno_check_char("11010519491231002") == "X"
    assert certno_check_char("44052418800101001") == "4"
    assert certno_valid("11010519491231002X")
    assert certno_valid("440524188001010014")
    assert not certno_valid("11010519491231002x")  # the check character is an upper-case X
    assert not certno_valid("110105194912310021")
    assert not certno_valid("11010519491231002")
    assert not certno_valid("11010519491231002X0")
    assert not certno_valid("1101051949123100 X")
    assert not certno_valid(11010519491231002)


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_certno_check_char_matches_the_standard(first17):
    check = certno_check_char(first17)
    assert check == _iso7064_mod11_2(first17)
    assert certno_valid(first17 + check)
    assert not any(certno_valid(first17 + other) for other in "0123456789X" if other != check)


@pytest.mark.parametrize("bad", ["", "1101051949123100", "110105194912310020", "1101051949123100X", "１" * 17, None])
def test_certno_check_char_needs_17_digits(bad):
    with pytest.raises(YidiError) as e:
        certno_check_char(bad)
    assert e.value.reason == "INVALID_CERTNO"


def test_index_accepts_exactly_the_valid_certnos(tmp_path):
    from datagen.spec_fixture import PERSONS, load_spec_index

    ix, _n = load_spec_index(tmp_path)
    row = dict(PERSONS["retired"])
    assert certno_valid(row["certno"])
    ix.check_person(row)
    first17, check = row["certno"][:17], row["certno"][17]
    wrong = "0" if check != "0" else "1"
    assert not certno_valid(first17 + wrong)
    with pytest.raises(YidiError) as e:
        ix.check_person(dict(row, certno=first17 + wrong))
    assert e.value.reason == "INVALID_CERTNO"
