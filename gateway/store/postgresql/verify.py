"""``yidi verify-ledger postgresql://… --key KEY``: prove a whole PostgreSQL ledger, offline or beside its gateway.

What gateway/store/sqlite/verify.py proves of a file, in one REPEATABLE READ
transaction (a consistent view while the gateway goes on writing), the
derived rows read with server-side cursors: every record (dense seqs, checksums, with the key the
keyed chain from genesis), the sealed head row (its seal, last record, chain
value and every table's row count), every derived row against its tag (and
each idempotency row's hash against its caller and request id), and unless
``live`` the witness and every snapshot kept in the database.  The password
comes from the URL, PGPASSWORD or ~/.pgpass; messages name the URL without it.
"""
from __future__ import annotations

import psycopg

from .. import chain, packed
from ..parts import LedgerUnavailable
from ..rows import COLUMNS, checked, request_hash
from ..seal import SealKey
from ..verify import check_snapshot, check_witness, proved_head
from . import log_reads, safe_url


def _rows(conn: psycopg.Connection, query: str, args: tuple = ()):
    with conn.cursor(name="yidi_verify") as cursor:
        cursor.itersize = 2000
        cursor.execute(query, args)
        yield from cursor


def _tags(conn: psycopg.Connection, key, path: str) -> int:
    rows = 0
    for table, columns in COLUMNS.items():
        extra = ", caller, request_id" if table == "requests" else ""
        for row in _rows(conn, f"SELECT {', '.join(columns)}, tag{extra} FROM {table}"):
            if extra:
                values = checked(key, path, table, row[:3])
                if values[0] != request_hash(row[3], row[4]):
                    raise chain.LedgerCorrupt(path, values[1], "an idempotency row's key does not match its hash "
                                                               "(its caller or request id was changed)")
            else:
                checked(key, path, table, row)
            rows += 1
    return rows


def verify_ledger(url: str, key: SealKey | None = None, witness_dir: str = "", live: bool = False,
                  part: int = 0) -> str:
    path = safe_url(url)
    try:
        conn = psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as err:
        raise LedgerUnavailable(f"cannot open the ledger {path}: {str(err).strip().splitlines()[0]}") from None
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        scope = f"part = {int(part)} AND "
        log = log_reads(conn, path, part=part)
        head, lkey = proved_head(path, conn.execute("SELECT body, tag FROM head WHERE part = %s", (part,)).fetchone(),
                                 log.scan(), lambda t: conn.execute(packed.count_sql(t, scope)).fetchone()[0], key)
        if lkey is None:
            return (f"OK (without the seal key) {path}: {head.seq} records, checksums and row counts verified; the "
                    "chain, the seals and the derived rows' tags need --key")
        tagged = _tags(conn, lkey, path)
        log.key = lkey
        chain_at = log.chain_at
        copies = "witness and snapshots left to the running gateway"
        if not live:
            copies = _copies(conn, path, lkey, head.seq, chain_at, witness_dir, part)
    except psycopg.Error as err:
        raise LedgerUnavailable(f"cannot read the ledger {path}: {str(err).strip().splitlines()[0]}") from None
    finally:
        conn.close()
    return (f"OK {path}: {head.seq} records, checksums and keyed hash chain verified, head "
            f"{head.chain.hex()[:16]}…; {tagged} derived rows and their counts verified; {copies}")


def _copies(conn, path: str, lkey, last: int, chain_at, witness_dir: str, part: int) -> str:
    """The witness (if one is named) and every snapshot kept in the database: sealed, and on this chain."""
    witnessed = ""
    if witness_dir:
        witnessed = f"witness at seq {check_witness(path, witness_dir, lkey, last, chain_at).seq} checked; "
    checked_snapshots = 0
    for seq, blob in conn.execute("SELECT seq, blob FROM snapshots WHERE part = %s ORDER BY seq", (part,)).fetchall():
        checked_snapshots += check_snapshot(path, seq, blob, lkey, last, chain_at, f"snapshot at seq {seq}")
    return f"{witnessed}{checked_snapshots} snapshot(s) checked"
