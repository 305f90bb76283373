"""core.KeyTable, the recent idempotency keys in C: it answers as an OrderedDict that drops its oldest key past
the capacity would (``Model``), and holds no Python object for the collector."""
from __future__ import annotations

import gc
import random
import struct
from collections import OrderedDict

import pytest
from hypothesis import given, settings, strategies as st

from core import LIMITS, KeyTable
from gateway.store.idempotency import REVERSED, key_hash


def named(home: int, n: int) -> bytes:
    """A 16-byte key hash whose first half (the table's home slot, masked) is ``home`` and second half ``n``: keys
    with one ``home`` all probe from the same slot and differ only in their second half."""
    return struct.pack("=QQ", home, n)


class Model:
    """The reference: an OrderedDict that drops its oldest key past the capacity."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.d = capacity, OrderedDict()

    def put(self, key: bytes, digest: bytes, seq: int) -> None:
        self.d[key] = (digest, seq)
        while len(self.d) > self.capacity:
            self.d.popitem(last=False)


def agrees(table: KeyTable, model: Model, pool: list[bytes]) -> None:
    assert len(table) == len(model.d)
    for key in pool:
        assert table.get(key) == model.d.get(key), key
        assert (key in table) == (key in model.d)


def test_the_oldest_key_goes_first():
    table = KeyTable(3)
    for n in range(5):
        table.put(key_hash("460000", f"r{n}"), bytes([n]) * 16, n)
    assert len(table) == 3 and table.capacity == 3
    assert [table.get(key_hash("460000", f"r{n}")) for n in range(5)] == \
        [None, None, (b"\x02" * 16, 2), (b"\x03" * 16, 3), (b"\x04" * 16, 4)]


def test_it_never_holds_more_than_its_capacity():
    table = KeyTable(100)
    keys = [key_hash("national", str(n)) for n in range(5_000)]
    for n, key in enumerate(keys):
        table.put(key, b"d" * 16, n)
        assert len(table) == min(n + 1, 100)
    assert all(key not in table for key in keys[:-100])
    assert [table.get(key)[1] for key in keys[-100:]] == list(range(4_900, 5_000))


def test_storing_a_held_key_again_changes_its_answer_not_its_age():
    table = KeyTable(3)
    a, b, c, d = (named(n, n) for n in range(4))
    for n, key in enumerate((a, b, c)):
        table.put(key, b"old" * 6, n)
    table.put(a, REVERSED, 9)          # a is still the oldest
    assert table.get(a) == (REVERSED, 9) and len(table) == 3
    table.put(d, b"new" * 6, 10)
    assert a not in table and table.get(b) == (b"old" * 6, 1) and table.get(d) == (b"new" * 6, 10)


def test_keys_sharing_a_home_slot_and_a_first_half_are_told_apart():
    """Eight keys on the same home slot with the same first 64 bits: a long probe run, cut in the middle by
    eviction, must still find every key held and none of those dropped."""
    table, model = KeyTable(5), Model(5)
    pool = [named(7, n) for n in range(8)] + [named(8, n) for n in range(4)]   # home 8 sits in 7's run
    rng = random.Random(15)
    for seq in range(2_000):
        key = rng.choice(pool)
        table.put(key, rng.randbytes(rng.randrange(33)), seq)
        model.put(key, table.get(key)[0], seq)
        agrees(table, model, pool)


def test_long_churn_with_random_hashes_matches_the_model():
    table, model = KeyTable(64), Model(64)
    pool = [key_hash("440000", f"k{n}") for n in range(300)]
    rng = random.Random(2026)
    for seq in range(30_000):
        key = rng.choice(pool)
        table.put(key, b"%016d" % seq, seq)
        model.put(key, b"%016d" % seq, seq)
        if seq % 997 == 0:
            agrees(table, model, pool)
    agrees(table, model, pool)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(capacity=st.integers(1, 9),
       puts=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.binary(max_size=32)), max_size=80))
def test_it_answers_as_the_ordered_dict_did(capacity, puts):
    """Homes 0..5 in a table of 4..32 slots and only four second halves: heavy collisions, equal first halves."""
    table, model = KeyTable(capacity), Model(capacity)
    pool = [named(home, n) for home in range(6) for n in range(4)]
    for seq, (home, n, digest) in enumerate(puts):
        table.put(named(home, n), digest, seq)
        model.put(named(home, n), digest, seq)
        agrees(table, model, pool)


def test_every_digest_length_up_to_32_round_trips():
    table = KeyTable(40)
    for n in range(33):
        table.put(named(n, n), bytes(range(n)), n)
    table.put(named(99, 0), REVERSED, -1)
    assert [table.get(named(n, n)) for n in range(33)] == [(bytes(range(n)), n) for n in range(33)]
    assert table.get(named(99, 0)) == (REVERSED, -1)


def test_bad_arguments_are_refused():
    for capacity in (0, -1, LIMITS["MAX_RECENT_KEYS"] + 1):
        with pytest.raises(ValueError):
            KeyTable(capacity)
    table = KeyTable(2)
    with pytest.raises(ValueError):
        table.put(named(0, 0), b"x" * 33, 1)
    for key in (b"", b"x" * 15, b"x" * 17):
        with pytest.raises(ValueError):
            table.put(key, b"d", 1)
        with pytest.raises(ValueError):
            table.get(key)
    with pytest.raises(TypeError):
        table.get(None)
    assert len(table) == 0


def test_it_holds_no_object_for_the_collector():
    table = KeyTable(10_000)
    before = len(gc.get_objects())
    for n in range(10_000):
        table.put(key_hash("national", str(n)), b"d" * 16, n)
    assert not gc.is_tracked(table)
    assert len(gc.get_objects()) - before < 100
    assert table.memory_bytes() >= 10_000 * 64
