"""Records packed per commit group (gateway/store/packed.py): a row per group (SQLite: per 64 records of it),
every read still one row away, every damage to the packed form found, and a ledger written one row per record
still replays and grows, on both backends.

``tests/gateway/data/ledger-v5.db`` was written by the gateway of commit 6938974 (schema 5, one ``records`` row
per record) on the SPEC fixture, by ``tests/tamper.py``'s scenario as it was then: filings, outpatient
settlements, a cancellation, a reversal, an inpatient stay, a problem report with a comment;
``ledger-v5.calls.json`` holds every request it was asked and the exact bytes it answered, ``ledger-v5.seal-key``
the key it was sealed with.  ``ledger-pg-schema1.sql`` is a PostgreSQL ledger of the same records (and a
reference load) written by that commit's ``PostgresStore`` (schema 1), as ``pg_dump --inserts`` gave it.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3

import pytest

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.store import LedgerCorrupt, Record, SqliteStore, open_store
from gateway.store.sqlite.store import SCHEMA_VERSION
from gateway.store.sqlite.verify import verify_ledger
from gateway.store.seal import SealKey
from gateway.testing import seal_key
from builders import HK_L1, outpatient
import ledger_edit

HERE = os.path.join(os.path.dirname(__file__), "data")
V5_KEY = os.path.join(HERE, "ledger-v5.seal-key")
with open(os.path.join(HERE, "ledger-v5.calls.json"), encoding="utf-8") as f:
    V5 = json.load(f)
READS = ("/Get", "/List", "/Reconcile")


def make_record(i: int, kind: str = "settled") -> Record:
    body = f'{{"i":{i}}}'.encode() * (1 + i % 5)
    return Record(kind, "210000", f"req-{i}", bytes([i % 256]) * 16, f"S{i:015d}", body, b"\x0a\x03" + body[:3])


def fill(store: SqliteStore, sizes: list[int]) -> list[Record]:
    """Groups of these sizes appended; the records as written (in seq order)."""
    n = 0
    for size in sizes:
        store.append([make_record(n + i + 1, "reference_loaded" if (n + i + 1) % 7 == 0 else "settled")
                      for i in range(size)])
        n += size
    return list(store.scan())


@pytest.fixture
def ledger(tmp_path):
    """A ledger of groups of 3, 1, 5 and 4 records (seqs 1..13, a reference load at 7)."""
    path = str(tmp_path / "ledger.sqlite")
    store = SqliteStore(path, seal_key())
    try:
        fill(store, [3, 1, 5, 4])
    finally:
        store.close()
    return path


def test_a_group_is_one_row_and_every_record_is_read_from_it(ledger):
    conn = sqlite3.connect(ledger)
    assert conn.execute("SELECT first_seq, last_seq FROM groups ORDER BY last_seq").fetchall() == [
        (1, 3), (4, 4), (5, 9), (10, 13)]
    assert conn.execute("SELECT count(*) FROM records").fetchone() == (0,)
    assert conn.execute("SELECT seq FROM reference_loads").fetchall() == [(7,)]
    conn.close()
    store = SqliteStore(ledger, seal_key())
    try:
        scanned = list(store.scan())
        assert [r.seq for r in scanned] == list(range(1, 14)) and store.last_seq() == 13
        for r in scanned:
            assert store.read(r.seq) == r and store.chain_at(r.seq) == r.chain
            assert [x.seq for x in store.scan(r.seq)] == list(range(r.seq + 1, 14))
            assert store.find_request("210000", r.request_id) == r
            assert (r.body, r.key) == (make_record(r.seq).body, make_record(r.seq).key)
        assert store.read(14) is None and store.read(0) is None and store.chain_at(14) is None
        assert store.last_reference_load().seq == 7 and store.head().chain == scanned[-1].chain
        store.append([make_record(14, "reference_loaded"), make_record(15)])
        assert store.last_reference_load().seq == 14
    finally:
        store.close()
    assert "OK" in verify_ledger(ledger, ledger + ".snapshots", seal_key())


def refused(ledger: str, seq: int | None = None,
            verify=lambda ledger: verify_ledger(ledger, ledger + ".snapshots", seal_key())) -> LedgerCorrupt:
    """verify-ledger, and opening the ledger (a path, or a PostgreSQL URL with ``verify`` its verify-ledger) or
    reading seq from it: both find the damage; the latter's exception."""
    with pytest.raises(LedgerCorrupt):
        verify(ledger)
    with pytest.raises(LedgerCorrupt) as found:
        store = open_store(ledger, seal_key())
        try:
            store.read(seq)
        finally:
            store.close()
    return found.value


