"""The ledger proves itself: a checksum per record and a hash chain through all of them.

Each record carries

* ``checksum`` = BLAKE2b-128 of its content (seq, kind, caller, request_id,
  digest, key, body, response, each length-prefixed), and
* ``chain`` = BLAKE2b-256 of (the previous record's chain, this checksum),
  starting from ``GENESIS`` before record 1.

So a changed byte anywhere in a record breaks its checksum, and a record
removed, reordered or replaced by another whole, consistent record breaks the
chain at the next one.  The newest chain value (the *head*) is also kept
where a lost or truncated WAL cannot take it along: in each snapshot and in a
small side file, ``<ledger>.head``, rewritten in place after every commit
(``HeadFile``).  Start-up verifies the records after the newest snapshot,
that snapshot's head, and the side file's head; ``yidi verify-ledger``
verifies a whole ledger offline (``verify``).

This detects corruption and accidents (a flipped bit, a truncated WAL, a
restored old copy); it is not a signature: whoever can rewrite the file and
recompute every hash can also forge it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
from typing import Iterable, NamedTuple

log = logging.getLogger("yidi.chain")

CHECKSUM_BYTES = 16
CHAIN_BYTES = 32
GENESIS = bytes(CHAIN_BYTES)
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
    kind_b, caller_b, rid_b, key_b = kind.encode(), caller.encode(), request_id.encode(), key.encode()
    h = hashlib.blake2b(_LENGTHS.pack(seq, len(kind_b), len(caller_b), len(rid_b), len(digest), len(key_b),
                                      len(body), len(response)), digest_size=CHECKSUM_BYTES)
    h.update(kind_b)
    h.update(caller_b)
    h.update(rid_b)
    h.update(digest)
    h.update(key_b)
    h.update(body)
    h.update(response)
    return h.digest()


def link(previous: bytes, record_checksum: bytes) -> bytes:
    """The chain value of a record: its checksum bound to everything before it."""
    return hashlib.blake2b(previous + record_checksum, digest_size=CHAIN_BYTES).digest()


class Head(NamedTuple):
    seq: int
    chain: bytes


def check_record(path: str, record, previous: bytes) -> bytes:
    """Verify one record (a gateway.ledger.Record) against the previous chain value; returns its chain."""
    want = checksum(record.seq, record.kind, record.caller, record.request_id, record.digest, record.key,
                    record.body, record.response)
    if record.checksum != want:
        raise LedgerCorrupt(path, record.seq, "its content does not match its checksum (it was changed after "
                                              "it was written)")
    chain = link(previous, want)
    if record.chain != chain:
        raise LedgerCorrupt(path, record.seq, "the hash chain breaks here (a record before it was removed, "
                                              "reordered or replaced, or this chain value was changed)")
    return chain


def verify(path: str, records: Iterable, previous: bytes = GENESIS, after: int = 0) -> Head:
    """Verify records (in seq order, the first being after+1) from the chain value before them; the head."""
    expected = after + 1
    head = Head(after, previous)
    for record in records:
        if record.seq != expected:
            raise LedgerCorrupt(path, expected, f"is missing (the next record is {record.seq})")
        head = Head(record.seq, check_record(path, record, head.chain))
        expected += 1
    return head


# --------------------------------------------------------------------- the side file
_HEAD = struct.Struct("<8sHQ32s")
_HEAD_MAGIC = b"YIDIHEAD"
_HEAD_VERSION = 1
HEAD_FILE_BYTES = _HEAD.size + CHECKSUM_BYTES


def head_path(ledger_path: str) -> str:
    return ledger_path + ".head"


class HeadFile:
    """``<ledger>.head``: the last committed seq and chain value, rewritten in place after each commit.

    One ``pwrite`` of HEAD_FILE_BYTES at offset 0 (within one disk sector, so
    it is never half old and half new in practice; a checksum catches it if
    it is).  Written after the commit's fsync and not fsynced itself: after a
    power loss it may be one commit behind, never ahead, so it never raises
    a false alarm; what it catches is a ledger that lost records it had
    committed (a truncated or discarded WAL, an older copy of the file).
    """

    def __init__(self, ledger_path: str) -> None:
        self.path = head_path(ledger_path)
        self._fd: int | None = None

    def read(self) -> Head | None:
        """The recorded head; None if there is no (valid) side file."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(HEAD_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(data) != HEAD_FILE_BYTES or hashlib.blake2b(data[:_HEAD.size], digest_size=CHECKSUM_BYTES).digest() \
                != data[_HEAD.size:]:
            log.error("%s is damaged (%d bytes); ignoring it", self.path, len(data))
            return None
        magic, version, seq, chain = _HEAD.unpack_from(data)
        if magic != _HEAD_MAGIC or version != _HEAD_VERSION:
            log.error("%s is not a Yidi head file; ignoring it", self.path)
            return None
        return Head(seq, chain)

    def write(self, head: Head) -> None:
        data = _HEAD.pack(_HEAD_MAGIC, _HEAD_VERSION, head.seq, head.chain)
        data += hashlib.blake2b(data, digest_size=CHECKSUM_BYTES).digest()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(self._fd, data, 0)

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
                                                f"committed but the ledger ends at {last_seq} (acknowledged "
                                                "records were lost, e.g. a truncated WAL)")
    if chain_at(recorded.seq) != recorded.chain:
        raise LedgerCorrupt(path, recorded.seq, f"differs from what {where} recorded for it (the ledger was "
                                                "rewritten or replaced)")
