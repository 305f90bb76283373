"""Reason codes: the stable, machine-readable half of every refusal.

Each refusal carries a reason code (SPEC §4 and the issues), a gRPC status
code and a message a counter clerk can read aloud (Chinese, with the English
reason code beside it).  This module is the one table that maps reasons to
gRPC status codes; services never invent their own.

The status codes are given by name (the names of ``grpc.StatusCode``) so that
``core`` does not depend on grpc.
"""
from __future__ import annotations

# reason code -> gRPC status code name
REASONS: dict[str, str] = {
    # SPEC §4 eligibility, in the order they are checked
    "PERSON_NOT_FILED": "FAILED_PRECONDITION",
    "INSURANCE_SUSPENDED": "FAILED_PRECONDITION",
    "CARD_INVALID": "FAILED_PRECONDITION",
    "INSTITUTION_UNKNOWN": "NOT_FOUND",
    "NOT_CROSS_PROVINCE": "FAILED_PRECONDITION",
    "INSTITUTION_NOT_ENABLED": "FAILED_PRECONDITION",
    "NOT_FILED_FOR_DESTINATION": "FAILED_PRECONDITION",
    "INSTITUTION_NOT_DESIGNATED": "FAILED_PRECONDITION",
    "DUPLICATE_ADMISSION": "ALREADY_EXISTS",
    # SPEC §3 / §5 policy
    "POLICY_MISSING": "FAILED_PRECONDITION",
    # SPEC §6 idempotency and lifecycle
    "IDEMPOTENCY_KEY_REUSED": "ALREADY_EXISTS",
    "VISIT_NOT_FOUND": "NOT_FOUND",
    "VISIT_NOT_OPEN": "FAILED_PRECONDITION",
    "VISIT_ALREADY_SETTLED": "FAILED_PRECONDITION",
    "VISIT_KIND_MISMATCH": "FAILED_PRECONDITION",
    "FEE_LINE_CONFLICT": "ALREADY_EXISTS",
    "FEE_LINE_NOT_FOUND": "NOT_FOUND",
    "NO_FEE_LINES": "FAILED_PRECONDITION",
    "SETTLEMENT_NOT_FOUND": "NOT_FOUND",
    "SETTLEMENT_ALREADY_CANCELLED": "FAILED_PRECONDITION",
    "FILING_NOT_FOUND": "NOT_FOUND",
    "FILING_CONFLICT": "ALREADY_EXISTS",
    "PERSON_NOT_FOUND": "NOT_FOUND",
    "PERSON_CONFLICT": "FAILED_PRECONDITION",
    "DATE_BEFORE_ADMISSION": "FAILED_PRECONDITION",
    # malformed input (changes nothing)
    "INVALID_ARGUMENT": "INVALID_ARGUMENT",
    "INVALID_CERTNO": "INVALID_ARGUMENT",
    "INVALID_PRICE": "INVALID_ARGUMENT",
    "INVALID_QUANTITY": "INVALID_ARGUMENT",
    "INVALID_DATE": "INVALID_ARGUMENT",
    "INVALID_ENUM": "INVALID_ARGUMENT",
    "INVALID_CODE": "INVALID_ARGUMENT",
    "INVALID_REQUEST_ID": "INVALID_ARGUMENT",
    "TOO_MANY_LINES": "INVALID_ARGUMENT",
    "MESSAGE_TOO_LARGE": "RESOURCE_EXHAUSTED",
    "OVERLOADED": "RESOURCE_EXHAUSTED",
    # callers and reference data
    "UNAUTHENTICATED": "UNAUTHENTICATED",
    "PERMISSION_DENIED": "PERMISSION_DENIED",
    "REFERENCE_DATA_INVALID": "INVALID_ARGUMENT",
    "NOT_READY": "UNAVAILABLE",
    "INTERNAL": "INTERNAL",
}

DOMAIN = "yidi.gov.cn"


class YidiError(Exception):
    """A refusal: the request was understood and said no.  Changes nothing."""

    __slots__ = ("reason", "message", "metadata")

    def __init__(self, reason: str, message: str, **metadata: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        # extra machine-readable context for ErrorInfo.metadata (strings only)
        self.metadata = {k: str(v) for k, v in metadata.items()}

    @property
    def status_name(self) -> str:
        return REASONS[self.reason]

    def clerk_message(self) -> str:
        """The message shown at the counter: Chinese text with the reason code beside it."""
        return f"{self.message} [{self.reason}]"


class LoadError(Exception):
    """Reference data rejected: names the file, the line number and the reason."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason
