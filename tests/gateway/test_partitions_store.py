"""Ledger partitions at the store (core/partition.py, docs/postgresql.md Partitions), against a real PostgreSQL.

Two partitions of one ledger append at once, each numbering its records from
its own base (partition 1 from 10^13 + 1), so an id names its partition; any
partition's store reads and proves any record by its seq (the idempotency
index and the archive name records of every partition); the shared tables'
row counts are proved against the sum of the partitions' sealed head rows, at
opening and by ``verify-ledger``, which proves every partition's chain.
"""
from __future__ import annotations

import time

import psycopg
import pytest

from core.events import settlement_id, visit_id
from core.partition import SEQ_SPAN, PartitionMap, part_of_seq, seq_base
from gateway.store import LedgerCorrupt, Record, open_store
from gateway.store import chain
from gateway.store.postgresql import lease, safe_url
from gateway.store.postgresql.store import Deposed, PostgresStore
from gateway.store.postgresql.verify import verify_ledger
from gateway.testing import seal_key

HAINAN = "460000"


def record(n: int, request_id: str) -> Record:
    return Record(kind="settle", caller=HAINAN, request_id=request_id, digest=bytes(16), key=f"S{n}",
                  body=b"body %d" % n, response=b"answer %d" % n)


def test_the_partition_map_is_a_stable_rule_and_an_id_names_its_partition():
    two = PartitionMap(2)
    assert [two.of_province(p) for p in ("110000", "460000", "210102", "")] == [1, 0, 1, 0]
    assert PartitionMap(1).of_province("110000") == 0
    assert seq_base(1) == SEQ_SPAN and part_of_seq(SEQ_SPAN + 7) == 1 and part_of_seq(7) == 0
    assert settlement_id(SEQ_SPAN + 7) == "S010000000000007" and visit_id(7) == "M000000000000007"
    assert two.of_id(settlement_id(SEQ_SPAN + 7)) == 1 and two.of_id(visit_id(7)) == 0
    assert two.of_id("R010000000000001") == 1
    assert two.of_id(settlement_id(2 * SEQ_SPAN + 1)) is None   # a partition this map does not have
    assert two.of_id("X123") is None and two.of_id("S12") is None
    with pytest.raises(ValueError):
        PartitionMap(0)


def test_two_partitions_append_apart_read_each_other_and_prove_the_shared_tables(pg_url):
    zero, one = open_store(pg_url, seal_key(), part=0), open_store(pg_url, seal_key(), part=1)
    base = seq_base(1)
    assert (zero.base_seq, one.base_seq) == (0, base) and one.last_seq() == base
    assert zero.key.ledger_id == one.key.ledger_id   # one ledger: rows of either are tagged alike
    assert zero.append([record(n, f"a-{n}") for n in range(1, 4)]) == [1, 2, 3]
    assert one.append([record(n, f"b-{n}") for n in range(1, 41)]) == list(range(base + 1, base + 41))  # COPY
    assert zero.append([record(4, "a-4")]) == [4]
    assert one.last_seq() == base + 40 and zero.last_seq() == 4
    assert chain.verify(one.path, one.scan(base), one.key, after=base) == one.head()
    # any partition's store reads (and proves) any record, by the seq that names its partition
    assert zero.read(base + 2).request_id == "b-2" and one.read(3).request_id == "a-3"
    assert zero.find_request(HAINAN, "b-7").seq == base + 7 and one.find_request(HAINAN, "a-1").seq == 1
    # the idempotency key is unique across partitions: a key of partition 0 cannot be committed by partition 1
    with pytest.raises(psycopg.errors.UniqueViolation):
        one.append([record(41, "a-2")])
    assert one.last_seq() == base + 40
    zero.close()
    one.close()

    zero, one = open_store(pg_url, seal_key(), part=0), open_store(pg_url, seal_key(), part=1)   # proved again
    assert (zero.last_seq(), one.last_seq()) == (4, base + 40)
    zero.close()
    one.close()
    assert verify_ledger(pg_url, seal_key()).startswith(f"OK {safe_url(pg_url)}: 44 records in 2 partitions")

    with psycopg.connect(pg_url, autocommit=True) as conn:   # a row of partition 1 deleted: either partition sees it
        conn.execute("DELETE FROM requests WHERE request_id = 'b-9'")
    with pytest.raises(LedgerCorrupt, match="table requests has 3 rows"):
        open_store(pg_url, seal_key(), part=0)
    with pytest.raises(LedgerCorrupt, match="table requests has 3 rows but the sealed head counts 4"):
        verify_ledger(pg_url, seal_key())


