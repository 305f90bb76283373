"""The rows a ledger derives from its records, and how each is proved when read: the same for every backend.

A visit's or settlement's id is the seq of the record that made it
(``core.events.visit_id``), so its immutable facts are read from that
record's event; the derived tables hold only what happens afterwards (a
visit's status, a settlement's cancellation), written in the same
transaction as the records whose changes they are.  Settling an outpatient
visit therefore derives no archive row at all.

Every derived row can change an answer, so every one is proved:

* **tagged**: each row carries a MAC of its table and values with the
  ledger's key (gateway/store/seal.py), checked whenever it is read
  (``checked``), so a changed or invented row is refused, never served;
* **insert-only**: nothing is updated in place (a visit's status is its
  newest status row, a settlement is cancelled when its cancellation row
  exists, a problem report is its newest version), so no older, validly
  tagged version of a row can be put back;
* **counted**: the ledger's sealed head row holds how many rows each table
  has (``TABLES``), checked at start, so a deleted row is found before the
  gateway serves.

The tables (their columns in ``COLUMNS``, in the order they are tagged):

* ``requests``: 63-bit hashes of (caller, request_id) → the record's seq,
  the idempotency index (a reversal's record holds its own key and its
  original's: ``keys_of``);
* ``visit_status``, ``cancellations``: the archive's changes;
* ``recon``: one row per settlement, keyed (institution, settlement date,
  settlement number), for reconciliation (对账, SPEC §8) and risk-flag lists.
  The institution is a 63-bit hash of its code (``institution_key``): an
  integer key was measured cheaper to insert than the text code
  (bench/reconcile.py).  Two codes whose hashes collide would share rows;
  with 10^5 institutions the chance is ~10^-9;
* ``problems`` (versions) and ``problem_notes``: problem reports (报错处理)
  and their history;
* ``legacy``: the facts of visits and settlements of a schema-1 ledger,
  whose ids came from separate counters (numbered at most
  ``legacy_last_seq``), filled once when such a ledger is migrated;
* ``reference_loads``: the seq of every ``reference_loaded`` record, so the
  newest one is found without reading the log (gateway/store/packed.py).
"""
from __future__ import annotations

import functools
import hashlib
from typing import Iterable, Iterator

import msgspec

from core.archive import (
    ArchivedProblem, ArchivedSettlement, ArchivedVisit, Change, ProblemNote, PutProblem, PutSettlement, PutVisit,
    SettlementCancelledChange, VisitStatus,
)
from core.events import REVERSED_KIND, FeeLine, SettlementFacts, VisitFacts, id_seq

from .chain import LedgerCorrupt
from .seal import LedgerKey

# Institutions whose recon key is kept in memory (~150 B each): the busiest, of the ~10^5 there are.
INSTITUTION_KEYS_CACHED = 1 << 14

# Every table whose rows the head row counts, records included.
# ("records" counts the ledger's records, in whichever layout: gateway/store/packed.py.)
TABLES = ("records", "groups", "requests", "visit_status", "cancellations", "recon", "problems", "problem_notes",
          "legacy", "reference_loads")

# Columns of each derived table in the order they are tagged (the tag is over these values, then stored last).
COLUMNS = {
    "requests": ("h", "seq"),
    "visit_status": ("mdtrt_id", "seq", "status", "setl_id"),
    "cancellations": ("setl_no", "cancel_date", "cancel_seq", "clearing_month"),
    "recon": ("inst", "setl_date", "setl_no", "insutype", "medfee", "fund", "cash", "flags"),
    "problems": ("problem_no", "seq", "state", "treatment", "insured", "reporter", "row"),
    "problem_notes": ("problem_seq", "seq", "action", "by", "text", "at_ms"),
    "legacy": ("id", "seq", "facts", "lines"),
    "reference_loads": ("seq",),
}

