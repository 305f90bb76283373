"""Yidi core: the Cython index, eligibility (SPEC §4) and benefit (SPEC §5)."""
from .errors import InvariantError, LoadError, OperatingError, RequestError, YidiError
from ._core import (ACCUMULATOR_KEYS, DEBUG, FILING_KINDS, INSUTYPES, LIMITS, LONG_TERM_KINDS, PERSON_STATUSES,
                    PERSON_TYPES, TEMPORARY_KINDS, GcClock, Index, KeyTable, Wire, certno_check_char, certno_valid,
                    count_field, length_delimited, pooling_code, province_code, read_batch, read_batch_items,
                    read_outpatient, read_outpatient_item, read_outpatient_request, read_settle_item, plain_outpatient,
                    settle_outpatients, untracked, voucher_mac, GroupPacker, GroupRules, blake2b_digest, copy_binary)
from .provinces import PROVINCES

__all__ = ["Index", "YidiError", "RequestError", "OperatingError", "InvariantError", "LoadError",
           "ACCUMULATOR_KEYS", "LIMITS", "DEBUG", "LONG_TERM_KINDS", "TEMPORARY_KINDS",
           "FILING_KINDS", "INSUTYPES", "PERSON_TYPES", "PERSON_STATUSES", "PROVINCES",
           "province_code", "pooling_code", "certno_check_char", "certno_valid", "voucher_mac",
           # the protobuf messages the core reads and writes itself (wire.pxi)
           "read_outpatient_request", "read_settle_item", "read_batch_items", "count_field", "length_delimited",
           # requests read straight into commands (wire.pxi)
           "Wire", "read_outpatient", "read_outpatient_item", "read_batch",
           # the gateway's recent idempotency keys (keytable.pxi)
           "KeyTable",
           # a run of outpatient settlements decided, applied and recorded in one call (settle.pxi)
           "plain_outpatient", "settle_outpatients",
           # a tuple of atoms out of the collector's sight (for long-lived dicts: docs/performance.md), and the
           # collector's pause clock (gcclock.pxi)
           "untracked", "GcClock",
           # a ledger commit group packed, hashed, chained and tagged in one call, its PostgreSQL COPY streams and
           # the core's BLAKE2b (ledger.pxi)
           "GroupPacker", "GroupRules", "copy_binary", "blake2b_digest"]
