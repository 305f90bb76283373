"""The engine: SPEC §6's commands decided and applied by the part of the domain each belongs to.

``decide(command, seq)`` checks a command against the current state and
returns a ``Decision``: the event to record and the result the answer needs,
computed from the same state, without changing anything (a refusal raises
``YidiError``).  ``apply(event, seq)`` changes memory; a restart replays the
ledger through ``apply`` alone.  ``seq`` is the ledger seq the record gets:
a new visit, settlement or problem report is named after it
(``events.visit_id``), so its id is its place in the ledger.

The parts, each with its own decide and apply:

* ``filings``     persons and filings (core/filing.py)
* ``accounts``    personal accounts (core/accounts.py)
* ``visits``      admission and the fee lines of open stays (core/visits.py)
* ``settlements`` outpatient, discharge, mid-stay, cancellation, 冲正 (core/settlement.py)
* ``clearing``    prepaid positions and clearing months (core/clearing.py over core/funds.py)
* ``problems``    problem reports (core/problems.py)

and, reading only, ``reads`` (core/read_models.py) and ``owners`` (whose
each object is, core/access.py).  This module assembles them, dispatches on
the type of a command or event, and owns what spans them: snapshots of the
whole state, a reload of the reference data, debug-build invariants.

Memory holds what the hot path needs: the index (reference data, persons,
filings, accumulators), the open inpatient stays, the funds.  Closed visits
and every settlement live in the archive (``core.archive``): ``apply``
returns the archive changes an event makes, the gateway writes them with the
ledger record, and the parts read the archive when a command names an old
object.  So memory does not grow with history.

The event loop is the only caller, so commands for one person are serial.
"""
from __future__ import annotations

from typing import Callable, Iterable

import msgspec

from .access import Owners
from .accounts import Accounts
from .archive import Archive, ArchivedSettlement, Change, MemoryArchive
from .clearing import Clearing
from .commands import Command, Decision
from .events import Event, Filing, Person, ReferenceLoaded
from .filing import Filings
from .funds import Funds, FundsState
from .money import ACCUMULATOR_KEYS, pad
from .problems import Problems
from .read_models import ReadModels
from .settlement import Settlements
from .visits import Visit, Visits
from ._core import DEBUG, Index


class EngineState(msgspec.Struct):
    """The engine's memory apart from the reference data, for snapshots and reloads.

    Reference-independent (persons and institutions by their codes), so it can
    be restored onto a newly loaded reference data set.  Small: the history
    (closed visits, settlements) is in the archive, not here.
    """

    persons: list[Person]          # added or updated by File, latest version
    filings: list[Filing]          # filed, revised or revoked by RPC, latest version
    visits: list[Visit]            # open inpatient stays
    accumulators: list[tuple[str, int, tuple[int, ...]]]   # (psn_no, year, values in ACCUMULATOR_KEYS order)
    funds: FundsState = msgspec.field(default_factory=FundsState)   # positions, clearing months (core/funds.py)
    # SPEC §10.1: each personal account's change since the reference data set in force was loaded
    accounts: list[tuple[str, int]] = msgspec.field(default_factory=list)
    # SPEC §10.2: (psn_no, year, dise_codg, deductible used, fund paid) per person, year and chronic disease
    chronic: list[tuple[str, int, str, int, int]] = msgspec.field(default_factory=list)


class ApplyFailed(Exception):
    """Applying a decided event failed (a bug): memory may differ from the ledger; the cause is chained."""

    def __init__(self, event: Event) -> None:
        super().__init__(f"apply failed for a {event.kind} event")
        self.event = event


