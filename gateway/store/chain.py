"""The ledger proves itself: a checksum per record and a keyed hash chain through all of them.

Each record carries

* ``checksum`` = BLAKE2b-128 of its content (seq, kind, caller, request_id,
  digest, key, body, response, each length-prefixed), and
* ``chain`` = keyed BLAKE2b-256 (the ledger's key, gateway/store/seal.py) of (the
  previous record's chain value, this checksum), starting from the ledger's
  own genesis value before record 1.

So a changed byte anywhere in a record breaks its checksum; a record removed,
reordered or replaced by another whole, consistent one breaks the chain at
the next one; and no one without the seal key can compute a chain value, so
an edit cannot be hidden by recomputing the chain.  Any one record is proved
on its own from its checksum and the chain values of it and the record
before it (``check_record``), which is how records read one at a time are
checked before they are served.

The newest chain value (the *head*) is sealed in three more places: the
ledger's head row (``HeadRow``, written in each commit's transaction),
``<ledger>.head`` (rewritten in place after each commit: a lost or truncated
WAL cannot take it along) and, with ``--witness DIR``, a witness file on
another volume, fsynced after each commit before any answer is sent
(``HeadFile``).  A ledger behind its head file or its witness is refused at
start, naming both heads.  ``yidi verify-ledger --key`` verifies a whole
ledger offline (gateway/store/sqlite/verify.py).
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
from typing import Iterable, NamedTuple

import msgspec

from .seal import LedgerKey

log = logging.getLogger("yidi.chain")

CHECKSUM_BYTES = 16
_LENGTHS = struct.Struct("<QIIIIIII")


class LedgerCorrupt(Exception):
    """The ledger is not what was written: one sentence naming the file, the record and what is wrong."""

    def __init__(self, path: str, seq: int, what: str) -> None:
        super().__init__(f"ledger {path} record {seq}: {what}")
        self.path = path
        self.seq = seq
        self.what = what


def checksum(seq: int, kind: str, caller: str, request_id: str, digest: bytes, key: str, body: bytes,
             response: bytes) -> bytes:
    """BLAKE2b-128 of a record's content, every field length-prefixed (so no two contents collide by framing)."""
    return checksum_of(seq, kind.encode(), caller.encode(), request_id.encode(), digest, key.encode(), body, response)


def checksum_of(seq: int, kind: bytes, caller: bytes, request_id: bytes, digest: bytes, key: bytes, body: bytes,
                response: bytes) -> bytes:
    """``checksum`` of the text fields already encoded (UTF-8), as a writer that packs them has them."""
    h = hashlib.blake2b(_LENGTHS.pack(seq, len(kind), len(caller), len(request_id), len(digest), len(key),
                                      len(body), len(response)), digest_size=CHECKSUM_BYTES)
    h.update(kind)
    h.update(caller)
    h.update(request_id)
    h.update(digest)
    h.update(key)
    h.update(body)
    h.update(response)
    return h.digest()


class Head(NamedTuple):
    seq: int
    chain: bytes


def check_record(path: str, record, previous: bytes, key: LedgerKey) -> bytes:
    """Verify one record (a parts.Record) against the previous chain value; returns its chain value."""
    want = checksum(record.seq, record.kind, record.caller, record.request_id, record.digest, record.key,
                    record.body, record.response)
    if record.checksum != want:
        raise LedgerCorrupt(path, record.seq, "its content does not match its checksum (it was changed after "
                                              "it was written)")
    chain = key.link(previous, want)
    if record.chain != chain:
        raise LedgerCorrupt(path, record.seq, "the hash chain breaks here (a record before it was removed, "
                                              "reordered or replaced, this record or its chain value was changed, "
                                              "or the chain was recomputed without the seal key)")
    return chain


def verify(path: str, records: Iterable, key: LedgerKey, previous: bytes | None = None, after: int = 0) -> Head:
    """Verify records (in seq order, the first being after+1) from the chain value before them; the head."""
    expected = after + 1
    head = Head(after, key.genesis if previous is None else previous)
    for record in records:
        if record.seq != expected:
            raise LedgerCorrupt(path, expected, f"is missing (the next record is {record.seq})")
        head = Head(record.seq, check_record(path, record, head.chain, key))
        expected += 1
    return head


# --------------------------------------------------------------------- the head row
class HeadRow(msgspec.Struct, frozen=True):
    """What the ledger says of itself, sealed (the ``head`` table's one row, rewritten in every commit).

    Its tag is a MAC with the ledger's key, so it cannot be edited, and it
    names the last record and its chain value, so it cannot be put back
    from an older copy without the records after it disappearing too (which
    the head file and the witness catch).
    """

    ledger_id: str
    seq: int
    chain: bytes
    counts: dict[str, int]          # rows of every table (rows.TABLES), checked at start
    legacy_last_seq: int = 0        # ids of a schema-1 ledger are numbered at most this
    archive: str = "complete"       # "missing": a schema-1 ledger whose archive is not yet written
    witnessed: bool = False         # a witness has been kept since this ledger was sealed


encode_head_row = msgspec.msgpack.Encoder().encode
decode_head_row = msgspec.msgpack.Decoder(HeadRow).decode


def advanced(row: HeadRow, head: Head, added: dict[str, int], witnessed: bool) -> HeadRow:
    """The head row after a commit that reached ``head`` and added ``added`` rows to tables."""
    counts = dict(row.counts)
    for table, n in added.items():
        counts[table] = counts.get(table, 0) + n
    return msgspec.structs.replace(row, seq=head.seq, chain=head.chain, counts=counts,
                                   witnessed=row.witnessed or witnessed)