def test_one_record_changed_inside_a_group_is_refused_when_read(ledger):
    ledger_edit.rewrite(ledger, 6, body=b'{"i":6,"fund":1}')
    assert refused(ledger, 6).seq == 6
    ledger_edit.rewrite(ledger, 6, checksum=ledger_edit.with_checksum(ledger_edit.record(ledger, 6), 6).checksum)
    assert refused(ledger, 6).seq == 6   # the checksum recomputed: the chain (keyed) breaks


def test_two_groups_swapped_break_the_chain(ledger):
    ledger_edit.swap_groups(ledger, 1, 4)   # seqs 1..3 and 4: now 4's record first, its checksum recomputed
    assert ledger_edit.groups(ledger)[:2] == [(1, 1), (2, 4)]
    assert refused(ledger, 1).seq == 1


def test_a_group_dropped_is_refused_at_start(ledger):
    ledger_edit.drop_last_group(ledger)
    assert "ends at record 9 but its sealed head says 13" in str(refused(ledger))


def test_a_group_in_the_middle_dropped_is_refused_at_start(ledger):
    conn = sqlite3.connect(ledger, isolation_level=None)
    conn.execute("DELETE FROM groups WHERE last_seq = 4")
    conn.close()
    assert "table records has 12 rows" in str(refused(ledger))


def test_a_group_cut_is_refused_when_read_and_at_start_if_it_is_the_last(ledger):
    ledger_edit.cut_tail(ledger, 5, 7)   # the group 5..9 loses part of record 9: every record of it is refused
    assert "group of records cannot be read" in str(refused(ledger, 5))
    ledger_edit.cut_tail(ledger, 13, 1)
    assert "group of records cannot be read" in str(refused(ledger))


def test_records_dropped_from_a_group_made_consistent_are_refused_at_start(ledger):
    ledger_edit.drop_tail_records(ledger, 5, 2)   # 5..9 becomes 5..7: count, offsets, row all match
    assert ledger_edit.groups(ledger)[2] == (5, 7)
    assert "table records has 11 rows but the sealed head counts 13" in str(refused(ledger))


def test_a_record_deleted_from_a_group_is_refused_at_start(ledger):
    ledger_edit.delete(ledger, 5)   # the group's first: it starts at 6 now
    assert "table records has 12 rows" in str(refused(ledger))


# ------------------------------------------------------------------ a schema-5 ledger (one row per record)
@pytest.fixture
def v5(tmp_path):
    names = write_spec_dataset(tmp_path / "data")
    ledger = str(tmp_path / "ledger.sqlite")
    shutil.copy(os.path.join(HERE, "ledger-v5.db"), ledger)
    return names, ledger


def ask_recorded(gw, reads: bool = True) -> int:
    """Every recorded call (reads too, or only the acknowledged requests, retried): the bytes it answered then."""
    asked, clients = 0, {}
    for call in V5["calls"]:
        if not reads and any(word in call["method"] for word in READS):
            continue
        client = clients.setdefault(call["caller"], gw.client(call["caller"]))
        rpc = client.channel.unary_unary(call["method"], request_serializer=None, response_deserializer=None)
        got = rpc(base64.b64decode(call["request"]), metadata=client.metadata, timeout=30)
        assert got == base64.b64decode(call["response"]), call["method"]
        asked += 1
    return asked


def test_a_schema_5_ledger_replays_byte_identical_and_takes_packed_groups_after_it(v5, gateways):
    names, ledger = v5
    gw = gateways(names["dir"], ledger, "--seal-key", V5_KEY)
    assert ask_recorded(gw) == len(V5["calls"])
    hainan = gw.client("460000")
    batch = spb.SettleBatchRequest(items=[spb.SettleItem(outpatient=outpatient(f"p-{n}", "PT-2", HK_L1, date=20260320,
                                                                              price=900 + n)) for n in range(5)])
    answers = hainan.raw("/yidi.v1.SettlementService/SettleBatch", batch)
    settled = [o.settlement.settlement.setl_id for o in spb.SettleBatchResponse.FromString(answers).outcomes]
    assert settled == [f"S{seq:015d}" for seq in range(V5["records"] + 1, V5["records"] + 6)]
    assert gw.stop() == 0

    conn = sqlite3.connect(ledger)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("SELECT count(*), max(seq) FROM records").fetchone() == (V5["records"], V5["records"])
    first, last = conn.execute("SELECT first_seq, last_seq FROM groups ORDER BY last_seq DESC").fetchone()
    assert (first, last) == (V5["records"] + 1, V5["records"] + 5)
    conn.close()
    assert "OK" in verify_ledger(ledger, ledger + ".snapshots", SealKey.read(V5_KEY))

    gw = gateways(names["dir"], ledger, "--seal-key", V5_KEY)   # replays both layouts, one after the other
    ask_recorded(gw, reads=False)
    hainan = gw.client("460000")
    assert hainan.raw("/yidi.v1.SettlementService/SettleBatch", batch) == answers
    for setl_id in settled + [f"S{seq:015d}" for seq in V5["settlements"].values()]:
        shown = hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=setl_id))
        assert shown.settlement.setl_id == setl_id
    assert gw.stop() == 0


