"""Counting answers honestly: a load figure counts successful answers only, refusals are counted beside it by
reason, and a refusal nobody expected ends the run instead of a rate.

A whole call refused (an RPC error) counts under its ErrorInfo reason, or its gRPC status code when it carries
none (a transport failure, a deadline); an item a SettleBatch refused counts under its own reason.  What a
benchmark expects is named where it runs (an open-loop row past the knee expects OVERLOADED; the peak day
expects the business refusals its drawn cases meet), never inferred from what came back.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable


class UnexpectedRefusals(RuntimeError):
    """A load run met refusals it did not expect: its rate would count fewer successes than it claims."""

    def __init__(self, what: str, unexpected: dict[str, int], refusals: dict[str, int]) -> None:
        super().__init__(f"{what}: unexpected refusals {dict(sorted(unexpected.items()))} "
                         f"(all refusals {dict(sorted(refusals.items()))}); no rate is reported")
        self.unexpected = unexpected


def call_refusal(err) -> str:
    """The reason of a refused call (client side): its ErrorInfo reason, else its status code's name."""
    from gateway.transport.status import reason_of

    return reason_of(err) or err.code().name


def status_reason(status) -> str:
    """The reason of a google.rpc.Status (a SettleOutcome's refusal): its ErrorInfo, else its code number."""
    from google.rpc import error_details_pb2

    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
            return info.reason
    return f"code {status.code}"


def batch_tally(outcomes) -> tuple[int, Counter]:
    """(items answered with a result, refusals by reason) of a SettleBatch's or SettleStream's outcomes."""
    refusals: Counter = Counter()
    for outcome in outcomes:
        if outcome.WhichOneof("outcome") == "refused":
            refusals[status_reason(outcome.refused)] += 1
    return len(outcomes) - sum(refusals.values()), refusals


def unexpected(refusals: dict[str, int], expected: Iterable[str] = ()) -> dict[str, int]:
    allowed = set(expected)
    return {reason: n for reason, n in refusals.items() if n and reason not in allowed}


def require_expected(what: str, refusals: dict[str, int], expected: Iterable[str] = ()) -> None:
    """Raise UnexpectedRefusals if any refusal's reason is not among ``expected``."""
    found = unexpected(refusals, expected)
    if found:
        raise UnexpectedRefusals(what, found, dict(refusals))
