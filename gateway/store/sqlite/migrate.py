"""How a ledger of an older schema becomes today's (schema 6), inside the transaction that opens it.

Every ledger ever written still opens and replays.  The schemas:

1. records with a unique text index on (caller, request_id);
2. ``requests``: 63-bit hashes of the keys instead of that index, the
   archive tables, a ``meta`` table; a schema-1 ledger's archive is written
   by the gateway after it replays it in full (``legacy_last_seq``);
3. the reconciliation and problem projections, each cancellation's clearing
   month;
4. each record's checksum and (unkeyed) chain value;
5. the chain keyed with the seal key, every derived row tagged and
   insert-only, the sealed head row instead of ``meta`` (gateway/store/seal.py,
   gateway/store/rows.py);
6. records packed per group (gateway/store/packed.py): a schema-5 ledger
   gains the empty ``groups`` and ``reference_loads`` tables when it is
   opened (gateway/store/sqlite/store.py) and its ``records`` rows are read
   as they are.

``migrate`` brings schemas 1–3 to 4 exactly as they were brought before
(``_to_v4``), verifies a schema-4 ledger's unkeyed chain and head file (the
last time anything is taken on trust: from here on the key proves it), and
then rewrites it as schema 5 (whose records stay one row each: 6).  Snapshots of older formats are not read: the
first start after a migration replays the ledger in full.
"""
from __future__ import annotations

import hashlib
import logging
import sqlite3
import struct
import uuid

from core import events
from core.events import SettlementCancelled, Settled, id_seq

from .. import chain
from ..chain import LedgerCorrupt
from ..rows import institution_key, recon_row, request_hash, settlement_facts
from ..seal import LedgerKey, SealKey
from . import derived

log = logging.getLogger("yidi.migrate")

PAGE_RECORDS = 1024
_COLUMNS = "kind, caller, request_id, digest, key, body, response, seq, checksum, chain"

# Schema 4's derived tables, as they were (read here only, to move their rows).
_V4_ARCHIVE = """
CREATE TABLE IF NOT EXISTS requests (h INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (h, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS visit_status (mdtrt_id TEXT PRIMARY KEY, status TEXT NOT NULL, setl_id TEXT NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cancellations (setl_id TEXT PRIMARY KEY, cancel_date INTEGER NOT NULL,
    cancel_seq INTEGER NOT NULL, clearing_month INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recon (inst INTEGER NOT NULL, setl_date INTEGER NOT NULL, setl_no INTEGER NOT NULL,
    insutype INTEGER NOT NULL, medfee INTEGER NOT NULL, fund INTEGER NOT NULL, cash INTEGER NOT NULL,
    flags INTEGER NOT NULL, cancelled INTEGER NOT NULL, PRIMARY KEY (inst, setl_date, setl_no)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problems (seq INTEGER PRIMARY KEY, state TEXT NOT NULL, treatment TEXT NOT NULL,
    insured TEXT NOT NULL, reporter TEXT NOT NULL, row BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS problem_notes (problem_seq INTEGER NOT NULL, seq INTEGER NOT NULL, action TEXT NOT NULL,
    by TEXT NOT NULL, text TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (problem_seq, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS legacy (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, facts BLOB NOT NULL,
    lines BLOB NOT NULL) WITHOUT ROWID;
"""
# Each schema-4 table → the SELECT giving its rows in schema 5's column order.
_MOVE = {
    "requests": "SELECT h, seq FROM v4_requests",
    "visit_status": "SELECT mdtrt_id, 0, status, setl_id FROM v4_visit_status",
    "cancellations": "SELECT setl_id, cancel_date, cancel_seq, clearing_month FROM v4_cancellations",
    "recon": "SELECT inst, setl_date, setl_no, insutype, medfee, fund, cash, flags FROM v4_recon",
    "problems": "SELECT seq, 0, state, treatment, insured, reporter, row FROM v4_problems",
    "problem_notes": "SELECT problem_seq, seq, action, by, text, at_ms FROM v4_problem_notes",
    "legacy": "SELECT id, seq, facts, lines FROM v4_legacy",
}


def statements(script: str) -> list[str]:
    """The statements of a DDL script, to run one by one inside an open transaction."""
    return [s.strip() for s in script.split(";") if s.strip()]


