"""Snapshots: the mutable state at a ledger seq, so that start-up replays only the tail.

A snapshot file holds the engine's state apart from the reference data
(``core.engine.EngineState``: persons and filings changed by RPC, visits,
settlements, id counters) as it stood when every record up to ``seq`` was
applied.  Start-up = load the reference data + restore the newest valid
snapshot + replay the records after its seq.

File layout (little endian): magic ``YIDISNAP``, format version (u16), seq
(u64), body length (u64), the seal (32 bytes: a MAC with the ledger's key,
gateway/store/seal.py, of the header, the chain value and the body), the ledger's
chain value at ``seq`` (32 bytes, gateway/store/chain.py), then the body
(MessagePack of ``SnapshotBody``).  Nobody without the seal key can make a
snapshot the gateway accepts, so the state it restores (accumulators,
positions, accounts) is the state it sealed.  Start-up checks that the
ledger's record ``seq`` still has that chain value before it trusts the
records after it.  Older formats are skipped (a full replay is used).
Files are written to a temporary name of their own, fsynced, renamed and the
directory fsynced, so a crash leaves either the old set or the new file
whole.  A file whose seal, length or magic is wrong is skipped with a log
line naming it, and an older one (or a full replay) is used; the gateway
opens a problem report for it (``Snapshots.rejected``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import struct
import tempfile
import time

import msgspec

from core.engine import EngineState

from .seal import LedgerKey

log = logging.getLogger("yidi.snapshot")

MAGIC = b"YIDISNAP"
# 6: a clearing month's rows keep their risk-flag counts before their money columns (core/funds.py), so that
# a money column declared later is appended.  Older snapshots are skipped (the ledger is replayed).
FORMAT_VERSION = 6
_HEADER = struct.Struct("<8sHQQ32s32s")
_PREFIX_HEADER = struct.Struct("<8sHQQ")
_PREFIX = "snapshot-"
_SUFFIX = ".yidi"


class SnapshotBody(msgspec.Struct):
    seq: int
    created_at_unix_ms: int
    data_dir: str
    engine: EngineState
    chain: bytes = b""   # the ledger's chain value at seq (from the header; always set since format 4)


class SnapshotCorrupt(Exception):
    """A snapshot file that cannot be trusted; an older one (or a full replay) is used instead."""


class SnapshotOlder(SnapshotCorrupt):
    """A snapshot of an older format: not read (a full replay is used), and nothing wrong with it."""


class LedgerBehindSnapshot(Exception):
    """A snapshot covers records the ledger does not have: acknowledged records were lost."""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(SnapshotBody)


def encode(seq: int, data_dir: str, engine: EngineState) -> bytes:
    """The body of a snapshot (encoded on the event loop, so it is exactly the state at seq)."""
    return _ENCODER.encode(SnapshotBody(seq, int(time.time() * 1000), data_dir, engine))


def seal(seq: int, body: bytes, chain: bytes, key: LedgerKey) -> bytes:
    """The file: header (with the ledger's chain value at seq, known once seq is durable, and the seal) and body."""
    mac = key.mac(b"snapshot" + _PREFIX_HEADER.pack(MAGIC, FORMAT_VERSION, seq, len(body)) + chain + body)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, seq, len(body), mac, chain) + body


def decode(blob: bytes, key: LedgerKey) -> SnapshotBody:
    if len(blob) < _HEADER.size:
        raise SnapshotCorrupt("shorter than its header")
    magic, version, seq, length, mac, chain = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise SnapshotCorrupt("not a Yidi snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise SnapshotOlder(f"format version {version}, this gateway reads {FORMAT_VERSION}")
    chain, body = bytes(chain), bytes(memoryview(blob)[_HEADER.size:])
    if len(body) != length:
        raise SnapshotCorrupt(f"body is {len(body)} bytes, the header says {length}")
    if key.mac(b"snapshot" + _PREFIX_HEADER.pack(magic, version, seq, length) + chain + body) != mac:
        raise SnapshotCorrupt("its seal does not match (damaged, changed, or sealed by another ledger or key)")
    snap = _DECODER.decode(body)
    if snap.seq != seq:
        raise SnapshotCorrupt(f"body seq {snap.seq} differs from header seq {seq}")
    snap.chain = chain
    return snap


class Snapshots:
    """The snapshot files of one ledger, in one directory; the newest ``keep`` are kept."""

    def __init__(self, directory: str, keep: int = 3) -> None:
        self.directory = directory
        self.keep = keep
        # Files found damaged or not sealed by this ledger (path, why) by ``newest``: the gateway reports them.
        self.rejected: list[tuple[str, str]] = []

    def path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{_PREFIX}{seq:016d}{_SUFFIX}")

    def seqs(self) -> list[int]:
        """Seqs of the snapshot files present, newest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
                digits = name[len(_PREFIX):-len(_SUFFIX)]
                if digits.isdigit():
                    out.append(int(digits))
        return sorted(out, reverse=True)

    def write(self, blob: bytes, seq: int) -> str:
        """Write a snapshot atomically and durably; drop all but the newest ``keep``."""
        os.makedirs(self.directory, exist_ok=True)
        final = self.path(seq)
        # A temporary name of its own: two writers of one seq never share (or rename away) each other's file.
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(final) + ".", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_dir(self.directory)
        for old in self.seqs()[self.keep:]:
            with contextlib.suppress(FileNotFoundError):   # another writer removed it first
                os.remove(self.path(old))
        return final

    def read(self, seq: int) -> bytes:
        """The sealed snapshot at seq, as kept (checked by ``decode``)."""
        with open(self.path(seq), "rb") as f:
            return f.read()

    def newest(self, max_seq: int, key: LedgerKey) -> SnapshotBody | None:
        """The newest valid snapshot with seq <= max_seq; others are skipped with a log line (and ``rejected``
        when they are damaged or not sealed by this ledger, as opposed to merely of an older format)."""
        for seq in self.seqs():
            path = self.path(seq)
            if seq > max_seq:
                raise LedgerBehindSnapshot(
                    f"snapshot {path} covers the ledger up to record {seq}, but the ledger ends at {max_seq}: "
                    "acknowledged records are missing from the ledger; refusing to start")
            try:
                return decode(self.read(seq), key)
            except SnapshotOlder as err:
                log.info("snapshot %s skipped: %s", path, err)
            except (SnapshotCorrupt, msgspec.DecodeError, msgspec.ValidationError) as err:
                log.error("snapshot %s rejected: %s; trying an older one", path, err)
                self.rejected.append((path, str(err)))
        return None


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
