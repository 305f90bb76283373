"""The audit log: one JSON line per mutating call and per call that read or named a person's data.

Its own file (``Config.audit_path()``, default ``<ledger>.audit.jsonl``),
apart from the operational log.  Each line: ``time`` (ISO 8601, UTC),
``caller``, ``method``, ``request_id``, ``person`` (``psn_no``, or the
certno masked, ``210102********1234``), ``outcome`` (``ok``, ``replayed``
or the refusal's reason), ``key`` (the setl_id, mdtrt_id or filing_id the
call made or touched, when there is one) and ``seq`` (its ledger record).

Recorded: every mutating call (a request with a ``request_id``), whatever
its outcome; every refusal whose message names a person's data to the caller
(``NAMING_REASONS``: the SPEC §4 check 7 and 8 messages name the person's
filings to the treatment province, which is entitled to them, and the audit
log records that it asked); and every read of a person's filings
(``ListFilings``).  Names and card numbers are never written; a certno only
masked.  Lines are flushed to the OS as they are written (not fsynced: the
ledger, not this file, is the record of what happened).
"""
from __future__ import annotations

import datetime
import logging
import os

import orjson

from .privacy import mask_certno, mask_text

log = logging.getLogger("yidi.audit")

NAMING_REASONS = frozenset({"NOT_FILED_FOR_DESTINATION", "INSTITUTION_NOT_DESIGNATED", "NOT_CROSS_PROVINCE",
                            "PERSON_CONFLICT"})
READS_OF_PERSONS = frozenset({"FilingService/ListFilings"})
MAX_FIELD_CHARS = 64


def _field(text: str) -> str:
    """A caller's value as logged: bounded, and any ID number in it masked (a hostile caller may put one in
    any field, a psn_no or a request_id)."""
    return mask_text(text[:MAX_FIELD_CHARS])


def person_of(request) -> str:
    """The person a request names: its psn_no, else its certno masked (nested person rows included)."""
    for holder in (request, getattr(request, "person", None)):
        if holder is None or isinstance(holder, str):
            continue
        psn_no = getattr(holder, "psn_no", "")
        if psn_no:
            return _field(psn_no)
        certno = getattr(holder, "certno", "")
        if certno:
            return mask_certno(certno[:MAX_FIELD_CHARS])
    return ""


def fields_of(request):
    """The object holding a request's fields: a request the core read from wire bytes (convert.Wire) holds its
    command (request_id, person ...); a protobuf message holds them itself."""
    return getattr(request, "command", request)


class AuditLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._file = None

    def _open(self):
        if self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)
        return self._file

    def wants(self, method: str, request, reason: str | None) -> bool:
        request = fields_of(request)
        return (hasattr(request, "request_id") or method in READS_OF_PERSONS
                or (reason is not None and reason in NAMING_REASONS))

    def write(self, caller: str, method: str, request, outcome: str, key: str = "", seq: int = 0) -> None:
        self.write_many(caller, [(method, request, outcome, key, seq)])

    def write_many(self, caller: str, entries) -> None:
        """One line per (method, request, outcome, key, seq), written at once (a batch's items) and so stamped with
        the one time they are written at (read once: it cost more than the rest of a line)."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        self._append(b"".join([self._line(now, caller, *entry) for entry in entries]))

    @staticmethod
    def _line(now: str, caller: str, method: str, request, outcome: str, key: str = "", seq: int = 0) -> bytes:
        request = fields_of(request)
        line = {
            "time": now, "caller": caller, "method": method,
            "request_id": _field(getattr(request, "request_id", "")),
            "person": person_of(request), "outcome": outcome,
        }
        if key:
            line["key"] = _field(key)
        if seq:
            line["seq"] = seq
        return orjson.dumps(line) + b"\n"

    def _append(self, data: bytes) -> None:
        try:
            self._open().write(data)
        except OSError as err:  # a full disk must not turn into a refused settlement; say so in the log
            log.error("audit log %s not written: %s", self.path, err)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
