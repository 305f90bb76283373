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
* ``sqlite/``: the SQLite backend (the default, and today the only one).

``open_store`` picks the backend from the ledger's name.
"""
from __future__ import annotations

import os

from .chain import LedgerCorrupt
from .ledger import GroupCommitLedger, LedgerClosed, LedgerFatal
from .parts import (ArchiveStore, LedgerUnavailable, Log, Projections, Record, ReconRange, RequestIndex,
                    SnapshotStore, StorageDown, Store)
from .seal import SealKey
from .sqlite.store import SqliteStore, open_sqlite

__all__ = [
    "ArchiveStore", "GroupCommitLedger", "LedgerClosed", "LedgerCorrupt", "LedgerFatal", "LedgerUnavailable", "Log",
    "Projections", "ReconRange", "Record", "RequestIndex", "SnapshotStore", "SqliteStore", "StorageDown", "Store",
    "open_store",
]


def open_store(url_or_path: str, key: SealKey, max_bytes: int = 0, witness_dir: str = "") -> Store:
    """Open the ledger store named by a path, ``sqlite:///path`` or a URL.

    ``postgresql://`` is reserved for the PostgreSQL backend, which is not
    implemented yet.
    """
    if url_or_path.startswith(("postgresql://", "postgres://")):
        raise NotImplementedError(
            "PostgreSQL ledger backend is not yet supported; use a SQLite file path"
        )
    if url_or_path.startswith("sqlite:///"):
        # As SQLAlchemy: sqlite:///relative/path, sqlite:////absolute/path.
        url_or_path = url_or_path[len("sqlite:///") :]
    elif "://" in url_or_path:
        raise ValueError(f"unsupported ledger URL {url_or_path!r}; give a SQLite file path")
    if witness_dir and not os.path.isdir(witness_dir):
        raise LedgerUnavailable(f"the witness directory {witness_dir} does not exist (mount its volume, or create "
                                "it for a new deployment)")
    return open_sqlite(url_or_path, key, max_bytes=max_bytes, witness_dir=witness_dir)
