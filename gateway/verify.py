"""``yidi verify-ledger FILE``: check a whole ledger offline.

Every record's checksum and the hash chain from record 1 (gateway/chain.py),
the head side file (``<ledger>.head``) and the chain value recorded in each
snapshot.  The ledger is opened read-only (``mode=ro``: nothing is migrated,
checkpointed or written), so it can be checked beside a running gateway or
on a copy.  Returns one line saying what was verified; raises
``LedgerCorrupt`` (one sentence naming the file, the record and what is
wrong) on the first problem.
"""
from __future__ import annotations

import os
import sqlite3
import urllib.parse

from . import chain, snapshot
from .ledger import SCAN_PAGE_RECORDS, LedgerUnavailable, Record, _COLUMNS


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


def verify_ledger(path: str, snapshot_dir: str) -> str:
    if not os.path.exists(path):
        raise LedgerUnavailable(f"no ledger at {path}")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < 3:
            raise LedgerUnavailable(f"ledger {path} has schema {version}, before the hash chain (3): "
                                    "open it once with this gateway to migrate it")
        head = chain.verify(path, _records(conn))

        def chain_at(seq: int):
            if seq == 0:
                return chain.GENESIS
            row = conn.execute("SELECT chain FROM records WHERE seq = ?", (seq,)).fetchone()
            return None if row is None else row[0]

        head_file = chain.HeadFile(path)
        chain.check_head(path, head_file.read(), head.seq, chain_at, head_file.path)
        snaps = snapshot.Snapshots(snapshot_dir)
        checked = 0
        for seq in snaps.seqs():
            with open(snaps.path(seq), "rb") as f:
                snap = snapshot.decode(f.read())
            if snap.chain:
                chain.check_head(path, chain.Head(snap.seq, snap.chain), head.seq, chain_at,
                                 f"snapshot {snaps.path(seq)}")
                checked += 1
    except sqlite3.Error as err:
        raise LedgerUnavailable(f"cannot read the ledger {path}: {err}") from None
    finally:
        conn.close()
    return (f"OK {path}: {head.seq} records, checksums and hash chain verified, head {head.chain.hex()[:16]}…; "
            f"head file {'checked' if head_file.read() else 'absent'}; {checked} snapshot(s) checked")
