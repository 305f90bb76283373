"""Errors by kind, and the one table of reason codes.

Three kinds, kept apart as asyncpg keeps them apart:

* ``RequestError`` — the caller asked for something the rules refuse or sent
  something malformed (``PERSON_NOT_FILED``, ``INVALID_DATE``,
  ``PERMISSION_DENIED`` ...).  Retrying the same request will not help; the
  message tells the clerk what to do instead.
* ``OperatingError`` — the gateway cannot serve the request now
  (``NOT_READY``, ``OVERLOADED`` ...).  Retrying later with the same
  ``request_id`` is the right thing to do.
* ``InvariantError`` — a bug: a state the rules make impossible.  It is not a
  ``YidiError``: the gateway answers it ``INTERNAL`` with a correlation id,
  logs it and counts it.  Never raised for anything a caller can cause, and
  never an ``assert`` (those vanish under ``python -O``).

Both refusal kinds carry a reason code (the ``Reason`` enum of
``protos/yidi/v1/common.proto``; ``ErrorInfo.reason`` is its name), a gRPC
status code and a message a counter clerk can read aloud (Chinese, with the
English reason code beside it).  ``REASONS`` is the one table that maps
reasons to status codes and kinds; services never invent their own.  Status
codes are given by name (``grpc.StatusCode`` names) so that ``core`` does not
depend on grpc.

``YidiError(reason, message)`` builds the subclass of the reason's kind, so
code that refuses only names the reason.
"""
from __future__ import annotations

from typing import NamedTuple

CALLER = "caller"        # RequestError
OPERATING = "operating"  # OperatingError


class ReasonInfo(NamedTuple):
    status: str  # grpc.StatusCode name
    kind: str    # CALLER or OPERATING


def _r(status: str, kind: str = CALLER) -> ReasonInfo:
    return ReasonInfo(status, kind)


