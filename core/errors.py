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
