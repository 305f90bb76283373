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


from .. import chain, packed, snapshot
from ..rows import COLUMNS, checked
from ..parts import LedgerUnavailable
from .store import SCHEMA_VERSION
from ..seal import LedgerKey, SealKey
from ..verify import check_snapshot, check_witness, proved_head


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
        body_tag = conn.execute("SELECT body, tag FROM head WHERE id = 1").fetchone()
        log = packed.reads_of(lambda sql, args: conn.execute(sql, args).fetchall(), None, path)
        head, lkey = proved_head(path, body_tag, log.scan(),
                                 lambda t: conn.execute(packed.count_sql(t)).fetchone()[0], key)
        if lkey is None:
            conn.execute("COMMIT")
            return (f"OK (without the seal key) {path}: {head.seq} records, checksums and row counts verified; the "
                    "chain, the seals and the derived rows' tags need --key")
        tagged = _tags(conn, lkey, path)
        conn.execute("COMMIT")
        log.key = lkey
        chain_at = log.chain_at

        head_file = chain.HeadFile(chain.head_path(path), lkey)
        if not live:
            chain.check_head(path, head_file.read(), head.seq, chain_at, head_file.path)
        witnessed = ""
        if witness_dir and not live:
            recorded = check_witness(path, witness_dir, lkey, head.seq, chain_at)
            witnessed = f"; witness at seq {recorded.seq} checked"
        snaps = snapshot.Snapshots(snapshot_dir)
        checked = 0
        for seq in snaps.seqs() if not live else ():
            with open(snaps.path(seq), "rb") as f:
                blob = f.read()
            checked += check_snapshot(path, seq, blob, lkey, head.seq, chain_at, f"snapshot {snaps.path(seq)}")
    except sqlite3.Error as err:
        raise LedgerUnavailable(f"cannot read the ledger {path}: {err}") from None
    finally:
        conn.close()
    copies = ("head file, witness and snapshots left to the running gateway" if live else
              f"head file {'checked' if head_file.read() else 'absent'}{witnessed}; {checked} snapshot(s) checked")
    return (f"OK {path}: {head.seq} records, checksums and keyed hash chain verified, head "
            f"{head.chain.hex()[:16]}…; {tagged} derived rows and their counts verified; {copies}")
