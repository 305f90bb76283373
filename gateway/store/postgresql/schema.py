"""The ledger's tables in PostgreSQL (docs/postgresql.md shows them whole).

The derived tables are the SQLite ones (gateway/store/sqlite/derived.py)
with PostgreSQL's types: every integer a BIGINT (money in fen, dates, seqs,
63-bit hashes), every blob a BYTEA, so both backends hold the same rows and
the same tags.  What differs:

* ``groups`` (the records packed per commit group, gateway/store/packed.py),
  ``records`` (the rows of records written one per row by schema 1) and
  ``head`` are keyed by a partition (``part``) first: a ledger split by
  insured province (core/partition.py) gives each partition its own dense
  seqs (from part × 10^13), chain and sealed head row; the other tables are
  shared, their rows named by seqs unique across partitions.
* ``head.token`` is the fencing token: every append rewrites the head row
  only where the token is still the writer's own, so an append from a
  deposed writer changes nothing (its transaction fails and is rolled back).
* ``leases`` says which node owns each partition, until when (the server's
  clock) and with which token: taking a lease writes its new token into the
  partition's head row in the same transaction (gateway/store/postgresql/lease.py).
* ``requests`` has a UNIQUE constraint per (caller, request_id), not only the
  63-bit hash: two writers (two nodes) inserting the same key cannot both
  commit.  The hash stays (indexed) for ``known_request_hashes`` and is what
  the row's tag covers, as in SQLite.
* ``request_claims`` holds the keys a partition's owner is deciding: claimed
  (caller, request_id, the claiming partition, the request's digest) before
  the request is decided, released when it ends without a record, and
  deleted in bulk once recorded (the requests row holds the key then).  A ledger split by insured province
  gives each partition its own owner and memory of keys in flight, and the
  claim is what keeps one key from being decided in two partitions at once
  (docs/postgresql.md, Partitions).  Not a ledger table: nothing in it is
  tagged, counted or proved, and an owner taking a partition deletes the
  partition's claims (its old owner's, whose groups can no longer commit).
* ``person_routes`` says which partition holds each person filed by RPC (备案,
  not in the reference data every node loads): by ``p:`` psn_no, ``c:`` a
  hash of the certno, ``f:`` filing_id, written by the group commit that
  records the filing (and again by an owner taking its partition), so any
  node routes a call naming them.  Not a ledger table either: a route only
  says where to send a call, whose owner decides it from its own state.
* ``snapshots`` keeps the sealed snapshots (gateway/store/snapshot.py) per
  partition, so any node can restore one.
"""
from __future__ import annotations

import re

from ..sqlite.derived import SCHEMA as SQLITE_DERIVED

# 2: records packed per group (``groups``, ``reference_loads``); a schema-1 ledger keeps its ``records`` rows.
SCHEMA_VERSION = 2

_RECORDS = """
CREATE TABLE IF NOT EXISTS groups (
    part       SMALLINT NOT NULL,
    last_seq   BIGINT   NOT NULL,
    first_seq  BIGINT   NOT NULL,
    body       BYTEA    NOT NULL,
    PRIMARY KEY (part, last_seq)
);
CREATE TABLE IF NOT EXISTS records (
    part       SMALLINT NOT NULL,
    seq        BIGINT   NOT NULL,
    kind       TEXT     NOT NULL,
    caller     TEXT     NOT NULL,
    request_id TEXT     NOT NULL,
    digest     BYTEA    NOT NULL,
    key        TEXT     NOT NULL,
    body       BYTEA    NOT NULL,
    response   BYTEA    NOT NULL,
    checksum   BYTEA    NOT NULL,
    chain      BYTEA    NOT NULL,
    PRIMARY KEY (part, seq)
);
CREATE INDEX IF NOT EXISTS records_reference ON records (part, seq) WHERE kind = 'reference_loaded';
CREATE TABLE IF NOT EXISTS head (
    part    SMALLINT PRIMARY KEY,
    body    BYTEA    NOT NULL,
    tag     BYTEA    NOT NULL,
    token   BIGINT   NOT NULL,
    schema  INTEGER  NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    part    SMALLINT NOT NULL,
    seq     BIGINT   NOT NULL,
    blob    BYTEA    NOT NULL,
    PRIMARY KEY (part, seq)
);
CREATE TABLE IF NOT EXISTS leases (
    part       SMALLINT    PRIMARY KEY,
    owner      TEXT        NOT NULL,
    address    TEXT        NOT NULL,
    token      BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS probe (x BYTEA);
"""

_REQUESTS = """
CREATE TABLE IF NOT EXISTS requests (
    caller     TEXT   NOT NULL,
    request_id TEXT   NOT NULL,
    h          BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    tag        BYTEA  NOT NULL,
    PRIMARY KEY (caller, request_id)
);
CREATE INDEX IF NOT EXISTS requests_h ON requests (h);
CREATE TABLE IF NOT EXISTS person_routes (
    name       TEXT     PRIMARY KEY,
    part       SMALLINT NOT NULL
);
CREATE TABLE IF NOT EXISTS request_claims (
    caller     TEXT     NOT NULL,
    request_id TEXT     NOT NULL,
    part       SMALLINT NOT NULL,
    digest     BYTEA    NOT NULL,
    PRIMARY KEY (caller, request_id)
);
"""


def _derived() -> str:
    """The SQLite derived tables but ``requests``, in PostgreSQL's types."""
    text = re.sub(r"CREATE TABLE IF NOT EXISTS requests \(.*?\) WITHOUT ROWID;", "", SQLITE_DERIVED, flags=re.S)
    return text.replace(") WITHOUT ROWID;", ");").replace("INTEGER", "BIGINT").replace("BLOB", "BYTEA")


SCHEMA = _RECORDS + _REQUESTS + _derived()

# Column types for COPY (binary) of the tables a settlement writes, in insert order.
COPY_TYPES = {
    "requests": ("text", "text", "int8", "int8", "bytea"),
    "recon": ("int8",) * 8 + ("bytea",),
}
