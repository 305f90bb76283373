"""The archive: closed visits and every settlement, kept in the store, not in memory.

Memory holds what the hot path needs (reference data, accumulators, open
stays); the history of settled visits and settlements lives in the store,
where it costs no memory however long the ledger grows.  The engine reads it
through ``Archive`` when a command names an old object (a cancellation, a
fee upload to a settled stay, GetSettlement) and says how it changes through
``Change``s that ``Engine.apply`` returns: the gateway writes them in the same
transaction as the ledger record, so the archive always agrees with the log.

``MemoryArchive`` keeps the rows in dicts (core tests, rebuilding the archive
of a ledger written before it existed).  ``Overlay`` is what the live engine
uses: the changes of records not yet durable, over the store's archive, so a
settlement is visible the moment it is applied.
"""
from __future__ import annotations

from typing import Protocol, Union

import msgspec

from .events import FeeLine, ProblemFacts, SettlementFacts, VisitFacts


class ArchivedVisit(msgspec.Struct, frozen=True, gc=False):
    facts: VisitFacts
    status: str              # "admitted" | "settled" | "cancelled"
    setl_id: str = ""


class ArchivedSettlement(msgspec.Struct, frozen=True, gc=False):
    facts: SettlementFacts
    seq: int                 # the ledger record holding the settlement and its answer
    status: str = "settled"  # "settled" | "cancelled"
    cancel_date: int = 0
    cancel_seq: int = 0
    lines: tuple[FeeLine, ...] = ()   # an inpatient stay's settled lines (reopened on cancellation)
    cancel_clearing_month: int = 0    # the clearing month the cancellation is booked in (SPEC §8)


class ArchivedProblem(msgspec.Struct, frozen=True, gc=False):
    """A problem report (报错处理) as it stands; its history of notes is kept beside it (``ProblemNote``)."""

    facts: ProblemFacts
    state: str = "open"        # "open" | "resolved"
    assignee: str = ""
    resolution: str = ""
    updated_at_ms: int = 0
    resolved_at_ms: int = 0


# ------------------------------------------------------------------ changes
class PutVisit(msgspec.Struct, frozen=True, gc=False, tag=True):
    visit: ArchivedVisit


class VisitStatus(msgspec.Struct, frozen=True, gc=False, tag=True):
    mdtrt_id: str
    status: str
    setl_id: str


class PutSettlement(msgspec.Struct, frozen=True, gc=False, tag=True):
    settlement: ArchivedSettlement


class SettlementCancelledChange(msgspec.Struct, frozen=True, gc=False, tag=True):
    setl_id: str
    cancel_date: int
    cancel_seq: int
    # Where the store's reconciliation projection keeps the settlement, and the month the cancellation is
    # booked in (0 for a cancellation recorded in ledger schemas 1–2, whose answer did not carry it).
    fixmedins_code: str = ""
    setl_date: int = 0
    clearing_month: int = 0


