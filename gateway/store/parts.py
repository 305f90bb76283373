"""The store's parts: what a backend implements, and all the rest of the gateway sees of it.

A backend (``sqlite.SqliteStore``, ``postgresql.PostgresStore``) implements
every part; its callers each name only the part they use:

``Log``
    The records: appended in groups, each group ONE transaction together
    with the rows it derives (the idempotency keys, the archive's and the
    projections' rows: gateway/store/rows.py) and the sealed head; scanned in
    seq order for replay; read one at a time, proved before it is returned.
    The group-commit front end (gateway/store/ledger.py) writes through it.
``RequestIndex``
    The idempotency index (SPEC §6): which keys the ledger holds, and the
    record of one (gateway/store/idempotency.py keeps the recent ones in
    memory in front of it, and asks the index from its look-up thread, so
    both methods are called off the event loop as well as on it).
``ArchiveStore``
    The archive (core/archive.py) read by id: visits, settlements, problem
    reports (the engine reads it through ``app.StoreArchive``).
``Projections``
    The queries of the derived tables: reconciliation totals and a chunked
    range read, risk-flag lists, problem lists and notes (the services reach
    them through gateway/reads.py, off the event loop).
``SnapshotStore``
    Sealed snapshots of the engine's state at a seq (gateway/store/snapshot.py
    keeps them as files beside a SQLite ledger; PostgreSQL in a table of its
    own: ``open_snapshots`` picks).

What every backend keeps, exactly (docs/design.md, "Trust"): records are
proved when read (checksum and keyed chain, gateway/store/chain.py); every
derived row is tagged, insert-only and counted in the sealed head row; a
failed append leaves nothing visible, or its outcome is unknown and the
caller treats it as fatal.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.archive import ArchivedProblem, ArchivedSettlement, ArchivedVisit, ProblemNote
from core.funds import Figures, Item

from .chain import Head
from .seal import LedgerKey
from .snapshot import SnapshotBody


@dataclass(slots=True, frozen=True)
class Record:
    """One ledger record. Field order matches the table's column order."""

    kind: str  # "filing", "admit", "fees", "settle", "cancel_settle", ...
    caller: str  # calling platform id, e.g. "210000"
    request_id: str  # idempotency key, unique per caller; "" if none
    digest: bytes  # hash of the canonical request, 16..32 bytes
    key: str  # primary object id (setl_id, mdtrt_id, filing_id ...), for people reading the ledger
    body: bytes  # the event (core/events.py encoding), what replay applies
    response: bytes  # serialized protobuf response, replayed byte-identical
    seq: int = 0  # 1-based, dense; 0: let the store take the next one
    checksum: bytes = b""  # gateway/store/chain.py: of this record's content (computed by the store)
    chain: bytes = b""     # and bound to every record before it
    # Archive changes the event makes (core/archive.py), written in the same transaction; not a column.
    changes: tuple = ()


class LedgerUnavailable(Exception):
    """The ledger cannot be opened or written (missing directory, read-only file, full disk ...): one line."""


class Deposed(RuntimeError):
    """Another writer took the ledger (a newer fencing token): this one's appends are refused."""


class StorageDown(OSError):
    """A test write (``Log.probe``) failed: the store cannot be written now (a full disk, a failing fsync,
    a lost connection)."""