def test_taking_a_partition_over_ends_that_partitions_stalled_writer_only(pg_url):
    """The head table is shared: a node taking an expired partition ends the sessions of that partition's writer
    still inside a write transaction, never another partition's writer in the middle of its append."""
    ttl_s = 0.5
    zero, one, taker = (PostgresStore(pg_url, seal_key(), part=part, lease_ttl_s=ttl) for part, ttl in
                        ((0, ttl_s), (1, 60.0), (0, ttl_s)))   # partition 1's writer is not idle past its lease
    conns = [store.connect_lease() for store in (zero, one, taker)]
    try:
        zero.take_over(lease.take(conns[0], 0, "a", "a:1", ttl_s))
        one.take_over(lease.take(conns[1], 1, "b", "b:1", 60))
        with one._wconn.transaction():   # partition 1's writer inside an append, holding its head row
            one._wconn.execute("UPDATE head SET tag = tag WHERE part = 1")
            time.sleep(ttl_s + 0.1)   # partition 0's lease has run out
            token = lease.take(conns[2], 0, "c", "c:1", ttl_s)
            assert isinstance(token, int)
            assert one._wconn.execute("SELECT 1").fetchone() == (1,)   # its session was not ended
        assert taker.take_over(token).seq == 0 and taker.append([record(1, "c-1")]) == [1]
        assert one.append([record(1, "d-1")]) == [seq_base(1) + 1]
        with pytest.raises(Deposed):
            zero.append([record(2, "a-2")])
    finally:
        for closing in (*conns, zero, one, taker):
            closing.close()


def test_a_key_is_claimed_by_one_partition_until_recorded_or_released(pg_url):
    """request_claims (docs/postgresql.md, Partitions): a key claimed by one partition is the other's to refuse,
    with the claimer's digest; released, or recorded and reaped, it is claimed no more; an owner taking a partition
    over drops the partition's claims (its old owner's)."""
    zero, one = open_store(pg_url, seal_key(), part=0), open_store(pg_url, seal_key(), part=1)
    zero.split = one.split = True
    mine, other = b"\x01" * 16, b"\x02" * 16
    assert zero.claim_requests([(HAINAN, "k1", mine), (HAINAN, "k2", mine), (HAINAN, "k3", mine)]) == {}
    assert zero.claim_requests([(HAINAN, "k1", mine)]) == {}   # its own claim stays its own
    assert one.claim_requests([(HAINAN, "k1", other), (HAINAN, "k4", other)]) == {(HAINAN, "k1"): mine}
    zero.release_claims([(HAINAN, "k1")])
    assert one.claim_requests([(HAINAN, "k1", other)]) == {}   # released: the other partition's to claim now
    assert zero.claim_requests([(HAINAN, "k1", mine)]) == {(HAINAN, "k1"): other}
    assert zero.append([record(1, "k2")]) == [1]
    assert one.find_request(HAINAN, "k2").seq == 1   # recorded: the index answers (its claim until reaped)
    assert zero.reap_claims() == 1   # k2's claim: its record holds the key now
    assert one.claim_requests([(HAINAN, "k2", other)]) == {}
    assert one.claim_requests([(HAINAN, "k3", other)]) == {(HAINAN, "k3"): mine}
    keeper = lease.LeaseKeeper(zero.connect_lease, 0, "next owner", "", 2.0, 0.5)
    zero.lease.close()   # the first owner gives its lease up
    zero.lease = None
    assert keeper.take_once()
    zero.take_over(keeper.token)   # a new owner of partition 0: its old owner's claims dropped
    assert one.claim_requests([(HAINAN, "k3", other)]) == {}
    keeper.close()
    for store in (zero, one):
        store.close()
