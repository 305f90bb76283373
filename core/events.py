"""Typed events: what the ledger records and what ``Engine.apply`` changes memory by.

Every mutation is one event.  An event carries its results (ids, amounts,
accumulator deltas), so replaying the ledger never recomputes anything and
the state after a restart is exactly the state before it, even if reference
data or code changed in between.

Each event class knows its kind (the msgspec tag, also the ledger record's
``kind`` column), its ledger key (the object it is about, ``event.key``) and
its encoding (``encode(event)`` / ``decode(body)``).

Encoding: ``b"\\x01"`` + MessagePack of the struct as an array (tag first).
msgspec Structs were chosen over slotted dataclasses because they measured
5-10x faster here to build, encode and decode (a settlement event: build 0.4
vs 4.5 µs, encode 0.9 vs 2.5 µs, decode 2.0 vs 8.4 µs) and half the size.
Ledger schema 1 wrote JSON objects (``{"type": ...}``); ``decode`` still reads
them (``_from_json_v1``).  Fields added to an event later have defaults, so
a record written before a field existed decodes with that default.
"""
from __future__ import annotations

from typing import Union

import msgspec
import orjson

from .errors import InvariantError
from .money import ACCUMULATOR_KEYS, BREAKDOWN, accounts_total, pad

FORMAT_MSGPACK = b"\x01"
REFERENCE_KEY = "reference"
ID_DIGITS = 15


def visit_id(seq: int) -> str:
    """A visit's mdtrt_id: "M" + the ledger seq of the record that opened it (admission, or outpatient settlement)."""
    return f"M{seq:0{ID_DIGITS}d}"


def settlement_id(seq: int) -> str:
    """A settlement's setl_id: "S" + the ledger seq of the record holding it."""
    return f"S{seq:0{ID_DIGITS}d}"


def problem_id(seq: int) -> str:
    """A problem report's id: "R" + the ledger seq of the record that opened it."""
    return f"R{seq:0{ID_DIGITS}d}"


def id_seq(ident: str, prefix: str) -> int:
    """The number of an id this gateway issues ("M"/"S" + 15 digits), 0 if ident is not one."""
    if len(ident) != ID_DIGITS + 1 or ident[0] != prefix or not ident[1:].isdigit() or not ident[1:].isascii():
        return 0
    return int(ident[1:])