# reason code -> (gRPC status code name, kind).  The order and names match the
# Reason enum in protos/yidi/v1/common.proto (tests/test_contract_reasons.py).
REASONS: dict[str, ReasonInfo] = {
    # SPEC §4 eligibility, in the order they are checked
    "PERSON_NOT_FILED": _r("FAILED_PRECONDITION"),
    "INSURANCE_SUSPENDED": _r("FAILED_PRECONDITION"),
    "CARD_INVALID": _r("FAILED_PRECONDITION"),
    "INSTITUTION_UNKNOWN": _r("NOT_FOUND"),
    "NOT_CROSS_PROVINCE": _r("FAILED_PRECONDITION"),
    "INSTITUTION_NOT_ENABLED": _r("FAILED_PRECONDITION"),
    "NOT_FILED_FOR_DESTINATION": _r("FAILED_PRECONDITION"),
    "INSTITUTION_NOT_DESIGNATED": _r("FAILED_PRECONDITION"),
    "DUPLICATE_ADMISSION": _r("ALREADY_EXISTS"),
    # SPEC §3 / §5 policy
    "POLICY_MISSING": _r("FAILED_PRECONDITION"),
    # SPEC §6 idempotency and lifecycle
    "IDEMPOTENCY_KEY_REUSED": _r("ALREADY_EXISTS"),
    "VISIT_NOT_FOUND": _r("NOT_FOUND"),
    "VISIT_NOT_OPEN": _r("FAILED_PRECONDITION"),
    "VISIT_ALREADY_SETTLED": _r("FAILED_PRECONDITION"),
    "VISIT_KIND_MISMATCH": _r("FAILED_PRECONDITION"),
    "FEE_LINE_CONFLICT": _r("ALREADY_EXISTS"),
    "FEE_LINE_NOT_FOUND": _r("NOT_FOUND"),
    "NO_FEE_LINES": _r("FAILED_PRECONDITION"),
    "SETTLEMENT_NOT_FOUND": _r("NOT_FOUND"),
    "SETTLEMENT_ALREADY_CANCELLED": _r("FAILED_PRECONDITION"),
    "FILING_NOT_FOUND": _r("NOT_FOUND"),
    "FILING_CONFLICT": _r("ALREADY_EXISTS"),
    "PERSON_NOT_FOUND": _r("NOT_FOUND"),
    "PERSON_CONFLICT": _r("FAILED_PRECONDITION"),
    "DATE_BEFORE_ADMISSION": _r("FAILED_PRECONDITION"),
    # malformed input (changes nothing)
    "INVALID_ARGUMENT": _r("INVALID_ARGUMENT"),
    "INVALID_CERTNO": _r("INVALID_ARGUMENT"),
    "INVALID_PRICE": _r("INVALID_ARGUMENT"),
    "INVALID_QUANTITY": _r("INVALID_ARGUMENT"),
    "INVALID_DATE": _r("INVALID_ARGUMENT"),
    "INVALID_ENUM": _r("INVALID_ARGUMENT"),
    "INVALID_CODE": _r("INVALID_ARGUMENT"),
    "INVALID_REQUEST_ID": _r("INVALID_ARGUMENT"),
    "TOO_MANY_LINES": _r("INVALID_ARGUMENT"),
    "MESSAGE_TOO_LARGE": _r("RESOURCE_EXHAUSTED"),
    # the gateway cannot serve now: retry later with the same request_id
    "OVERLOADED": _r("RESOURCE_EXHAUSTED", OPERATING),
    "NOT_READY": _r("UNAVAILABLE", OPERATING),
    # callers and reference data
    "UNAUTHENTICATED": _r("UNAUTHENTICATED"),
    "PERMISSION_DENIED": _r("PERMISSION_DENIED"),
    "REFERENCE_DATA_INVALID": _r("INVALID_ARGUMENT"),
    # a bug (InvariantError or any unexpected exception), answered with a correlation id
    "INTERNAL": _r("INTERNAL", OPERATING),
    # SPEC §8 funds and problem reports
    "CLEARING_MONTH_CLOSED": _r("FAILED_PRECONDITION"),
    "CLEARING_MONTH_OPEN": _r("FAILED_PRECONDITION"),
    "CLEARING_MONTH_CONFIRMED": _r("FAILED_PRECONDITION"),
    "PROBLEM_NOT_FOUND": _r("NOT_FOUND"),
    "PROBLEM_RESOLVED": _r("FAILED_PRECONDITION"),
    "INVALID_AMOUNT": _r("INVALID_ARGUMENT"),
    # batch and stream settlement
    "BATCH_TOO_LARGE": _r("INVALID_ARGUMENT"),
    # the ledger cannot be written (full disk, failing fsync): retry later with the same request_id
    "STORAGE_UNAVAILABLE": _r("UNAVAILABLE", OPERATING),
    # SPEC §6 冲正: the request was reversed by its caller before it arrived; nothing was done
    "REQUEST_REVERSED": _r("FAILED_PRECONDITION"),
    # the caller's deadline passed before the request was performed; nothing was done
    "DEADLINE_EXCEEDED": _r("DEADLINE_EXCEEDED", OPERATING),
    # SPEC §10 the national interface
    "ACCOUNT_INSUFFICIENT": _r("FAILED_PRECONDITION"),
    "DISEASE_NOT_RECOGNISED": _r("FAILED_PRECONDITION"),
    "INSTITUTION_NOT_ENABLED_FOR_DISEASE": _r("FAILED_PRECONDITION"),
    "FEE_DATE_SETTLED": _r("FAILED_PRECONDITION"),
    "NOT_LATEST_SETTLEMENT": _r("FAILED_PRECONDITION"),
    "REFUND_EXCEEDS_ORIGINAL": _r("FAILED_PRECONDITION"),
    "LINE_ALREADY_SETTLED": _r("FAILED_PRECONDITION"),
    "CREDENTIAL_INVALID": _r("INVALID_ARGUMENT"),
    "EXPLANATION_UNAVAILABLE": _r("FAILED_PRECONDITION"),
    # the ledger failed a proof (a record, a derived row or a seal does not match): nothing is served from it
    "LEDGER_DAMAGED": _r("UNAVAILABLE", OPERATING),
}

DOMAIN = "yidi.gov.cn"

