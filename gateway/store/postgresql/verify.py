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

from core.partition import seq_base

from .. import chain, packed
from ..chain import decode_head_row
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


def verify_ledger(url: str, key: SealKey | None = None, witness_dir: str = "", live: bool = False) -> str:
    """Every partition of the ledger (core/partition.py), each from its base; the derived rows once (they are
    shared, and each table's count is the sum of the partitions' sealed counts)."""
    path = safe_url(url)
    try:
        conn = psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as err:
        raise LedgerUnavailable(f"cannot open the ledger {path}: {str(err).strip().splitlines()[0]}") from None
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        parts = [part for (part,) in conn.execute("SELECT part FROM head ORDER BY part").fetchall()] or [0]
        heads = [_partition(conn, path, part, key) for part in parts]
        records = sum(head.seq - seq_base(part) for part, (head, _) in zip(parts, heads, strict=True))
        lkey = heads[0][1]
        if lkey is None:
            return (f"OK (without the seal key) {path}: {records} records, checksums and row counts verified; the "
                    "chain, the seals and the derived rows' tags need --key")
        tagged = _tags(conn, lkey, path)
        copies = "witness and snapshots left to the running gateway"
        if not live:
            copies = "; ".join(_copies(conn, path, lkey, head.seq, witness_dir, part)
                               for part, (head, _) in zip(parts, heads, strict=True))
    except psycopg.Error as err:
        raise LedgerUnavailable(f"cannot read the ledger {path}: {str(err).strip().splitlines()[0]}") from None
    finally:
        conn.close()
    split = f" in {len(parts)} partitions" if len(parts) > 1 else ""
    return (f"OK {path}: {records} records{split}, checksums and keyed hash chain verified, head "
            f"{heads[0][0].chain.hex()[:16]}…; {tagged} derived rows and their counts verified; {copies}")


def _partition(conn: psycopg.Connection, path: str, part: int, key: SealKey | None):
    """One partition's records from its base against its sealed head row: its head and the ledger's key."""
    others: dict[str, int] = {}
    for (body,) in conn.execute("SELECT body FROM head WHERE part <> %s", (part,)).fetchall():
        for table, n in decode_head_row(body).counts.items():   # sealed: proved when that partition is
            others[table] = others.get(table, 0) + n
    return proved_head(path, conn.execute("SELECT body, tag FROM head WHERE part = %s", (part,)).fetchone(),
                       log_reads(conn, path, part=part).scan(),
                       lambda t: conn.execute(packed.count_sql(t)).fetchone()[0] - others.get(t, 0), key,
                       after=seq_base(part))


def _copies(conn, path: str, lkey, last: int, witness_dir: str, part: int) -> str:
    """The partition's witness (if a directory is named) and every snapshot of it kept in the database: sealed,
    and on its chain."""
    chain_at = log_reads(conn, path, lkey, part).chain_at
    witnessed = ""
    if witness_dir:
        witnessed = f"witness at seq {check_witness(path, witness_dir, lkey, last, chain_at, part).seq} checked; "
    checked_snapshots = 0
    for seq, blob in conn.execute("SELECT seq, blob FROM snapshots WHERE part = %s ORDER BY seq", (part,)).fetchall():
        checked_snapshots += check_snapshot(path, seq, blob, lkey, last, chain_at, f"snapshot at seq {seq}")
    where = f"partition {part}: " if part else ""
    return f"{where}{witnessed}{checked_snapshots} snapshot(s) checked"
