"""Durability: the ledger and everything derived from it, behind small parts a backend implements.

* ``parts.py``: the parts (``Log``, ``RequestIndex``, ``ArchiveStore``,
  ``Projections``, ``SnapshotStore``; ``Store`` is the first four) and the
  ``Record``;
* ``ledger.py``: the group-commit front end (one writer thread, one
  transaction per group of groups);
* ``chain.py`` (checksums, the keyed chain, the sealed head), ``seal.py``
  (the seal key), ``rows.py`` (the derived rows and their tags): the proofs,
  the same for every backend;
* ``idempotency.py``: the keys seen, in bounded memory in front of the
  ``RequestIndex``;
* ``snapshot.py``: sealed snapshots of the engine's state, as files;
* ``sqlite/``: the SQLite backend (the default);
* ``postgresql/``: the PostgreSQL backend (psycopg 3; docs/postgresql.md).

``open_store`` picks the backend from the ledger's name, ``open_snapshots``
where its snapshots are kept.
"""
from __future__ import annotations

import os

from .chain import LedgerCorrupt
from .ledger import GroupCommitLedger, LedgerClosed, LedgerFatal
from .parts import (ArchiveStore, LedgerUnavailable, Log, Projections, Record, ReconRange, RequestIndex,
                    SnapshotStore, StorageDown, Store)
from .seal import SealKey
from .snapshot import Snapshots
from .sqlite.store import SqliteStore, open_sqlite

__all__ = [
    "ArchiveStore", "GroupCommitLedger", "LedgerClosed", "LedgerCorrupt", "LedgerFatal", "LedgerUnavailable", "Log",
    "Projections", "ReconRange", "Record", "RequestIndex", "SnapshotStore", "SqliteStore", "StorageDown", "Store",
    "is_postgresql", "open_snapshots", "open_store",
]


def is_postgresql(url_or_path: str) -> bool:
    return url_or_path.startswith(("postgresql://", "postgres://"))


def open_store(url_or_path: str, key: SealKey, max_bytes: int = 0, witness_dir: str = "", take: bool = True,
               lease_ttl_s: float = 2.0, part: int = 0) -> Store:
    """Open the ledger store named by a path, ``sqlite:///path`` or ``postgresql://user@host:port/database``.

    ``max_bytes`` caps a SQLite file (a PostgreSQL server has its own quotas).  PostgreSQL only: ``take`` the
    partition's lease at once (a tool), or not (a gateway node takes it itself: gateway/ownership.py);
    ``lease_ttl_s`` the lease's length; ``part`` the ledger partition this store reads and writes (core/partition.py).
    """
    if witness_dir and not os.path.isdir(witness_dir):
        raise LedgerUnavailable(f"the witness directory {witness_dir} does not exist (mount its volume, or create "
                                "it for a new deployment)")
    if is_postgresql(url_or_path):
        from .postgresql.store import open_postgresql   # psycopg is imported only by a gateway that uses it

        return open_postgresql(url_or_path, key, witness_dir=witness_dir, take=take, lease_ttl_s=lease_ttl_s,
                               part=part)
    if part:
        raise ValueError("a SQLite ledger is one partition: partitions need a postgresql:// store")
    if url_or_path.startswith("sqlite:///"):
        # As SQLAlchemy: sqlite:///relative/path, sqlite:////absolute/path.
        url_or_path = url_or_path[len("sqlite:///") :]
    elif "://" in url_or_path:
        raise ValueError(f"unsupported ledger URL {url_or_path.split('://')[0]}://…; give a SQLite file path or a "
                         "postgresql:// URL")
    return open_sqlite(url_or_path, key, max_bytes=max_bytes, witness_dir=witness_dir)


def open_snapshots(store: Store, directory: str) -> SnapshotStore:
    """Where the store's snapshots are kept: its own table (PostgreSQL), else files in ``directory``."""
    own = getattr(store, "snapshot_store", None)
    return own() if own is not None else Snapshots(directory)
