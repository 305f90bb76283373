"""Typed commands (what a caller asks for) and results (what the answer needs).

A service translates a request message into one of these commands, the
gateway executes it (``Gateway.execute``: idempotency, decide, apply, ledger,
reply after durable) and the service translates the result back.  Commands
hold plain values only, no protobuf, so that the core and the execution path
never depend on the wire format; a batch of commands is one loop.

Every mutating command carries the caller's ``request_id`` (SPEC §6).
"""
from __future__ import annotations

from typing import NamedTuple, Union

import msgspec

from .archive import ArchivedProblem
from .events import Event, FeeLine, Filing, Person, VisitFacts
from .funds import Position


class Command(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A mutating request.  ``request_id`` is the caller's idempotency key."""

    request_id: str


class PersonId(msgspec.Struct, frozen=True, gc=False):
    """A patient named at the counter by person number or by resident ID number (one of the two)."""

    psn_no: str = ""
    certno: str = ""


class Card(msgspec.Struct, frozen=True, gc=False):
    """The social security card presented at the counter (SPEC §4 check 3)."""

    card_no: str
    card_version: str


# ---------------------------------------------------------------- filing
class Credential(msgspec.Struct, frozen=True, gc=False):
    """How the patient identified themselves (SPEC §10.5 mdtrt_cert_type): "01" electronic voucher (``cert_no`` its
    token), "02" resident ID card, "03" social-security card; ``now_utc_minute`` (yyyymmddhhmm) stamped by the gateway
    when the request arrived, for the voucher's expiry (the core has no clock)."""

    cert_type: str
    cert_no: str = ""
    now_utc_minute: int = 0


class FilePerson(Command, kw_only=True):
    """备案: the person's record and one new filing, effective at once."""

    person: Person
    filing: Filing


class ReviseFiling(Command, kw_only=True):
    """备案变更: the filing as it should stand; an empty psn_no, kind or status means "unchanged"."""

    filing: Filing


class RevokeFiling(Command, kw_only=True):
    """备案撤销."""

    filing_id: str


# ------------------------------------------------------------- inpatient
class Admit(Command, kw_only=True):
    """入院登记."""

    person: PersonId
    fixmedins_code: str
    adm_date: int
    card: Union[Card, None] = None
    ipt_no: str = ""
    credential: Union[Credential, None] = None   # SPEC §10.5
    emergency: bool = False                      # SPEC §10.6


class CancelAdmission(Command, kw_only=True):
    """入院撤销."""

    mdtrt_id: str


class UploadFees(Command, kw_only=True):
    """费用明细上传."""

    mdtrt_id: str
    lines: tuple[FeeLine, ...]


class WithdrawFees(Command, kw_only=True):
    """费用明细撤销: the named lines, or every line when none are named."""

    mdtrt_id: str
    sns: tuple[str, ...]


class DischargeSettle(Command, kw_only=True):
    """出院结算."""

    mdtrt_id: str
    dscg_date: int
    acct_used_flag: bool = False     # SPEC §10.1: the personal account pays the in-policy personal share
    acct_mulaid_flag: bool = False   # and then the family accounts (共济)
    mid_setl_flag: bool = False      # SPEC §10.3: settle the lines dated up to dscg_date and keep the stay admitted


class CancelSettlement(Command, kw_only=True):
    """结算撤销."""

    setl_id: str
    cancel_date: int


class OutpatientSettle(Command, kw_only=True):
    """门诊一站式: the visit, its lines and the settlement in one."""

    person: PersonId
    fixmedins_code: str
    setl_date: int
    lines: tuple[FeeLine, ...]
    card: Union[Card, None] = None
    acct_used_flag: bool = False
    acct_mulaid_flag: bool = False
    med_type: str = ""       # "" general outpatient, "chronic" (SPEC §10.2: then dise_codg names the disease)
    dise_codg: str = ""
    credential: Union[Credential, None] = None   # SPEC §10.5


class Reverse(Command, kw_only=True):
    """冲正: undo the caller's request ``original_request_id`` whose outcome it does not know (SPEC §6).

    The gateway finds what the original did (its ledger record) and sets
    ``target``: the settlement or visit it made, or "" if it was not performed.
    """

    original_request_id: str
    reverse_date: int
    target_kind: str = ""      # "settlement", "admission" or "" (not performed)
    target_id: str = ""        # setl_id or mdtrt_id


# ----------------------------------------------------------------- admin
class LoadReferenceData(Command, kw_only=True):
    """The national operator loads a new reference data set."""

    data_dir: str


# ------------------------------------------------------------ funds (SPEC §8)
class SetPrepaid(Command, kw_only=True):
    """The national operator sets an insured province's prepaid amount and warning lines (0: the defaults)."""

    province: str
    amount_fen: int
    yellow_bp: int = 0
    red_bp: int = 0


class TopUpPrepaid(Command, kw_only=True):
    """调增 (urgent when red): adds to an insured province's prepaid amount."""

    province: str
    amount_fen: int


class ChangeClearingMonth(Command, kw_only=True):
    """Close or reopen a clearing month (national operator), or confirm a province's statement of it."""

    month: int
    action: str            # "close" | "reopen" | "confirm"
    province: str = ""     # the confirming province


# ------------------------------------------------------------ problem reports
class ReportProblem(Command, kw_only=True):
    """报错: a problem with a settlement or a visit (or, opened by the gateway itself, an internal failure)."""

    reporter: str
    category: str
    text: str
    setl_id: str = ""
    mdtrt_id: str = ""
    province: str = ""     # for a report without a settlement or visit: the province it concerns
    at_ms: int


class UpdateProblem(Command, kw_only=True):
    """Assign, comment on or resolve (with a note) a problem report."""

    problem_id: str
    action: str            # "assign" | "comment" | "resolve"
    by: str
    text: str
    at_ms: int


# --------------------------------------------------------------- results
class AdjustAccount(Command, kw_only=True):
    """The insured province credits (amount > 0) or debits (amount < 0) a personal account (SPEC §10.1)."""

    psn_no: str
    amount_fen: int
    reason: str


class Result(msgspec.Struct, frozen=True, gc=False):
    """What an answer needs, computed when the command was decided."""


class FilingResult(Result):
    filing: Filing


class AdmitResult(Result):
    visit: VisitFacts
    psn_name: str


class VisitResult(Result):
    mdtrt_id: str
    status: str
    line_count: int
    medfee_sumamt: int


class Reply(Result):
    """An answer the core wrote itself, as the response message's bytes (a settlement: core/wire.pxi)."""

    data: bytes


class CancelResult(Result):
    """A cancellation answers with the original settlement as recorded, marked cancelled."""

    original_reply: bytes
    cancel_date: int
    clearing_month: int = 0   # yyyymm the cancellation is booked in


class ReverseResult(Result):
    """What a reversal did: the inner result of the cancellation it performed, if any."""

    outcome: str               # "settlement_cancelled", "admission_cancelled" or "not_performed"
    original_request_id: str
    inner: Union[CancelResult, VisitResult, None] = None


class ReferenceResult(Result):
    """What reference data is loaded (a load answers with it too)."""

    data_dir: str
    counts: dict[str, int]
    seed: int
    version: str
    ledger_seq: int
    loaded_at_unix_ms: int
    snapshot_seq: int
    ledger_commits: int = 0
    ledger_commit_records: int = 0


class PositionResult(Result):
    """A prepaid position as it stands after the command (``core.funds.Position``)."""

    position: Position
    province_name: str = ""


class MonthResult(Result):
    month: int
    closed: bool
    confirmed: tuple[str, ...]


class AccountResult(Result):
    """A personal account as it stands: the balance and the family accounts that may pay for the person."""

    psn_no: str
    balance_fen: int
    mulaid_psn_nos: tuple[str, ...] = ()
    mulaid_balances_fen: tuple[int, ...] = ()


class ProblemResult(Result):
    problem: ArchivedProblem


class Decision(NamedTuple):
    """What deciding a command gives: the event to record and the result its answer needs."""

    event: Event
    result: Result