def migrate(conn: sqlite3.Connection, version: int, path: str, key: SealKey, records_ddl: str) -> dict:
    """Bring a ledger of ``version`` (1–4) to schema 5; the facts its head row starts from."""
    conn.create_function("yidi_request_hash", 2, request_hash, deterministic=True)
    if version < 4:
        _to_v4(conn, version)
    else:
        _verify_v4(conn, path)
    meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    ledger_id = uuid.uuid4().hex
    lkey = key.for_ledger(ledger_id)
    seq, head = _rechain(conn, lkey)
    for table in _MOVE:
        conn.execute(f"ALTER TABLE {table} RENAME TO v4_{table}")
    conn.execute("DROP INDEX IF EXISTS problems_state")
    for statement in statements(records_ddl + derived.SCHEMA):
        conn.execute(statement)
    rows = derived.Rows(conn, lkey)
    for table, select in _MOVE.items():
        moved = conn.execute(select).fetchall()
        if table == "cancellations":
            moved = [(id_seq(r[0], "S"), *r[1:]) for r in moved]
        rows.insert_many(table, moved)
        conn.execute(f"DROP TABLE v4_{table}")
    conn.execute("DROP TABLE meta")
    log.info("ledger %s migrated from schema %d to 5 (%d records, chain keyed with seal key %s)",
             path, version, seq, key.key_id)
    return {"ledger_id": ledger_id, "seq": seq, "chain": head,
            "legacy_last_seq": int(meta.get("legacy_last_seq", "0")), "archive": meta.get("archive", "complete")}


def _rechain(conn: sqlite3.Connection, lkey: LedgerKey) -> tuple[int, bytes]:
    """Every record's chain value again, keyed; (last seq, its chain value)."""
    previous, after = lkey.genesis, 0
    while True:
        rows = conn.execute("SELECT seq, checksum FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                            (after, PAGE_RECORDS)).fetchall()
        updates = []
        for seq, checksum in rows:
            previous = lkey.link(previous, checksum)
            updates.append((previous, seq))
        conn.executemany("UPDATE records SET chain = ? WHERE seq = ?", updates)
        if len(rows) < PAGE_RECORDS:
            return (rows[-1][0] if rows else after), previous
        after = rows[-1][0]


# ------------------------------------------------------------------ schema 4: verified once more, unkeyed
_V4_GENESIS = bytes(32)
_V4_HEAD = struct.Struct("<8sHQ32s")


def _v4_link(previous: bytes, checksum: bytes) -> bytes:
    return hashlib.blake2b(previous + checksum, digest_size=32).digest()


def _verify_v4(conn: sqlite3.Connection, path: str) -> None:
    """A schema-4 ledger's checksums, unkeyed chain and head file, before the key takes over."""
    previous, expected = _V4_GENESIS, 1
    for row in _scan(conn):
        r = _record(row)
        if r["seq"] != expected:
            raise LedgerCorrupt(path, expected, f"is missing (the next record is {r['seq']})")
        want = chain.checksum(r["seq"], r["kind"], r["caller"], r["request_id"], r["digest"], r["key"], r["body"],
                              r["response"])
        if r["checksum"] != want:
            raise LedgerCorrupt(path, r["seq"], "its content does not match its checksum (it was changed after it "
                                                "was written)")
        previous = _v4_link(previous, want)
        if r["chain"] != previous:
            raise LedgerCorrupt(path, r["seq"], "the hash chain breaks here")
        expected += 1
    head = _v4_head(chain.head_path(path))
    if head is not None and head[0] >= expected:
        raise LedgerCorrupt(path, head[0], f"is missing: {chain.head_path(path)} says records up to {head[0]} were "
                                           f"committed but the ledger ends at {expected - 1}")
    if head is not None and head[0]:
        row = conn.execute("SELECT chain FROM records WHERE seq = ?", (head[0],)).fetchone()
        if row is None or row[0] != head[1]:
            raise LedgerCorrupt(path, head[0], f"differs from what {chain.head_path(path)} recorded for it")


def _v4_head(head_path: str) -> tuple[int, bytes] | None:
    try:
        with open(head_path, "rb") as f:
            data = f.read(_V4_HEAD.size + 17)
    except FileNotFoundError:
        return None
    if len(data) != _V4_HEAD.size + 16 or hashlib.blake2b(data[:_V4_HEAD.size], digest_size=16).digest() \
            != data[_V4_HEAD.size:]:
        return None
    magic, version, seq, head = _V4_HEAD.unpack_from(data)
    return (seq, head) if magic == b"YIDIHEAD" and version == 1 else None


def _scan(conn: sqlite3.Connection):
    after = 0
    while True:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                            (after, PAGE_RECORDS)).fetchall()
        yield from rows
        if len(rows) < PAGE_RECORDS:
            return
        after = rows[-1][7]