_ENCODE = msgspec.msgpack.Encoder().encode
visit_facts = msgspec.msgpack.Decoder(VisitFacts).decode
settlement_facts = msgspec.msgpack.Decoder(SettlementFacts).decode
fee_lines = msgspec.msgpack.Decoder(tuple[FeeLine, ...]).decode
problem_row = msgspec.msgpack.Decoder(ArchivedProblem).decode


def _hash63(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def request_hash(caller: str, request_id: str) -> int:
    """The 63-bit key of an idempotency key in the ``requests`` table (collisions are checked on read)."""
    return _hash63(f"{caller}\x00{request_id}")


@functools.lru_cache(maxsize=INSTITUTION_KEYS_CACHED)
def institution_key(fixmedins_code: str) -> int:
    """The 63-bit key of an institution in the ``recon`` projection (the busy ones' kept for the reads; the ledger
    writer makes it in the core with the row, core/ledger.pxi)."""
    return _hash63(f"inst\x00{fixmedins_code}")


def keys_of(record) -> tuple[str, ...]:
    """The idempotency keys a record (a parts.Record) holds: its own, and for a reversal (冲正) the original's
    (its key)."""
    if record.kind == REVERSED_KIND:
        return (record.request_id, record.key) if record.request_id else (record.key,)
    return (record.request_id,) if record.request_id else ()


def checked(key: LedgerKey, path: str, table: str, row: tuple) -> tuple:
    """A row read back (its values, then its tag): the values, or LedgerCorrupt if the tag does not match."""
    values = tuple(row[:-1])
    if key.tag(table, values) != row[-1]:
        raise LedgerCorrupt(path, 0, f"a row of {table} does not match its seal (it was changed or put there "
                                     "after it was written): refusing to serve it")
    return values


def derive(changes: Iterable[Change], seq: int) -> Iterator[tuple[str, tuple]]:
    """(table, values) of each row the record ``seq`` derives from its archive changes (new facts are in the
    record itself)."""
    for change in changes:
        kind = type(change)
        if kind is PutSettlement:
            yield "recon", recon_row(change.settlement.facts)
        elif kind is VisitStatus:
            yield "visit_status", (change.mdtrt_id, seq, change.status, change.setl_id)
        elif kind is SettlementCancelledChange:
            yield "cancellations", (id_seq(change.setl_id, "S"), change.cancel_date, change.cancel_seq,
                                    change.clearing_month)
        elif kind is PutProblem:
            f = change.problem.facts
            yield "problems", (id_seq(f.problem_id, "R"), seq, change.problem.state, f.treatment_province,
                               f.insured_province, f.reporter, _ENCODE(change.problem))
        elif kind is ProblemNote:
            yield "problem_notes", (id_seq(change.problem_id, "R"), change.seq, change.action, change.by,
                                    change.text, change.at_ms)
        elif kind is not PutVisit:
            raise TypeError(f"not an archive change: {change!r}")


def recon_row(facts: SettlementFacts) -> tuple:
    """A settlement's row of the reconciliation projection (without its tag)."""
    b = facts.breakdown
    return (institution_key(facts.fixmedins_code), facts.setl_date, id_seq(facts.setl_id, "S"), int(facts.insutype),
            b.medfee_sumamt, b.fund_pay_sumamt, b.psn_cash_pay, facts.risk_flags)


def legacy_rows(visits: Iterable[ArchivedVisit],
                settlements: Iterable[ArchivedSettlement]) -> Iterator[tuple[str, tuple]]:
    """(table, values) of the whole archive of a migrated schema-1 ledger: facts, statuses, cancellations."""
    for v in visits:
        yield "legacy", (v.facts.mdtrt_id, 0, _ENCODE(v.facts), _ENCODE(()))
        if v.status != "admitted":
            yield "visit_status", (v.facts.mdtrt_id, 0, v.status, v.setl_id)
    for s in settlements:
        yield "legacy", (s.facts.setl_id, s.seq, _ENCODE(s.facts), _ENCODE(s.lines))
        yield "recon", recon_row(s.facts)
        if s.status == "cancelled":
            yield "cancellations", (id_seq(s.facts.setl_id, "S"), s.cancel_date, s.cancel_seq, 0)