# What each reason means and what to do, in English: sent beside the Chinese clerk message as a
# google.rpc.LocalizedMessage (locale en-US) for programs and their authors.  One entry per reason
# (tests/test_reasons.py).
ENGLISH: dict[str, str] = {
    "PERSON_NOT_FILED": "The person has no cross-province filing. The insured province can file online, effective "
                        "at once (up to discharge settlement); then retry with the same request_id.",
    "INSURANCE_SUSPENDED": "The person's insurance is suspended; the insured province must restore it first.",
    "CARD_INVALID": "The card number or version presented is not accepted; check the card or settle without it.",
    "INSTITUTION_UNKNOWN": "The institution is not in the cross-province direct-settlement list; check fixmedins_code.",
    "NOT_CROSS_PROVINCE": "The institution is in the person's own insured province: settle locally, not cross-province.",
    "INSTITUTION_NOT_ENABLED": "The institution is not open for cross-province settlement of this kind of visit.",
    "NOT_FILED_FOR_DESTINATION": "No filing of the person covers this treatment region on this date; the insured "
                                 "province can file or revise one (the message lists the current filings).",
    "INSTITUTION_NOT_DESIGNATED": "The person's filing names other institutions (listed in the message); the insured "
                                  "province can revise the filing.",
    "DUPLICATE_ADMISSION": "The person already has an open inpatient stay; discharge or cancel it first.",
    "POLICY_MISSING": "The insured region has no policy in force on this date; the national operator must load one.",
    "IDEMPOTENCY_KEY_REUSED": "This request_id was used before for a different request; use a new request_id.",
    "VISIT_NOT_FOUND": "No such visit (mdtrt_id) for this caller.",
    "VISIT_NOT_OPEN": "The admission was cancelled; admit the patient again.",
    "VISIT_ALREADY_SETTLED": "The visit is settled; cancel the settlement first to change it.",
    "VISIT_KIND_MISMATCH": "This call is for the other kind of visit (inpatient or outpatient).",
    "FEE_LINE_CONFLICT": "A fee line with this feedetl_sn was uploaded before with other content; use a new serial "
                         "number or withdraw the old line.",
    "FEE_LINE_NOT_FOUND": "No fee line with this feedetl_sn on the visit.",
    "NO_FEE_LINES": "There are no fee lines to settle; upload them first.",
    "SETTLEMENT_NOT_FOUND": "No such settlement (setl_id) for this caller.",
    "SETTLEMENT_ALREADY_CANCELLED": "The settlement is cancelled already.",
    "FILING_NOT_FOUND": "No such filing for this caller.",
    "FILING_CONFLICT": "A filing with this filing_id exists with other content; revise it instead.",
    "PERSON_NOT_FOUND": "No such person for this caller.",
    "PERSON_CONFLICT": "psn_no and certno name different persons; send one of them.",
    "DATE_BEFORE_ADMISSION": "The date is before the admission date; correct it.",
    "INVALID_ARGUMENT": "A field is malformed or out of bounds (BadRequest names it); correct the request.",
    "INVALID_CERTNO": "The resident ID number must be 18 characters with a valid GB 11643 check character.",
    "INVALID_PRICE": "A unit price is out of range (0 to 10,000,000,000 fen per unit).",
    "INVALID_QUANTITY": "A quantity is out of range (thousandths of a unit, above 0; below 0 only on a refund line).",
    "INVALID_DATE": "A date is not a calendar date yyyymmdd in 19000101-21001231 (months: yyyymm).",
    "INVALID_ENUM": "An enum value is outside its list; see the .proto file.",
    "INVALID_CODE": "A code (region, catalogue item or institution) is malformed.",
    "INVALID_REQUEST_ID": "request_id must be 1-40 printable ASCII characters without spaces.",
    "TOO_MANY_LINES": "Too many fee lines for one visit or settlement (at most 1000).",
    "MESSAGE_TOO_LARGE": "The request is larger than the gateway accepts; send it in smaller parts.",
    "OVERLOADED": "The gateway or this caller is at its limit; nothing was done. Retry after RetryInfo's delay with "
                  "the same request_id.",
    "NOT_READY": "The gateway is loading its data; retry shortly with the same request_id.",
    "UNAUTHENTICATED": "The caller is not identified: present a client certificate of the platform CA with one "
                       "yidi:// URI name.",
    "PERMISSION_DENIED": "This caller may not do this (who may do what: docs/domain.md, section 9).",
    "REFERENCE_DATA_INVALID": "The reference data was rejected (the message names file, line and reason); the "
                              "gateway keeps serving the data it had.",
    "INTERNAL": "A bug in the gateway, logged and reported under the correlation id; retry with the same request_id.",
    "CLEARING_MONTH_CLOSED": "The clearing month is closed already.",
    "CLEARING_MONTH_OPEN": "The clearing month is still open; the national operator must close it first.",
    "CLEARING_MONTH_CONFIRMED": "A province has confirmed this month (it can no longer be reopened), or this province "
                                "confirmed it already.",
    "PROBLEM_NOT_FOUND": "No such problem report for this caller.",
    "PROBLEM_RESOLVED": "The problem report is resolved; it only takes comments.",
    "INVALID_AMOUNT": "An amount of money is out of range.",
    "BATCH_TOO_LARGE": "Too many items in one SettleBatch (at most 1000); nothing was performed.",
    "STORAGE_UNAVAILABLE": "The gateway cannot write its ledger now; the outcome is unknown. Retry with the same "
                           "request_id.",
    "REQUEST_REVERSED": "This request_id was reversed before the request arrived; nothing was done.",
    "DEADLINE_EXCEEDED": "The call's deadline passed before it was performed; nothing was done. Retry with a longer "
                         "deadline and the same request_id.",
    "ACCOUNT_INSUFFICIENT": "The personal account's balance is too low for this debit.",
    "DISEASE_NOT_RECOGNISED": "The insured province has not recognised this chronic disease for the person; it must "
                              "do so first.",
    "INSTITUTION_NOT_ENABLED_FOR_DISEASE": "The institution is not open for cross-province settlement of this chronic "
                                           "disease.",
    "FEE_DATE_SETTLED": "A fee line is dated on or before a mid-stay settlement of this stay; date it later.",
    "NOT_LATEST_SETTLEMENT": "Only the stay's latest settlement can be cancelled; cancel the later ones first.",
    "REFUND_EXCEEDS_ORIGINAL": "The refund would take the original line's quantity below zero.",
    "LINE_ALREADY_SETTLED": "The line was settled; cancel that settlement before refunding it.",
    "CREDENTIAL_INVALID": "The electronic voucher has expired or is not signed by the insured province; ask the "
                          "patient to show a fresh one.",
    "EXPLANATION_UNAVAILABLE": "This settlement was made by a release that did not record what an explanation needs.",
    "LEDGER_DAMAGED": "The gateway's ledger failed a proof; it serves nothing from it until an operator restores it. "
                      "Nothing was done: retry later with the same request_id.",
}