# ------------------------------------------------------------------ PostgreSQL: the same groups, the same proofs
def pg_refused(url: str, seq: int | None = None) -> LedgerCorrupt:
    from gateway.store.postgresql.verify import verify_ledger as pg_verify

    return refused(url, seq, verify=lambda url: pg_verify(url, seal_key()))


def test_postgresql_packs_the_same_groups_and_finds_the_same_damage(pg_url):
    import psycopg

    from gateway.store import open_store
    from gateway.store.postgresql.verify import verify_ledger as pg_verify

    store = open_store(pg_url, seal_key())
    try:
        written = fill(store, [3, 1, 5, 4])
        for r in written:
            assert store.read(r.seq) == r and store.chain_at(r.seq) == r.chain
            assert store.find_request("210000", r.request_id) == r
        assert [r.seq for r in store.scan(4)] == list(range(5, 14)) and store.last_reference_load().seq == 7
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT first_seq, last_seq FROM groups ORDER BY last_seq").fetchall() == [
            (1, 3), (4, 4), (5, 9), (10, 13)]
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (0,)
    assert pg_verify(pg_url, seal_key()).startswith("OK ")
    ledger_edit.cut_tail(pg_url, 6, 5)
    assert "group of records cannot be read" in str(pg_refused(pg_url, 6))
    ledger_edit.drop_tail_records(pg_url, 12, 1)   # the last group loses its last record, made consistent
    assert "ends at record 12 but its sealed head says 13" in str(pg_refused(pg_url))


def test_postgresql_reads_a_record_in_one_query_and_refuses_it_changed(pg_url):
    """One round trip a read, the first record of a group included (the chain value before it is the row
    before's); a changed record, and a changed chain value at the end of the row before, refused on read."""
    store = open_store(pg_url, seal_key())
    try:
        written = fill(store, [3, 1, 5, 4])
        asked, query = [], store._query
        store._query = lambda sql, args: asked.append(sql) or query(sql, args)
        for r in written:
            asked.clear()
            assert store.read(r.seq) == r and len(asked) == 1, r.seq
    finally:
        store.close()
    ledger_edit.rewrite(pg_url, 6, body=b'{"i":6,"fund":1}')
    assert pg_refused(pg_url, 6).seq == 6
    ledger_edit.rewrite(pg_url, 9, chain=bytes(32))
    assert "hash chain breaks" in str(pg_refused(pg_url, 10)) and pg_refused(pg_url, 10).seq == 10


def restore_schema_1(url: str) -> None:
    """The fixture's schema-1 PostgreSQL ledger (pg_dump of it, as written by the gateway of commit 6938974)."""
    import psycopg

    with open(os.path.join(HERE, "ledger-pg-schema1.sql"), encoding="utf-8") as f:
        dump = f.read()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(dump)


def test_a_schema_1_postgresql_ledger_is_read_as_it_is_and_takes_packed_groups_after_it(pg_url):
    import psycopg

    from gateway.store import open_store
    from gateway.store.postgresql.verify import verify_ledger as pg_verify

    restore_schema_1(pg_url)
    key = SealKey.read(V5_KEY)
    store = open_store(pg_url, key)
    try:
        old = list(store.scan())
        assert [r.seq for r in old] == list(range(1, 18)) and store.last_reference_load().seq == 6
        assert all(store.read(r.seq) == r for r in old)
        assert store.find_request("460000", "t-op-0").kind == "settled"
        store.append([make_record(100), make_record(101, "reference_loaded"), make_record(102)])
        store.append([make_record(103)])
        assert [r.seq for r in store.scan(16)] == [17, 18, 19, 20, 21]
        assert store.read(18).request_id == "req-100" and store.read(17) == old[-1]
        assert store.last_reference_load().seq == 19 and store.chain_at(17) == old[-1].chain
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT schema FROM head").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (17,)
        assert conn.execute("SELECT first_seq, last_seq FROM groups ORDER BY last_seq").fetchall() == [
            (18, 20), (21, 21)]
    assert pg_verify(pg_url, key).startswith("OK ")
    store = open_store(pg_url, key)   # and opens again, both layouts proved
    try:
        assert store.last_seq() == 21 and len(list(store.scan())) == 21
    finally:
        store.close()