class Engine:
    """The parts of the domain over one :class:`Index`, holding ``state`` if given (a snapshot, or a reload)."""

    def __init__(self, index: Index, archive: Archive | None = None, state: EngineState | None = None) -> None:
        state = state if state is not None else EngineState([], [], [], [])
        self.index = index
        self.funds = Funds.restore(state.funds)
        archive = archive if archive is not None else MemoryArchive()
        self.filings = Filings(index, state.persons, state.filings)
        self.accounts = Accounts(index, self.filings, state.accounts)
        self.visits = Visits(index, self.filings, archive, state.visits)
        self.settlements = Settlements(index, self.filings, self.visits, self.accounts, self.funds, state.chronic)
        self.clearing = Clearing(index, self.funds)
        self.problems = Problems(archive, self.settlements, self.visits, self.clearing)
        self.reads = ReadModels(index, self.filings, self.visits, self.settlements)
        self.owners = Owners(index, self.filings, self.visits, self.settlements, self.problems)
        for psn_no, year, values in state.accumulators:
            # kept before the newest accumulators were declared: they read as 0 (core/money.py)
            index.add_deltas(psn_no, year, pad(values, len(ACCUMULATOR_KEYS)), 1)
        parts = (self.filings, self.accounts, self.visits, self.settlements, self.clearing, self.problems)
        self._decide: dict[type, Callable[[Command, int], Decision]] = _one_each(p.decisions() for p in parts)
        self._apply: dict[type, Callable[[Event, int], list[Change]]] = _one_each(p.appliers() for p in parts)

    @property
    def archive(self) -> Archive:
        return self.visits.archive

    @archive.setter
    def archive(self, archive: Archive) -> None:
        self.visits.archive = self.problems.archive = archive

    # ------------------------------------------------------------ dispatch
    def perform(self, command: Command, seq: int) -> tuple[Decision, list[Change]]:
        """Decide a command and apply its event as record ``seq``: the decision and the archive changes.

        A refusal (``YidiError``) is raised by the decision and changes nothing.  A failure while applying
        is ``ApplyFailed``: memory may then differ from the ledger."""
        decision = self.decide(command, seq)
        try:
            return decision, self.apply(decision.event, seq)
        except Exception as exc:
            raise ApplyFailed(decision.event) from exc

    def decide(self, command: Command, seq: int) -> Decision:
        """The event and result of a command; changes nothing."""
        return self._decide[type(command)](command, seq)

    def apply(self, event: Event, seq: int) -> list[Change]:
        """Change memory by one event (live, or on replay; ``seq`` is its ledger record).

        Returns the archive changes the event makes, also recorded in ``self.archive``.
        """
        changes = self._apply[type(event)](event, seq)
        if changes:
            self.archive.record(changes, seq)
        if DEBUG:
            self.check_applied(event, changes)
        return changes

    def check_applied(self, event: Event, changes: list[Change]) -> None:
        """Debug builds, after an event is applied (here or by the core's settle loop): the money still adds up."""
        if changes and type(self.archive) is MemoryArchive:
            self._check_money_of(event)
        self.funds.check_invariants()

    def _check_money_of(self, event: Event) -> None:
        """Debug builds: the person's accumulators still equal the sum of their live settlements' deltas."""
        facts = getattr(event, "settlement", None)
        if facts is not None:
            self.check_invariants(self.archive.settlements_of(facts.psn_no))
            self.index.check_invariants()

    # ------------------------------------------------------ snapshots, reloads
    def export_state(self) -> EngineState:
        return EngineState(
            persons=list(self.filings.persons.values()), filings=list(self.filings.filings.values()),
            visits=list(self.visits.open.values()), accumulators=self.index.accumulator_rows(),
            funds=self.funds.export(), accounts=sorted(self.accounts.changes.items()),
            chronic=sorted((p, y, c, v[0], v[1]) for (p, y, c), v in self.settlements.chronic.items()),
        )

    @classmethod
    def restore(cls, index: Index, state: EngineState, archive: Archive | None = None) -> Engine:
        """An engine on ``index`` holding ``state`` (the index must hold no runtime changes yet)."""
        return cls(index, archive, state)

    @classmethod
    def reloaded(cls, state: EngineState, index: Index, data_dir: str,
                 archive: Archive | None = None) -> tuple[Engine, ReferenceLoaded]:
        """An engine's state (``export_state``) on a newly loaded reference data set, and the event recording the load.

        Applying the event starts the personal accounts' changes afresh (SPEC §10.1): the new data set's opening
        balances include them.  Blocking (the index is filled with the state): run off the event loop."""
        return cls(index, archive, state), ReferenceLoaded(data_dir=data_dir, meta=dict(index.meta))

    # ----------------------------------------------------------- invariants
    def check_invariants(self, settlements: Iterable[ArchivedSettlement]) -> None:
        """Every person's accumulators equal the sum of their live settlements' deltas (SPEC §5.5)."""
        self.settlements.check_invariants(settlements)


def _one_each(tables: Iterable[dict[type, Callable]]) -> dict[type, Callable]:
    """The parts' tables as one; a type two parts claim is a bug."""
    merged: dict[type, Callable] = {}
    for table in tables:
        for kind, handler in table.items():
            if kind in merged:
                raise TypeError(f"{kind.__name__} is handled by two parts of the engine")
            merged[kind] = handler
    return merged
