"""The core's keyed BLAKE2b-64 (core/blake2.pxi) is hashlib's, and the on-site sample is the one it always was."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from core._core import blake2b_64
from core.funds import ON_SITE_CHECK_BP, ON_SITE_CHECK_KEY, on_site_check


def by_hashlib(key: bytes, data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, key=key, digest_size=8).digest(), "big")


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.binary(min_size=1, max_size=64), st.one_of(st.binary(max_size=300), st.sampled_from(
    [b"", b"\0" * 127, b"\1" * 128, b"\2" * 129, b"\3" * 256, b"\4" * 257])))
def test_the_core_hashes_as_hashlib_does(key, data):
    """Every key length, and messages around the 128-byte block: empty, one short of a block, a block, just over."""
    assert blake2b_64(key, data) == by_hashlib(key, data)


def test_a_key_outside_1_to_64_bytes_is_refused():
    for key in (b"", b"k" * 65):
        with pytest.raises(ValueError):
            blake2b_64(key, b"x")


def test_the_on_site_sample_is_the_keyed_hash_of_the_setl_id():
    ids = [f"S{n:015d}" for n in range(1, 5001)] + ["S1", "结算", ""]
    assert [on_site_check(i) for i in ids] == [
        by_hashlib(ON_SITE_CHECK_KEY, i.encode()) % 10000 < ON_SITE_CHECK_BP for i in ids]