def _record(row: tuple) -> dict:
    return dict(zip(_COLUMNS.split(", "), row, strict=True))


# ------------------------------------------------------------------ schemas 1–3 → 4, as they always were
def _to_v4(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("ALTER TABLE records ADD COLUMN checksum BLOB NOT NULL DEFAULT x''")
    conn.execute("ALTER TABLE records ADD COLUMN chain BLOB NOT NULL DEFAULT x''")
    for statement in statements(_V4_ARCHIVE):
        conn.execute(statement)
    if version == 1:
        _v1_to_v2(conn)
    elif version == 2:
        _v2_to_v3(conn)
    conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('archive', 'complete')")
    conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('legacy_last_seq', '0')")
    previous, updates = _V4_GENESIS, []
    for row in _scan(conn):
        r = _record(row)
        checksum = chain.checksum(r["seq"], r["kind"], r["caller"], r["request_id"], r["digest"], r["key"],
                                  r["body"], r["response"])
        previous = _v4_link(previous, checksum)
        updates.append((checksum, previous, r["seq"]))
    conn.executemany("UPDATE records SET checksum = ?, chain = ? WHERE seq = ?", updates)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """The unique text index on (caller, request_id) becomes ``requests``; the archive is marked missing until the
    gateway, which replays such a ledger in full, writes it; every id a schema-1 ledger issued is numbered at
    most ``legacy_last_seq``."""
    conn.execute("DROP INDEX IF EXISTS records_request")
    conn.execute("DROP INDEX IF EXISTS records_key")
    conn.execute("INSERT INTO requests (h, seq) SELECT yidi_request_hash(caller, request_id), seq"
                 " FROM records WHERE request_id != ''")
    last = conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
    conn.execute("INSERT INTO meta (name, value) VALUES ('archive', 'missing')")
    conn.execute("INSERT INTO meta (name, value) VALUES ('legacy_last_seq', ?)", (str(last),))


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Cancellations record their clearing month (0 for those already made) and the reconciliation projection is
    filled from the settlements already in the ledger."""
    conn.execute("ALTER TABLE cancellations ADD COLUMN clearing_month INTEGER NOT NULL DEFAULT 0")
    row = conn.execute("SELECT value FROM meta WHERE name = 'legacy_last_seq'").fetchone()
    legacy_last = int(row[0]) if row else 0
    insert = ("INSERT INTO recon (inst, setl_date, setl_no, insutype, medfee, fund, cash, flags, cancelled)"
              " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)")
    for (body,) in conn.cursor().execute("SELECT body FROM records WHERE kind IN ('settled', 'settlement_cancelled')"
                                         " ORDER BY seq"):
        event = events.decode(body)
        if type(event) is Settled:
            conn.execute(insert, recon_row(event.settlement))
        elif type(event) is SettlementCancelled:
            facts = event.settlement or _v2_settlement_facts(conn, event.setl_id, legacy_last)
            conn.execute("UPDATE recon SET cancelled = 1 WHERE inst = ? AND setl_date = ? AND setl_no = ?",
                         (institution_key(facts.fixmedins_code), facts.setl_date,
                          id_seq(facts.setl_id, "S")))


def _v2_settlement_facts(conn: sqlite3.Connection, setl_id: str, legacy_last: int):
    number = id_seq(setl_id, "S")
    if number > legacy_last:
        (body,) = conn.execute("SELECT body FROM records WHERE seq = ?", (number,)).fetchone()
        return events.decode(body).settlement
    (facts,) = conn.execute("SELECT facts FROM legacy WHERE id = ?", (setl_id,)).fetchone()
    return settlement_facts(facts)