class YidiError(Exception):
    """A refusal: the request was understood and said no.  Changes nothing.

    ``YidiError(reason, message, **metadata)`` returns a ``RequestError`` or
    an ``OperatingError`` according to the reason's kind.
    """

    __slots__ = ("reason", "message", "metadata")

    def __new__(cls, reason: str, message: str = "", **metadata: object):
        if cls is YidiError:
            info = REASONS.get(reason)
            if info is None:
                raise InvariantError(f"unknown reason code {reason!r}")
            cls = OperatingError if info.kind == OPERATING else RequestError
        return super().__new__(cls)

    def __init__(self, reason: str, message: str, **metadata: object) -> None:
        if reason not in REASONS:
            raise InvariantError(f"unknown reason code {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        # extra machine-readable context for ErrorInfo.metadata (strings only)
        self.metadata = {k: str(v) for k, v in metadata.items()}

    def __reduce__(self):
        return (_rebuild, (self.reason, self.message, self.metadata))

    @property
    def status_name(self) -> str:
        return REASONS[self.reason].status

    @property
    def kind(self) -> str:
        return REASONS[self.reason].kind

    def clerk_message(self) -> str:
        """The message shown at the counter: Chinese text with the reason code beside it."""
        return f"{self.message} [{self.reason}]"


class RequestError(YidiError):
    """The caller's mistake, or a rule that says no (typed reason, 4xx-like status)."""

    __slots__ = ()


class OperatingError(YidiError):
    """The gateway cannot serve now (NOT_READY, OVERLOADED ...): retry later with the same key."""

    __slots__ = ()


class InvariantError(Exception):
    """A bug: a state the rules make impossible.  Answered INTERNAL, logged with a correlation id."""


def _rebuild(reason: str, message: str, metadata: dict) -> YidiError:
    return YidiError(reason, message, **metadata)


def invariant(condition: object, what: str) -> None:
    """Raise InvariantError unless ``condition`` holds (an assert that survives ``python -O``)."""
    if not condition:
        raise InvariantError(what)


class LoadError(Exception):
    """Reference data rejected: names the file, the line number and the reason."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason
