"""``yidi verify-ledger FILE --key KEY``: prove a whole ledger, offline or beside a running gateway.

Everything start-up does not read in full is read here, in one read
transaction (a consistent view while the gateway goes on writing):

* every record: dense seqs, its content against its checksum, and with the
  seal key the keyed chain from the ledger's genesis value to its head;
* the sealed head row: its seal, its last record and chain value, and the
  row count of every table;
* every derived row (the idempotency index, the archive's tables, the
  reconciliation projection, problem reports) against its tag;
* the head file, the witness (``--witness``) and every snapshot's seal and
  chain value.

Without ``--key`` only what needs no secret is checked (checksums, seqs,
counts), and the answer says so.  The ledger is opened read-only
(``mode=ro``: nothing is migrated, checkpointed or written).  Returns one
line saying what was verified; raises ``LedgerCorrupt`` (one sentence naming
the file, the record and what is wrong) on the first problem.

The gateway runs this in a process of its own once it serves (gateway/app.py),
so the records and rows start-up did not read are proved within seconds,
on the other core.
"""
from __future__ import annotations

import os
import sqlite3
import urllib.parse

import msgspec

from .. import chain, snapshot
from ..rows import COLUMNS, TABLES, checked
from ..chain import decode_head_row as _HEAD_DECODE
from ..parts import LedgerUnavailable, Record
from .store import _COLUMNS, SCAN_PAGE_RECORDS, SCHEMA_VERSION
from ..seal import LedgerKey, SealKey


def _records(conn: sqlite3.Connection):
    after = 0
    while True:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                            (after, SCAN_PAGE_RECORDS)).fetchall()
        for row in rows:
            yield Record(*row)
        if len(rows) < SCAN_PAGE_RECORDS:
            return
        after = rows[-1][7]


def _checksums_only(path: str, records) -> chain.Head:
    """Without the key: dense seqs and each record's content against its checksum."""
    head = chain.Head(0, b"")
    for record in records:
        if record.seq != head.seq + 1:
            raise chain.LedgerCorrupt(path, head.seq + 1, f"is missing (the next record is {record.seq})")
        if record.checksum != chain.checksum(record.seq, record.kind, record.caller, record.request_id,
                                             record.digest, record.key, record.body, record.response):
            raise chain.LedgerCorrupt(path, record.seq, "its content does not match its checksum (it was changed "
                                                        "after it was written)")
        head = chain.Head(record.seq, record.chain)
    return head


def _tags(conn: sqlite3.Connection, key: LedgerKey, path: str) -> int:
    rows = 0
    for table, columns in COLUMNS.items():
        for row in conn.execute(f"SELECT {', '.join(columns)}, tag FROM {table}"):
            checked(key, path, table, row)
            rows += 1
    return rows


def verify_ledger(path: str, snapshot_dir: str, key: SealKey | None = None, witness_dir: str = "",
                  live: bool = False) -> str:
    """``live``: a gateway is writing the ledger now, so its head file and witness may be ahead of the view
    checked here, and its snapshots are its own to judge (it checked them when it started, refused and reported
    any that failed); they are left to it."""
    if not os.path.exists(path):
        if os.path.exists(chain.head_path(path)):
            raise chain.LedgerCorrupt(path, 0, f"is missing: the ledger file is gone but its head file "
                                               f"{chain.head_path(path)} remains (acknowledged records were lost)")
        raise LedgerUnavailable(f"no ledger at {path}")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise LedgerUnavailable(f"ledger {path} has schema {version}, not {SCHEMA_VERSION}: open it once with "
                                    "this gateway (with its seal key) to migrate it")
        conn.execute("BEGIN")   # one consistent view, however long the check takes
        row = conn.execute("SELECT body, tag FROM head WHERE id = 1").fetchone()
        if row is None:
            raise chain.LedgerCorrupt(path, 0, "has no head row (it was deleted): the ledger cannot prove itself")
        try:
            head_row = _HEAD_DECODE(row[0])
        except msgspec.DecodeError:
            raise chain.LedgerCorrupt(path, 0, "has a head row that cannot be read (it was changed)") from None
        lkey = key.for_ledger(head_row.ledger_id) if key is not None else None
        if lkey is not None and lkey.mac(b"head" + row[0]) != row[1]:
            raise chain.LedgerCorrupt(path, head_row.seq, "the head row does not match its seal (changed, resealed "
                                                          "without the seal key, or another seal key)")
        head = chain.verify(path, _records(conn), lkey) if lkey is not None else _checksums_only(path, _records(conn))
        if head.seq != head_row.seq or (head.seq and head.chain != head_row.chain):
            raise chain.LedgerCorrupt(path, max(head.seq, head_row.seq), f"the ledger ends at record {head.seq} "
                                                                         f"but its sealed head says {head_row.seq}")
        for table in TABLES:
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if count != head_row.counts.get(table, 0):
                raise chain.LedgerCorrupt(path, head.seq, f"table {table} has {count} rows but the sealed head "
                                                          f"counts {head_row.counts.get(table, 0)}")
        if lkey is None:
            conn.execute("COMMIT")
            return (f"OK (without the seal key) {path}: {head.seq} records, checksums and row counts verified; the "
                    "chain, the seals and the derived rows' tags need --key")
        tagged = _tags(conn, lkey, path)
        conn.execute("COMMIT")

        def chain_at(seq: int):
            if seq == 0:
                return lkey.genesis
            row = conn.execute("SELECT chain FROM records WHERE seq = ?", (seq,)).fetchone()
            return None if row is None else row[0]

        head_file = chain.HeadFile(chain.head_path(path), lkey)
        if not live:
            chain.check_head(path, head_file.read(), head.seq, chain_at, head_file.path)
        witnessed = ""
        if witness_dir and not live:
            witness = chain.HeadFile(chain.witness_path(witness_dir, lkey.ledger_id), lkey)
            recorded = witness.read()
            if recorded is None:
                raise chain.LedgerCorrupt(path, head.seq, f"has no witness at {witness.path}")
            chain.check_head(path, recorded, head.seq, chain_at, f"the witness {witness.path}")
            witnessed = f"; witness at seq {recorded.seq} checked"
        snaps = snapshot.Snapshots(snapshot_dir)
        checked = 0
        for seq in snaps.seqs() if not live else ():
            with open(snaps.path(seq), "rb") as f:
                try:
                    snap = snapshot.decode(f.read(), lkey)
                except snapshot.SnapshotOlder:
                    continue
                except snapshot.SnapshotCorrupt as err:
                    raise chain.LedgerCorrupt(path, seq, f"snapshot {snaps.path(seq)}: {err}") from None
            chain.check_head(path, chain.Head(snap.seq, snap.chain), head.seq, chain_at, f"snapshot {snaps.path(seq)}")
            checked += 1
    except sqlite3.Error as err:
        raise LedgerUnavailable(f"cannot read the ledger {path}: {err}") from None
    finally:
        conn.close()
    copies = ("head file, witness and snapshots left to the running gateway" if live else
              f"head file {'checked' if head_file.read() else 'absent'}{witnessed}; {checked} snapshot(s) checked")
    return (f"OK {path}: {head.seq} records, checksums and keyed hash chain verified, head "
            f"{head.chain.hex()[:16]}…; {tagged} derived rows and their counts verified; {copies}")
