"""The ledger's derived tables in its SQLite file: their schema and their tagged inserts.

Which rows a record derives, their columns and tags, and how a row read back
is proved are the same for every backend (gateway/store/rows.py); so are the
reads that assemble the archive's objects from them (gateway/store/reader.py).
"""
from __future__ import annotations

import sqlite3
from typing import Iterable

from ..reader import Reader, ReconCursor
from ..rows import COLUMNS
from ..seal import LedgerKey

__all__ = ["INSERT", "SCHEMA", "Reader", "ReconCursor", "Rows"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    h   INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    tag BLOB    NOT NULL,
    PRIMARY KEY (h, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS visit_status (
    mdtrt_id   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    setl_id    TEXT    NOT NULL,
    tag        BLOB    NOT NULL,
    PRIMARY KEY (mdtrt_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cancellations (
    setl_no        INTEGER PRIMARY KEY,
    cancel_date    INTEGER NOT NULL,
    cancel_seq     INTEGER NOT NULL,
    clearing_month INTEGER NOT NULL,
    tag            BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS recon (
    inst      INTEGER NOT NULL,
    setl_date INTEGER NOT NULL,
    setl_no   INTEGER NOT NULL,
    insutype  INTEGER NOT NULL,
    medfee    INTEGER NOT NULL,
    fund      INTEGER NOT NULL,
    cash      INTEGER NOT NULL,
    flags     INTEGER NOT NULL,
    tag       BLOB    NOT NULL,
    PRIMARY KEY (inst, setl_date, setl_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problems (
    problem_no INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    treatment  TEXT    NOT NULL,
    insured    TEXT    NOT NULL,
    reporter   TEXT    NOT NULL,
    row        BLOB    NOT NULL,
    tag        BLOB    NOT NULL,
    PRIMARY KEY (problem_no, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problem_notes (
    problem_seq INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    by          TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    tag         BLOB    NOT NULL,
    PRIMARY KEY (problem_seq, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reference_loads (
    seq INTEGER PRIMARY KEY,
    tag BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS legacy (
    id     TEXT    PRIMARY KEY,
    seq    INTEGER NOT NULL,
    facts  BLOB    NOT NULL,
    lines  BLOB    NOT NULL,
    tag    BLOB    NOT NULL
) WITHOUT ROWID;
"""

INSERT = {table: f"INSERT INTO {table} ({', '.join(cols)}, tag) VALUES ({', '.join('?' * (len(cols) + 1))})"
           for table, cols in COLUMNS.items()}


class Rows:
    """Tagged inserts inside the caller's transaction, counting what each table gained."""

    def __init__(self, conn: sqlite3.Connection, key: LedgerKey) -> None:
        self.conn = conn
        self.key = key
        self.added: dict[str, int] = {}

    def insert(self, table: str, values: tuple) -> None:
        self.conn.execute(INSERT[table], (*values, self.key.tag(table, values)))
        self.added[table] = self.added.get(table, 0) + 1

    def insert_many(self, table: str, rows: list[tuple]) -> None:
        tag = self.key.tag
        self.conn.executemany(INSERT[table], [(*values, tag(table, values)) for values in rows])
        self.added[table] = self.added.get(table, 0) + len(rows)

    def insert_all(self, rows: Iterable[tuple[str, tuple]]) -> None:
        """(table, values) pairs (rows.derive, rows.legacy_rows), in their order."""
        for table, values in rows:
            self.insert(table, values)