def prove_head_row(path: str, key: LedgerKey, row: HeadRow, body: bytes, tag: bytes, last_seq: int, chain_at,
                   tables: Iterable[str], count) -> None:
    """The head row (its body and tag as stored) is sealed with this key and agrees with the tables: the last
    record ``last_seq``, its chain value (``chain_at(seq)``) and the rows of every table (``count(table)``);
    LedgerCorrupt naming what differs."""
    if key.mac(b"head" + body) != tag:
        raise LedgerCorrupt(path, row.seq, "the head row does not match its seal (it was changed, the ledger "
                                           "was resealed without the seal key, or this is not the seal key "
                                           f"{key.key_id[:8]}… it was sealed with)")
    if last_seq != row.seq:
        raise LedgerCorrupt(path, max(last_seq, row.seq), f"the ledger ends at record {last_seq} but its sealed head "
                                                          f"says {row.seq}")
    if chain_at(row.seq) != row.chain:
        raise LedgerCorrupt(path, row.seq, "differs from the chain value its sealed head recorded for it "
                                           "(the ledger was rewritten)")
    for table in tables:
        n = count(table)
        if n != row.counts.get(table, 0):
            raise LedgerCorrupt(path, row.seq, f"table {table} has {n} rows but the sealed head counts "
                                               f"{row.counts.get(table, 0)} (rows were deleted or added "
                                               "behind the gateway's back)")


# --------------------------------------------------------------------- head files
_HEAD = struct.Struct("<8sHQ32s")
_HEAD_MAGIC = b"YIDIHEAD"
_HEAD_VERSION = 2
_SEAL_BYTES = 32
HEAD_FILE_BYTES = _HEAD.size + _SEAL_BYTES


def head_path(ledger_path: str) -> str:
    return ledger_path + ".head"


def witness_path(directory: str, ledger_id: str, part: int = 0) -> str:
    """A ledger's witness file (one per partition: each partition has its own head)."""
    return os.path.join(directory, f"yidi-{ledger_id}.witness" if part == 0 else f"yidi-{ledger_id}-p{part}.witness")


class HeadFile:
    """A copy of the head (last committed seq and chain value), sealed with the ledger's key.

    One ``pwrite`` of HEAD_FILE_BYTES at offset 0 (within one disk sector, so
    it is never half old and half new in practice; the seal catches it if
    it is).  ``<ledger>.head`` is written after each commit and not fsynced:
    after a power loss it may be one commit behind, never ahead, so it never
    raises a false alarm; what it catches is a ledger that lost records it
    had committed (a truncated or discarded WAL).  A witness
    (``durable=True``, on another volume) is fsynced after each commit before
    any answer of that commit is sent, so it is never behind an acknowledged
    record: a ledger restored from an older copy, however consistent, is
    behind its witness.
    """

    def __init__(self, path: str, key: LedgerKey, durable: bool = False) -> None:
        self.path = path
        self.key = key
        self.durable = durable
        self._fd: int | None = None

    def read(self) -> Head | None:
        """The recorded head; None if there is no file.  LedgerCorrupt if it is not one this ledger sealed."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(HEAD_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(data) != HEAD_FILE_BYTES or self.key.mac(data[:_HEAD.size]) != data[_HEAD.size:]:
            raise LedgerCorrupt(self.path, 0, "is not a head sealed for this ledger with this seal key (damaged, "
                                              "replaced, or from another ledger)")
        magic, version, seq, chain = _HEAD.unpack_from(data)
        if magic != _HEAD_MAGIC or version != _HEAD_VERSION:
            raise LedgerCorrupt(self.path, 0, "is not a Yidi head file of this version")
        return Head(seq, chain)

    def write(self, head: Head) -> None:
        data = _HEAD.pack(_HEAD_MAGIC, _HEAD_VERSION, head.seq, head.chain)
        data += self.key.mac(data)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(self._fd, data, 0)
        if self.durable:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def check_head(path: str, recorded: Head | None, last_seq: int, chain_at, where: str) -> None:
    """The ledger must hold the recorded head: its seq and the same chain value there.

    ``chain_at(seq)`` reads the chain column of a record (None if there is none).
    """
    if recorded is None or recorded.seq == 0:
        return
    if recorded.seq > last_seq:
        raise LedgerCorrupt(path, recorded.seq, f"is missing: {where} says records up to {recorded.seq} were "
                                                f"committed (head {recorded.chain.hex()[:16]}…) but the ledger ends "
                                                f"at {last_seq} (acknowledged records were lost: a truncated WAL, "
                                                "or a ledger restored from an older copy)")
    if chain_at(recorded.seq) != recorded.chain:
        raise LedgerCorrupt(path, recorded.seq, f"differs from what {where} recorded for it (head "
                                                f"{recorded.chain.hex()[:16]}…): the ledger was rewritten or replaced")


def check_witness(path: str, witness: HeadFile, row: HeadRow, chain_at) -> None:
    """The witness against the ledger's sealed head row: present if the head says one is kept, never ahead, never
    another chain at its seq; adopted, or caught up after a crash between a commit and its witness write."""
    recorded = witness.read()
    if recorded is None and row.witnessed:
        raise LedgerCorrupt(path, row.seq, f"has no witness at {witness.path}, though its sealed head says one has "
                                           "been kept: the witness volume is missing, or the ledger was restored "
                                           "from a copy")
    check_head(path, recorded, row.seq, chain_at, f"the witness {witness.path}")
    if recorded is None or recorded.seq != row.seq:
        witness.write(Head(row.seq, row.chain))
