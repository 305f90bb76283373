"""What ``yidi verify-ledger`` proves of any backend's ledger, given rows the backend reads in one consistent view.

``proved_head`` proves the sealed head row and every record and the row counts of every table; ``check_witness``
and ``check_snapshot`` prove the outside copies against the chain.  The backends (gateway/store/sqlite/verify.py,
gateway/store/postgresql/verify.py) only read: the rows, the derived rows' tags, their own copies.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec

from . import chain, snapshot
from .chain import Head, LedgerCorrupt, decode_head_row
from .rows import TABLES
from .seal import LedgerKey, SealKey


def checksums_only(path: str, records, after: int = 0) -> Head:
    """Without the key: dense seqs (the first after+1) and each record's content against its checksum."""
    head = Head(after, b"")
    for record in records:
        if record.seq != head.seq + 1:
            raise LedgerCorrupt(path, head.seq + 1, f"is missing (the next record is {record.seq})")
        if record.checksum != chain.checksum(record.seq, record.kind, record.caller, record.request_id,
                                             record.digest, record.key, record.body, record.response):
            raise LedgerCorrupt(path, record.seq, "its content does not match its checksum (it was changed "
                                                  "after it was written)")
        head = Head(record.seq, record.chain)
    return head


def proved_head(path: str, head_row: tuple[bytes, bytes] | None, records: Iterable, count: Callable[[str], int],
                key: SealKey | None, after: int = 0) -> tuple[Head, LedgerKey | None]:
    """The ledger's last record and its key: the head row (body, tag as stored) is readable and, with the seal
    key, sealed with it; every record is proved (the keyed chain from genesis, or without the key its seqs and
    checksums); the head row names the last record and its chain value, and ``count(table)`` of every table."""
    if head_row is None:
        raise LedgerCorrupt(path, 0, "has no head row (it was deleted): the ledger cannot prove itself")
    body, tag = head_row
    try:
        row = decode_head_row(body)
    except msgspec.DecodeError:
        raise LedgerCorrupt(path, 0, "has a head row that cannot be read (it was changed)") from None
    lkey = key.for_ledger(row.ledger_id) if key is not None else None
    if lkey is not None and lkey.mac(b"head" + body) != tag:
        raise LedgerCorrupt(path, row.seq, "the head row does not match its seal (changed, resealed without the "
                                           "seal key, or another seal key)")
    head = chain.verify(path, records, lkey, after=after) if lkey is not None else checksums_only(path, records, after)
    if head.seq != row.seq or (head.seq != after and head.chain != row.chain):
        raise LedgerCorrupt(path, max(head.seq, row.seq), f"the ledger ends at record {head.seq} but its sealed "
                                                          f"head says {row.seq}")
    for table in TABLES:
        n = count(table)
        if n != row.counts.get(table, 0):
            raise LedgerCorrupt(path, head.seq, f"table {table} has {n} rows but the sealed head counts "
                                                f"{row.counts.get(table, 0)}")
    return head, lkey


def check_witness(path: str, witness_dir: str, key: LedgerKey, last: int, chain_at, part: int = 0) -> Head:
    """The witness of a partition in ``witness_dir``: present, sealed, and on this chain at its seq; its head."""
    witness = chain.HeadFile(chain.witness_path(witness_dir, key.ledger_id, part), key)
    recorded = witness.read()
    if recorded is None:
        raise LedgerCorrupt(path, last, f"has no witness at {witness.path}")
    chain.check_head(path, recorded, last, chain_at, f"the witness {witness.path}")
    return recorded


def check_snapshot(path: str, seq: int, blob: bytes, key: LedgerKey, last: int, chain_at, where: str) -> bool:
    """The snapshot written at ``seq``: sealed with the key and on this chain; False for a format too old to be read (not used
    by a start-up, so not judged)."""
    try:
        snap = snapshot.decode(blob, key)
    except snapshot.SnapshotOlder:
        return False
    except snapshot.SnapshotCorrupt as err:
        raise LedgerCorrupt(path, seq, f"{where}: {err}") from None
    chain.check_head(path, Head(snap.seq, snap.chain), last, chain_at, where)
    return True