class Row(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A SPEC §3 row; ``as_row()`` gives the dict the index takes."""

    def as_row(self) -> dict:
        return msgspec.structs.asdict(self)


class Person(Row):
    """persons.jsonl (SPEC §3)."""

    psn_no: str
    certno: str
    name: str
    insuplc_admdvs: str
    insutype: str
    person_type: str
    status: str
    assistance: bool
    card_no: str
    card_version: str


class Filing(Row):
    """filings.jsonl (SPEC §3)."""

    filing_id: str
    psn_no: str
    kind: str
    dest_admdvs: str
    fixmedins_codes: tuple[str, ...]
    valid_from: int
    valid_to: int
    status: str

    def as_row(self) -> dict:
        row = msgspec.structs.asdict(self)
        row["fixmedins_codes"] = list(self.fixmedins_codes)
        return row

    @classmethod
    def from_row(cls, row: dict) -> Filing:
        """A filing from its SPEC §3 row (the index's dict)."""
        fields = {f: row[f] for f in cls.__struct_fields__}
        fields["fixmedins_codes"] = tuple(fields["fixmedins_codes"])
        return cls(**fields)


class FeeLine(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One fee line 费用明细 as uploaded (SPEC §5.1)."""

    feedetl_sn: str
    code: str
    name: str
    unit_price_fen: int
    qty_milli: int            # < 0 for a refund line
    fee_date: int = 0
    init_feedetl_sn: str = ""  # SPEC §10.4: the line this one refunds part of

    def content(self) -> tuple:
        """What must match for a re-sent line to be the same line."""
        return (self.code, self.name, self.unit_price_fen, self.qty_milli, self.fee_date, self.init_feedetl_sn)


class VisitFacts(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What admission (eligibility, SPEC §4) decided about a visit; never changes."""

    mdtrt_id: str
    psn_no: str
    fixmedins_code: str
    visit_kind: str          # "inpatient" | "outpatient"
    adm_date: int
    filing_id: str
    filing_kind: str
    insuplc_admdvs: str
    mdtrtarea_admdvs: str
    fixmedins_level: int


# The money of one settlement (SPEC §5), all fen: core/money.py's BREAKDOWN, at its positions.  Every amount
# defaults to 0, so a settlement recorded before an amount existed reads it as 0.
Breakdown = msgspec.defstruct(
    "Breakdown", [(a.name, int, 0) for a in BREAKDOWN], module=__name__, frozen=True, array_like=True, gc=False,
    namespace={"__doc__": "The money of one settlement (core/money.py's BREAKDOWN), all fen.",
               "acct_pay_sumamt": property(accounts_total)})


class SettlementFacts(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a settlement decided: enough to cancel it exactly and to account for it.

    The full answer (line results, names) is the response stored beside the
    event in the ledger record.
    """

    setl_id: str
    mdtrt_id: str
    psn_no: str
    fixmedins_code: str
    insuplc_admdvs: str
    mdtrtarea_admdvs: str
    visit_kind: str
    insutype: str
    setl_date: int
    year: int                 # the accumulator year the deltas were applied to
    breakdown: Breakdown
    deltas: tuple[int, ...]   # in ACCUMULATOR_KEYS order (SPEC §5.5)
    risk_flags: int = 0       # SPEC §7, bits of core.funds.RISK_FLAGS (none in records of ledger schemas 1–2)
    acct_draws: tuple[tuple[str, int], ...] = ()   # SPEC §10.1: (psn_no, fen) of each account drawn, in order
    # SPEC §10.2: a chronic-disease visit; its deltas' outpatient slots are then that disease's accumulators
    dise_codg: str = ""
    # SPEC §10.3: a mid-stay settlement (the stay stays admitted); the stay's deductible D; and the stay's live
    # mid settlements before this one, (setl_id, setl_date, act_pay_dedc), so a cancellation restores the stay
    mid_setl_flag: bool = False
    stay_deductible_fen: int = -1
    stay_mids: tuple[tuple[str, int, int], ...] = ()
    # SPEC §10.7: the accumulators the settlement started from (ACCUMULATOR_KEYS order) and, for a chronic-disease
    # visit, that disease's (deductible used, fund paid): with the lines, all an explanation needs
    acc_before: tuple[int, ...] = ()
    chronic_before: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # Recorded before the newest accumulators existed: they read as 0 (core/money.py, positions are forever).
        n = len(ACCUMULATOR_KEYS)
        if len(self.deltas) < n:
            msgspec.structs.force_setattr(self, "deltas", pad(self.deltas, n))
        if self.acc_before and len(self.acc_before) < n:
            msgspec.structs.force_setattr(self, "acc_before", pad(self.acc_before, n))

    def deltas_dict(self) -> dict[str, int]:
        return dict(zip(ACCUMULATOR_KEYS, self.deltas, strict=True))


# ---------------------------------------------------------------- events
class Event(msgspec.Struct, frozen=True, array_like=True, gc=False, tag_field="type"):
    """Base of every event.  ``kind`` is the tag; ``key`` the object it is about."""

    @property
    def kind(self) -> str:
        return self.__struct_config__.tag

    @property
    def key(self) -> str:
        raise NotImplementedError


class Filed(Event, tag="filed"):
    """备案: the person's record (inserted or updated) and one new filing."""

    person: Person
    filing: Filing

    @property
    def key(self) -> str:
        return self.filing.filing_id


class FilingChanged(Event, tag="filing"):
    """备案变更 / 备案撤销: the filing as it now stands."""

    filing: Filing

    @property
    def key(self) -> str:
        return self.filing.filing_id


class Admitted(Event, tag="admitted"):
    """入院登记."""

    visit: VisitFacts
    ipt_no: str = ""

    @property
    def key(self) -> str:
        return self.visit.mdtrt_id


class AdmissionCancelled(Event, tag="admission_cancelled"):
    """入院撤销."""

    mdtrt_id: str

    @property
    def key(self) -> str:
        return self.mdtrt_id


class FeesUploaded(Event, tag="fees"):
    """费用明细上传: only the lines that were new."""

    mdtrt_id: str
    lines: tuple[FeeLine, ...]

    @property
    def key(self) -> str:
        return self.mdtrt_id


class FeesWithdrawn(Event, tag="fees_withdrawn"):
    """费用明细撤销."""

    mdtrt_id: str
    sns: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.mdtrt_id


class Settled(Event, tag="settled"):
    """出院结算, or 门诊一站式 (then ``visit`` is set: the visit is born here, settled).

    ``lines`` are the settled fee lines (for an inpatient stay they open again
    if the settlement is cancelled; a schema-1 record may lack them).
    """

    settlement: SettlementFacts
    visit: Union[VisitFacts, None] = None
    lines: tuple[FeeLine, ...] = ()
    clearing_month: int = 0   # yyyymm it is booked in (SPEC §8); 0 in records of ledger schemas 1–2: booked on apply

    @property
    def key(self) -> str:
        return self.settlement.setl_id


class SettlementCancelled(Event, tag="settlement_cancelled"):
    """结算撤销: gives back exactly the settlement's recorded deltas.

    It carries what it undoes (the settlement's facts; for an inpatient stay,
    the visit and its settled lines, which open again), so that replay needs
    nothing else.  A schema-1 record carries only the id and the date.
    """

    setl_id: str
    cancel_date: int
    settlement: Union[SettlementFacts, None] = None
    visit: Union[VisitFacts, None] = None
    lines: tuple[FeeLine, ...] = ()
    clearing_month: int = 0   # yyyymm it is booked in (SPEC §8); 0 in records of ledger schemas 1–2: booked on apply
    settled_lines: tuple[FeeLine, ...] = ()   # SPEC §10.3: a final settlement's stay's mid-settled lines, restored

    @property
    def key(self) -> str:
        return self.setl_id


class RequestReversed(Event, tag="request_reversed"):
    """冲正 of a request that was never performed: its key is dead; the original, if it comes, is refused.

    The ledger record's key is the original request_id (the idempotency index
    finds it there), its request_id the reversal's own.
    """

    original_request_id: str

    @property
    def key(self) -> str:
        return self.original_request_id


class ReferenceLoaded(Event, tag="reference_loaded"):
    """The national operator loaded a reference data set; a restart loads this one."""

    data_dir: str
    meta: dict

    @property
    def key(self) -> str:
        return REFERENCE_KEY


class AccountAdjusted(Event, tag="account_adjusted"):
    """The insured province credits (+) or debits (−) a personal account (SPEC §10.1 AdjustAccount)."""

    psn_no: str
    amount_fen: int
    reason: str

    @property
    def key(self) -> str:
        return f"account-{self.psn_no}"


# ------------------------------------------------------ funds (SPEC §8, core/funds.py)
class PrepaidSet(Event, tag="prepaid_set"):
    """The national operator sets an insured province's prepaid amount (预付金) and its warning lines."""

    province: str
    amount_fen: int
    yellow_bp: int
    red_bp: int

    @property
    def key(self) -> str:
        return f"prepaid-{self.province}"


class PrepaidToppedUp(Event, tag="prepaid_topped_up"):
    """调增: the national operator adds to an insured province's prepaid amount."""

    province: str
    amount_fen: int

    @property
    def key(self) -> str:
        return f"prepaid-{self.province}"


class ClearingMonthChanged(Event, tag="clearing_month"):
    """A clearing month closed, reopened, or a province's statement of it confirmed (确认)."""

    month: int
    action: str            # "closed" | "reopened" | "confirmed"
    province: str = ""     # the confirming province

    @property
    def key(self) -> str:
        return f"clearing-{self.month}"


# ------------------------------------------------------ problem reports (SPEC §8 报错处理)
class ProblemFacts(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a problem report said when it was opened; never changes."""

    problem_id: str
    reporter: str             # the calling province, "national", or "gateway" for an automatic report
    category: str
    text: str
    setl_id: str
    mdtrt_id: str
    treatment_province: str   # the provinces it concerns ("" when not known, e.g. an internal error)
    insured_province: str
    opened_at_ms: int


class ProblemReported(Event, tag="problem_reported"):
    problem: ProblemFacts

    @property
    def key(self) -> str:
        return self.problem.problem_id


class ProblemUpdated(Event, tag="problem_updated"):
    """A report assigned, commented or resolved (with a note); nothing is ever deleted."""

    problem_id: str
    action: str               # "assigned" | "commented" | "resolved"
    by: str
    text: str
    at_ms: int

    @property
    def key(self) -> str:
        return self.problem_id


ANY_EVENT = Union[Filed, FilingChanged, Admitted, AdmissionCancelled, FeesUploaded, FeesWithdrawn, Settled,
                  SettlementCancelled, RequestReversed, ReferenceLoaded, PrepaidSet, PrepaidToppedUp,
                  ClearingMonthChanged, ProblemReported, ProblemUpdated, AccountAdjusted]
REVERSED_KIND = "request_reversed"
EVENT_TYPES: tuple[type[Event], ...] = ANY_EVENT.__args__

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(ANY_EVENT)


def encode(event: Event) -> bytes:
    return FORMAT_MSGPACK + _ENCODER.encode(event)


def decode(body: bytes) -> Event:
    """An event from a ledger body: MessagePack (``FORMAT_MSGPACK``), or ledger schema 1's JSON."""
    if body[:1] == FORMAT_MSGPACK:
        return _DECODER.decode(memoryview(body)[1:])
    if body[:1] == b"{":
        return _from_json_v1(orjson.loads(body))
    raise InvariantError(f"unknown ledger body format {body[:1]!r}")


# ------------------------------------------------- ledger schema 1's JSON bodies
def _from_json_v1(d: dict) -> Event:
    kind = d.get("type")
    if kind == "filed":
        return Filed(person=_person(d["person"]), filing=Filing.from_row(d["filing"]))
    if kind == "filing":
        return FilingChanged(filing=Filing.from_row(d["filing"]))
    if kind == "admitted":
        return Admitted(visit=VisitFacts(**d["visit"]), ipt_no=d.get("ipt_no", ""))
    if kind == "admission_cancelled":
        return AdmissionCancelled(mdtrt_id=d["mdtrt_id"])
    if kind == "fees":
        return FeesUploaded(mdtrt_id=d["mdtrt_id"], lines=tuple(FeeLine(*line) for line in d["lines"]))
    if kind == "fees_withdrawn":
        return FeesWithdrawn(mdtrt_id=d["mdtrt_id"], sns=tuple(d["sns"]))
    if kind == "settled":
        visit = VisitFacts(**d["visit"]) if "visit" in d else None
        lines = tuple(FeeLine(*line) for line in d.get("lines", ()))
        return Settled(settlement=_settlement(d["settlement"]), visit=visit, lines=lines)
    if kind == "settlement_cancelled":
        return SettlementCancelled(setl_id=d["setl_id"], cancel_date=d["cancel_date"])
    if kind == "reference_loaded":
        return ReferenceLoaded(data_dir=d["data_dir"], meta=d.get("meta", {}))
    raise InvariantError(f"unknown schema-1 event type {kind!r}")


def _person(d: dict) -> Person:
    return Person(**{f: d[f] for f in Person.__struct_fields__})


def _settlement(s: dict) -> SettlementFacts:
    b = s.get("breakdown") or {}
    breakdown = Breakdown(**{f: b.get(f, 0) for f in Breakdown.__struct_fields__})
    deltas = tuple(s["deltas"].get(k, 0) for k in ACCUMULATOR_KEYS)
    return SettlementFacts(
        setl_id=s["setl_id"], mdtrt_id=s["mdtrt_id"], psn_no=s["psn_no"], fixmedins_code=s["fixmedins_code"],
        insuplc_admdvs=s["insuplc_admdvs"], mdtrtarea_admdvs=s["mdtrtarea_admdvs"], visit_kind=s["visit_kind"],
        insutype=s["insutype"], setl_date=s["setl_date"], year=s["year"], breakdown=breakdown, deltas=deltas,
    )
