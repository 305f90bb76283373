"""Ledger partitions by insured province (docs/postgresql.md, Partitions).

A ledger split into ``n`` partitions keeps each insured province's person
state (accumulators, open stays, accounts, chronic accumulators) and its
prepaid position in one partition, chosen by a stable rule every node
computes alike: the province's two-digit code modulo ``n`` (``110000`` → 11
% n).  One partition (the default, and SQLite always) is today's ledger.

Each partition numbers its own records from its base, ``part × SEQ_SPAN``:
partition 0 from 1 as before, partition 1 from 10^13 + 1.  The ids the
gateway issues are "M"/"S"/"R" + the 15-digit seq of the record that opened
the object (core/events.py), so an id names its partition and seqs (the
idempotency index's, the derived tables') are unique across partitions.
"""
from __future__ import annotations

import hashlib

from .events import id_seq

# Records a partition may hold: seqs of partition p lie in (p × SEQ_SPAN, (p + 1) × SEQ_SPAN).
SEQ_SPAN = 10**13
# The most partitions an id of 15 digits can name.
MAX_PARTITIONS = 99
# The prefixes of the ids a partition issues from its seqs.
ID_PREFIXES = ("M", "S", "R")


def seq_base(part: int) -> int:
    """The seq before a partition's first record (its chain starts there at genesis)."""
    return part * SEQ_SPAN


def part_of_seq(seq: int) -> int:
    """The partition whose record ``seq`` is (its base counts as its own: where its chain starts)."""
    return seq // SEQ_SPAN


def check_partitions(n: int) -> None:
    if not 1 <= n <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}, not {n}")


class PartitionMap:
    """Which partition each insured province's persons and position live in (the same on every node)."""

    def __init__(self, n: int = 1) -> None:
        check_partitions(n)
        self.n = n

    def of_province(self, admdvs: str) -> int:
        """The partition of an insured province (any admdvs of it: its first two digits decide)."""
        if self.n == 1 or len(admdvs) < 2 or not admdvs[:2].isdigit():
            return 0
        return int(admdvs[:2]) % self.n

    def of_id(self, ident: str) -> int | None:
        """The partition that issued a visit, settlement or problem id; None if ``ident`` is not one of ours."""
        for prefix in ID_PREFIXES:
            seq = id_seq(ident, prefix)
            if seq:
                part = part_of_seq(seq)
                return part if part < self.n else None
        return None


def route_names(person=None, filing=None, psn_no: str = "", certno: str = "", filing_id: str = "") -> list[str]:
    """The names a person (psn_no, certno) and a filing (filing_id) are routed by in ``person_routes``; the
    certno only by a hash of it (a national ID number is not kept in the clear where only a route needs it)."""
    if person is not None:
        psn_no, certno = person.psn_no, person.certno
    if filing is not None:
        filing_id, psn_no = filing.filing_id, psn_no or filing.psn_no
    names = [f"p:{psn_no}"] if psn_no else []
    if certno:
        names.append("c:" + hashlib.blake2b(certno.encode(), digest_size=16).hexdigest())
    if filing_id:
        names.append(f"f:{filing_id}")
    return names