class Log(Protocol):
    path: str       # names the ledger in messages (a file path; a URL without its password)
    key: LedgerKey  # this ledger's key: chain links, derived rows' tags, snapshots' seals
    part: int       # the ledger partition this store writes (core/partition.py; 0: the whole ledger)
    base_seq: int   # the seq before the partition's first record: its chain starts there at genesis

    def append(self, records: Sequence[Record]) -> list[int]:
        """Write ``records`` and the rows they derive in ONE transaction, durable when this returns.

        Returns the assigned seqs, in the order of ``records``. Records given
        with seq 0 get the next ones; records given with seqs must continue
        the log exactly. On any exception nothing of the transaction is
        visible (or its outcome is unknown: callers must treat a failure as
        fatal).
        """
        ...

    def scan(self, after_seq: int = 0) -> Iterator[Record]:
        """All records with seq > after_seq, in seq order, in constant memory (proved by the caller, who replays
        them against the chain)."""
        ...

    def read(self, seq: int) -> Record | None:
        """The record with that seq, proved (checksum and chain link) before it is returned."""
        ...

    def head(self) -> Head:
        """The last committed record's seq and chain value (0 and the genesis value for an empty ledger)."""
        ...

    def chain_at(self, seq: int) -> bytes | None:
        """The chain value of record seq (the genesis value for 0), None if there is no such record."""
        ...

    def last_seq(self) -> int: ...

    def last_reference_load(self) -> Record | None:
        """The newest record of kind ``reference_loaded``, proved."""
        ...

    def probe(self) -> None:
        """A test write, committed and durable, then undone; ``StorageDown`` where a real commit would fail."""
        ...

    def close(self) -> None: ...


class RequestIndex(Protocol):
    def find_request(self, caller: str, request_id: str) -> Record | None:
        """The record holding this key (its own, or for a reversal (冲正) its original's), proved."""
        ...

    def known_request_hashes(self, hashes: Sequence[int]) -> set[int]:
        """Which of these key hashes (rows.request_hash) the ledger holds."""
        ...


class ArchiveStore(Protocol):
    def archive_complete(self) -> bool:
        """False for a schema-1 ledger, until ``write_archive`` fills its archive."""
        ...

    def write_archive(self, visits: Sequence[ArchivedVisit], settlements: Sequence[ArchivedSettlement]) -> None:
        """Fill the archive of a migrated schema-1 ledger (from its full replay) in one transaction."""
        ...

    def visit(self, mdtrt_id: str) -> ArchivedVisit | None: ...

    def settlement(self, setl_id: str) -> ArchivedSettlement | None: ...

    def problem(self, problem_id: str) -> ArchivedProblem | None: ...


class ReconRange(Protocol):
    """A reconciliation range's settlements, ascending by number, read a chunk at a time."""

    def fetchmany(self, n: int) -> list[Item]:
        """Up to n settlements as reconciliation items; [] at the end."""
        ...

    def close(self) -> None: ...


class Projections(Protocol):
    def recon_totals(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = "") -> Figures:
        """The platform's figures for an institution and a date range: its live (not cancelled) settlements."""
        ...

    def recon_range(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = "") -> ReconRange:
        """The range's settlements, on a read of its own (a long read must not hold up anyone else's)."""
        ...

    def flagged(self, fixmedins_code: str, date_from: int, date_to: int, mask: int,
                limit: int) -> list[tuple[str, int, int, int, bool]]:
        """(setl_id, setl_date, flags, medfee, cancelled) of the range's settlements with any flag of ``mask``,
        by date and id, at most ``limit``."""
        ...

    def list_problems(self, province: str, state: str, after_seq: int, limit: int) -> list[ArchivedProblem]:
        """Reports as they now stand, by number after ``after_seq``, of a state and a province ("": any)."""
        ...

    def problem_notes(self, problem_id: str) -> list[ProblemNote]: ...


class SnapshotStore(Protocol):
    rejected: list[tuple[str, str]]   # (where, why) of snapshots found damaged by ``newest``: reported, then cleared

    def path(self, seq: int) -> str:
        """Where the snapshot at seq is (or would be) kept, for messages."""
        ...

    def seqs(self) -> list[int]:
        """Seqs of the snapshots kept, newest first."""
        ...

    def write(self, blob: bytes, seq: int) -> str:
        """Keep a sealed snapshot (snapshot.seal) durably; where it is. Older ones beyond a few are dropped."""
        ...

    def newest(self, max_seq: int, key: LedgerKey) -> SnapshotBody | None:
        """The newest snapshot with seq <= max_seq whose seal holds; damaged ones are skipped (``rejected``)."""
        ...


class Store(Log, RequestIndex, ArchiveStore, Projections, Protocol):
    """Every part but snapshots, on one database: what a backend implements (``open_store`` picks it)."""