class PutProblem(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A problem report opened or changed (the whole row as it now stands)."""

    problem: ArchivedProblem


class ProblemNote(msgspec.Struct, frozen=True, gc=False, tag=True):
    """One entry of a report's history: opened, assigned, commented or resolved."""

    problem_id: str
    seq: int
    action: str
    by: str
    text: str
    at_ms: int


Change = Union[PutVisit, VisitStatus, PutSettlement, SettlementCancelledChange, PutProblem, ProblemNote]


class Archive(Protocol):
    """What the engine may read of the history (look-ups by id; never a scan on the hot path)."""

    def visit(self, mdtrt_id: str) -> ArchivedVisit | None: ...
    def settlement(self, setl_id: str) -> ArchivedSettlement | None: ...
    def problem(self, problem_id: str) -> ArchivedProblem | None: ...
    def reply(self, seq: int) -> bytes | None:
        """The answer recorded with a ledger record (None: not durable yet)."""
        ...

    def record(self, changes: list[Change], seq: int) -> None:
        """Changes applied by the record ``seq`` (memory's view; the store writes them durably)."""
        ...


def changed_visit(row: ArchivedVisit, change: VisitStatus) -> ArchivedVisit:
    return msgspec.structs.replace(row, status=change.status, setl_id=change.setl_id)


def changed_settlement(row: ArchivedSettlement, change: SettlementCancelledChange) -> ArchivedSettlement:
    return msgspec.structs.replace(row, status="cancelled", cancel_date=change.cancel_date,
                                   cancel_seq=change.cancel_seq, cancel_clearing_month=change.clearing_month)


class MemoryArchive:
    """Every archived row in dicts."""

    def __init__(self) -> None:
        self.visits: dict[str, ArchivedVisit] = {}
        self.settlements: dict[str, ArchivedSettlement] = {}
        self.problems: dict[str, ArchivedProblem] = {}
        self.notes: list[ProblemNote] = []
        self.replies: dict[int, bytes] = {}

    def visit(self, mdtrt_id: str) -> ArchivedVisit | None:
        return self.visits.get(mdtrt_id)

    def settlement(self, setl_id: str) -> ArchivedSettlement | None:
        return self.settlements.get(setl_id)

    def problem(self, problem_id: str) -> ArchivedProblem | None:
        return self.problems.get(problem_id)

    def reply(self, seq: int) -> bytes | None:
        return self.replies.get(seq, b"")

    def settlements_of(self, psn_no: str) -> list[ArchivedSettlement]:
        """A person's settlements (a scan: for debug-build invariants and tests)."""
        return [s for s in self.settlements.values() if s.facts.psn_no == psn_no]

    def record(self, changes: list[Change], seq: int) -> None:
        for change in changes:
            self._apply(change)

    def _apply(self, change: Change) -> None:
        if type(change) is PutVisit:
            self.visits[change.visit.facts.mdtrt_id] = change.visit
        elif type(change) is VisitStatus:
            self.visits[change.mdtrt_id] = changed_visit(self.visits[change.mdtrt_id], change)
        elif type(change) is PutSettlement:
            self.settlements[change.settlement.facts.setl_id] = change.settlement
        elif type(change) is SettlementCancelledChange:
            self.settlements[change.setl_id] = changed_settlement(self.settlements[change.setl_id], change)
        elif type(change) is PutProblem:
            self.problems[change.problem.facts.problem_id] = change.problem
        else:
            self.notes.append(change)


class Overlay(MemoryArchive):
    """The rows changed by records not yet durable, over a durable archive.

    ``trim(seq)`` forgets what records up to ``seq`` changed, once the store
    has them; so the overlay holds only the last moments' changes.
    """

    def __init__(self, durable: Archive) -> None:
        super().__init__()
        self.durable = durable
        self._visit_seq: dict[str, int] = {}
        self._settlement_seq: dict[str, int] = {}
        self._problem_seq: dict[str, int] = {}

    def visit(self, mdtrt_id: str) -> ArchivedVisit | None:
        row = self.visits.get(mdtrt_id)
        return row if row is not None else self.durable.visit(mdtrt_id)

    def settlement(self, setl_id: str) -> ArchivedSettlement | None:
        row = self.settlements.get(setl_id)
        return row if row is not None else self.durable.settlement(setl_id)

    def problem(self, problem_id: str) -> ArchivedProblem | None:
        row = self.problems.get(problem_id)
        return row if row is not None else self.durable.problem(problem_id)

    def reply(self, seq: int) -> bytes | None:
        return self.durable.reply(seq)

    def record(self, changes: list[Change], seq: int) -> None:
        for change in changes:
            if type(change) is VisitStatus and change.mdtrt_id not in self.visits:
                self.visits[change.mdtrt_id] = self.durable.visit(change.mdtrt_id)
            elif type(change) is SettlementCancelledChange and change.setl_id not in self.settlements:
                self.settlements[change.setl_id] = self.durable.settlement(change.setl_id)
            kind = type(change)
            if kind is ProblemNote:
                continue  # the history is read from the store only
            self._apply(change)
            if kind in (PutVisit, VisitStatus):
                key = change.visit.facts.mdtrt_id if kind is PutVisit else change.mdtrt_id
                self._visit_seq[key] = seq
            elif kind is PutProblem:
                self._problem_seq[change.problem.facts.problem_id] = seq
            else:
                key = change.settlement.facts.setl_id if kind is PutSettlement else change.setl_id
                self._settlement_seq[key] = seq

    def trim(self, durable_seq: int) -> None:
        """Forget the rows whose latest change is durable (records up to durable_seq)."""
        for rows, seqs in ((self.visits, self._visit_seq), (self.settlements, self._settlement_seq),
                           (self.problems, self._problem_seq)):
            for key in [k for k, s in seqs.items() if s <= durable_seq]:
                del rows[key]
                del seqs[key]

    def __len__(self) -> int:
        return len(self.visits) + len(self.settlements) + len(self.problems)
