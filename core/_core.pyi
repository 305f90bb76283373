"""Typed stubs for core._core (the Cython core).  See SPEC §3–§5."""
from typing import Any, Callable, Iterable, Sequence, TypeVar

from core.commands import Card
from core.events import FeeLine

DEBUG: bool
"""True in a debug build (YIDI_DEBUG=1 at build time): the core then checks its invariants after
every put_person / put_filing / apply_deltas, after load_dir and on every benefit's money.
Python code may guard its own debug-only checks with it."""

ACCUMULATOR_KEYS: tuple[str, ...]
"""("inpatient_fund_paid_fen", "inpatient_admissions", "crit_base_fen", "crit_paid_fen",
"assist_paid_fen", "outpatient_fund_paid_fen", "outpatient_deductible_used_fen")"""

LIMITS: dict[str, int]
"""Every bound of the core (from limits.pxi): MAX_ID_LEN, MAX_NAME_BYTES, MAX_CARD_VERSION_LEN,
MAX_LINES, MAX_FILING_CODES, MAX_TIERS, MAX_TEMPORARY_FILING_DAYS, MIN_DATE, MAX_DATE,
MAX_UNIT_PRICE_FEN, MAX_QTY_MILLI, MAX_BILL_FEN, MAX_POLICY_FEN, MAX_ROWS."""

LAYOUT: dict
"""The C layout, written from the C side: {"N_ACCUMULATORS", "MAX_TIERS", "N_LEVELS", "N_FILING_KINDS": int,
"accumulator_index": {accumulator name: its ACC_* value (index into the C array)},
"array_len": {"Struct.field": length counted by sizeof}, "enum_len": {"FILING_KINDS": int}}.
tests/core/test_core_layout.py checks it against ACCUMULATOR_KEYS."""

INSUTYPES: tuple[str, ...]
PERSON_TYPES: tuple[str, ...]
PERSON_STATUSES: tuple[str, ...]
FILING_KINDS: tuple[str, ...]
FILING_STATUSES: tuple[str, ...]
INSTITUTION_KINDS: tuple[str, ...]
CATEGORIES: tuple[str, ...]
CLASSES: tuple[str, ...]
KIND_NAMES_ZH: tuple[str, ...]

LONG_TERM_KINDS: tuple[str, ...]
"""The long-term filing kinds (SPEC §2): ("retired_relocation", "long_term_residence", "stationed_work")."""
TEMPORARY_KINDS: tuple[str, ...]
"""The temporary filing kinds (SPEC §2): ("referral", "emergency", "other_temporary")."""

def province_code(admdvs: str) -> str:
    """The province of a region code: "210102" -> "210000".

    Raises YidiError("INVALID_CODE") unless admdvs is a 6-digit code not starting with 0.
    """
def pooling_code(admdvs: str) -> str:
    """The pooling region (prefecture) of a region code: "210102" -> "210100".

    Raises YidiError("INVALID_CODE") unless admdvs is a 6-digit code not starting with 0.
    """
class GcClock:
    """A gc.callbacks entry reading the clocks in C: at each collection's end, ``on_pause(generation, wall_ms,
    cpu_ms, waited_ms, collected, uncollectable)``."""
    def __init__(self, on_pause: Callable[[int, float, float, float, int, int], None]) -> None: ...
    def __call__(self, phase: str, info: dict) -> None: ...
_T = TypeVar("_T", bound=tuple)
def untracked(row: _T) -> _T:
    """The tuple (ints and strs, or untracked tuples of them) no longer tracked by the garbage collector, so a
    long-lived dict holding it is not tracked again; TypeError for any other item."""
def certno_check_char(first17: str) -> str:
    """The GB 11643 mod-11 check character ("0"-"9" or "X") of a certno's first 17 digits.

    Raises YidiError("INVALID_CERTNO") unless first17 is 17 ASCII digits.
    """
def certno_valid(certno: str) -> bool:
    """True for a certno the core accepts (SPEC §3): 17 digits and their check character.

    The birth date inside is not checked, as the core does not check it.
    """
# ---------------------------------------------------------------- validate.pxi: one check per field
# Each raises YidiError(reason, message) with a clerk's message that echoes at most MAX_ID_LEN
# characters of the refused value and never a name.  core.limits re-exports them.

def check_id(value: object, what: str, reason: str = "INVALID_ARGUMENT") -> None:
    """Identifiers: 1..MAX_ID_LEN printable ASCII characters without spaces; else YidiError(reason)
    "<what>「<value[:MAX_ID_LEN]>」格式不正确：应为 1–MAX_ID_LEN 位字母或数字。"."""
def is_calendar_date(yyyymmdd: object) -> bool:
    """An int (not a bool) yyyymmdd that is a real calendar date inside MIN_DATE..MAX_DATE."""
def check_date(yyyymmdd: object, what: str) -> None:
    """INVALID_DATE unless is_calendar_date(yyyymmdd); `what` names the date ("入院日期")."""
def check_year(year: object) -> None:
    """INVALID_DATE unless year is an int within MIN_DATE // 10000 .. MAX_DATE // 10000."""
def check_line(sn: object, code: object, name: object, unit_price_fen: object, qty_milli: object,
               fee_date: object) -> None:
    """One fee line (SPEC §5.1): sn an identifier (INVALID_ARGUMENT); code an identifier
    (INVALID_CODE); name text of at most MAX_NAME_BYTES UTF-8 bytes without control characters,
    may be empty (INVALID_ARGUMENT); 0 <= unit_price_fen <= MAX_UNIT_PRICE_FEN (INVALID_PRICE);
    0 < qty_milli <= MAX_QTY_MILLI (INVALID_QUANTITY); fee_date falsy (undated) or a calendar
    date (INVALID_DATE).  Checked in that order."""
def check_line_count(n: int, what: str) -> None:
    """TOO_MANY_LINES "<what>的费用明细不能超过 MAX_LINES 条，本次 n 条。" if n > MAX_LINES."""
def line_amount_fen(unit_price_fen: int, qty_milli: int) -> int:
    """SPEC §5.1 line amount, (unit_price_fen * qty_milli + 500) // 1000, the one implementation
    (benefit uses the same C inline).  For checked values (0 <= qty_milli allows a line refunded
    to zero); anything else raises InvariantError."""

class Index:
    """Filed persons and reference data in packed C structs and open-addressing tables."""

    ACCUMULATOR_KEYS: tuple[str, ...]

    def __init__(self, *, accepted_card_versions: Iterable[str] = ("2.0", "3.0")) -> None: ...
    @property
    def meta(self) -> dict:
        """manifest.json of the loaded directory ({} if absent); a copy."""
    def load_dir(self, path: str, progress: Callable[[str, int], None] | None = None) -> None:
        """Load the six JSONL files (and manifest.json) into an empty Index.

        Raises LoadError(file, line, reason) on the first bad row (the Index is then
        half-filled: discard it), RuntimeError if the Index is not empty.
        progress(table, rows_done) is called every 100 000 rows and once at the end of each table.
        """
    def check_invariants(self) -> None:
        """Raise InvariantError unless the index is consistent, in O(n): every person, filing,
        institution and catalogue row is found through its table by its own key; table counts equal
        row counts; every filing's person exists and that person's filing list reaches it once;
        accumulator lists are acyclic, each year once per person, every value in
        0..MAX_ACCUMULATOR_FEN; strings lie inside the arena; policy tiers are well formed."""
    def _debug_corrupt(self, what: str, psn_no: str) -> None:
        """Tests only.  Debug builds: break one invariant of a filed person's rows (what: "certno_table",
        "filing_cycle", "filing_person", "filing_unlinked", "accumulator_negative",
        "accumulator_year_twice").  Release builds: RuntimeError."""
    def save_image(self, path: str, fingerprint: str) -> None:
        """Write the freshly loaded tables (no runtime changes yet) to path, atomically, tagged with fingerprint."""
    def load_image(self, path: str, fingerprint: str) -> None:
        """Fill this empty Index from an image written for fingerprint by this build of the core.

        ValueError (the Index left empty) if the file is not such an image or fails a section's CRC-32."""
    def counts(self) -> dict[str, int]: ...
    def memory_bytes(self) -> dict[str, int]:
        """C memory held (arena, row arrays, hash tables), by part."""
    # regions / institutions
    def region_name(self, admdvs: str) -> str | None: ...
    def get_institution(self, fixmedins_code: str) -> dict | None: ...
    # persons / filings
    def check_person(self, row: dict) -> None:
        """Validate a person row (SPEC §3); changes nothing."""
    def check_person_conflicts(self, row: dict) -> None:
        """check_person, then PERSON_CONFLICT if the row's psn_no is registered with another certno
        ("人员编号已登记了另一个身份证号，请核对人员信息。") or its certno under another psn_no
        ("该身份证号已登记在另一个人员编号下，请核对人员信息。").  The rule the loader and put_person
        share (put_person lets a registered person's certno be corrected)."""
    def put_person(self, row: dict) -> None: ...
    def check_filing(self, row: dict, person: dict | None = None) -> None:
        """person: a person row filed in the same request (not yet in the index)."""
    def put_filing(self, row: dict) -> None: ...
    def get_person(self, psn_no: str) -> dict | None: ...
    def account(self, psn_no: str) -> tuple[int, tuple[str, ...]] | None:
        """(opening balance of the personal account in this data set, family psn_nos in drawing order)."""
    def psn_no_by_certno(self, certno: str) -> str | None: ...
    def get_filing(self, filing_id: str) -> dict | None: ...
    def filings_of(self, psn_no: str) -> list[dict]: ...
    # SPEC §4
    def eligibility(self, psn_no: str, fixmedins_code: str, inpatient: bool, date: int,
                    card_no: str | None = None, card_version: str | None = None,
                    has_open_inpatient: bool = False) -> dict: ...
    # SPEC §5
    def benefit(self, psn_no: str, fixmedins_code: str, filing_kind: str, inpatient: bool, date: int,
                lines: Sequence[tuple[str, int, int]]) -> dict:
        """lines: (code, unit_price_fen, qty_milli) tuples built by the engine; a bad price, quantity or
        code is a YidiError reason, a malformed tuple (or lines not a list/tuple) is InvariantError."""
    # SPEC §5.5
    def accumulators(self, psn_no: str, year: int) -> dict[str, int]: ...
    def add_deltas(self, psn_no: str, year: int, deltas: tuple[int, ...], sign: int) -> None:
        """apply_deltas for a tuple in ACCUMULATOR_KEYS order (what events record), without a dict."""
    def accumulator_rows(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """(psn_no, year, values in ACCUMULATOR_KEYS order) of every person-year with accumulators."""
    def apply_deltas(self, psn_no: str, year: int, deltas: dict[str, int], sign: int) -> None:
        """Add sign (+1 settle, -1 cancel) * deltas to the person's accumulators of the year, all or nothing.
        PERSON_NOT_FOUND / INVALID_DATE for the person and year; anything wrong with deltas or sign,
        or an accumulator leaving 0..MAX_ACCUMULATOR_FEN, is a bug: InvariantError."""


class OutpatientRequestRead:
    """An OutpatientSettleRequest as the core read it: its fields by their proto names (a frozen msgspec Struct)."""
    request_id: str
    psn_no: str
    certno: str
    fixmedins_code: str
    setl_date: int
    card: Card | None
    lines: tuple[FeeLine, ...]
    acct_used_flag: bool
    acct_mulaid_flag: bool
    med_type: int
    dise_codg: str
    mdtrt_cert_type: str
    mdtrt_cert_no: str
    def __init__(self, *, request_id: str, psn_no: str, certno: str, fixmedins_code: str, setl_date: int,
                 card: Card | None, lines: tuple[FeeLine, ...], acct_used_flag: bool, acct_mulaid_flag: bool,
                 med_type: int, dise_codg: str, mdtrt_cert_type: str, mdtrt_cert_no: str) -> None: ...

class SettleItemRead:
    """A SettleItem as the core read it: its oneof member's SettleItem field number and that member's bytes."""
    field: int
    request: bytes
    def __init__(self, field: int, request: bytes) -> None: ...

def read_outpatient_request(raw: bytes) -> OutpatientRequestRead | None:
    """OutpatientSettleRequest bytes -> OutpatientRequestRead, or None when the bytes are anything but canonical
    (then parse them with the generated class). Accepted bytes equal their deterministic serialization."""
class Wire:
    """A request the core read from wire bytes: its command and its idempotency digest; any other attribute is the
    command's."""
    command: Any
    digest: bytes
    def __init__(self, command: Any, digest: bytes) -> None: ...
    def __getattr__(self, name: str) -> Any: ...

def read_outpatient(raw: bytes) -> Wire | OutpatientRequestRead | None:
    """OutpatientSettleRequest bytes -> a Wire (command and digest made in the core) when canonical with no credential
    and no medical type; an OutpatientRequestRead when canonical otherwise; None when not canonical."""
def read_outpatient_item(raw: bytes, method: str, answer_field: int) -> tuple[str, Wire, int] | None:
    """SettleItem bytes -> (method, Wire, answer_field) for an outpatient settlement read_outpatient reads whole."""
def read_batch(raw: bytes, method: str, answer_field: int) -> list[tuple[str, Wire, int] | bytes] | None:
    """SettleBatchRequest bytes -> each item as read_outpatient_item reads it, else its bytes; None if not canonical."""
def read_settle_item(raw: bytes) -> SettleItemRead | None:
    """SettleItem bytes -> SettleItemRead, or None (use the classes)."""
def length_delimited(field: int, payload: bytes) -> bytes:
    """``payload`` as a length-delimited field (tag, length, bytes), written even when empty."""
def read_batch_items(raw: bytes) -> list[bytes] | None:
    """SettleBatchRequest bytes -> each SettleItem's bytes, or None (use the generated class)."""
def count_field(raw: bytes, field: int) -> int:
    """How many times a top-level length-delimited field occurs, values skipped unread; -1 if not well-formed
    (or holding a group)."""


class KeyTable:
    """At most ``capacity`` idempotency keys (core/keytable.pxi), each a 16-byte hash → (request digest of at most
    32 bytes, seq), in C arrays with no Python object per key; when full, a new key pushes out the oldest.  Storing
    a key already held changes its digest and seq and keeps its place in the order (as a dict does).  ValueError:
    a capacity outside 1..LIMITS["MAX_RECENT_KEYS"], a hash of another length, a longer digest."""
    def __init__(self, capacity: int) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key_hash: bytes) -> bool: ...
    @property
    def capacity(self) -> int: ...
    def memory_bytes(self) -> int:
        """C memory allocated for the entries and the slots (the entries' pages are resident once used)."""
    def get(self, key_hash: bytes) -> tuple[bytes, int] | None:
        """(digest, seq) stored under this hash, or None."""
    def put(self, key_hash: bytes, digest: bytes, seq: int) -> None:
        """Store (digest, seq) under this hash; a new key pushes out the oldest when the table is full."""


# core/settle.pxi: a run of outpatient settlements decided, applied and recorded in one call.
def plain_outpatient(command: object) -> bool: ...
def on_site_sample(setl_id: str) -> bool:
    """core.funds.on_site_check as the settle loop takes it (its keyed BLAKE2b by ledger.pxi's)."""
def settle_outpatients(engine: Any, caller: str, items: list[tuple[Any, bytes]], first_seq: int, authorize: bool,
                       admit: Callable[[Any], None], make_record: Callable[..., Any]) -> list[Any]: ...


# core/ledger.pxi: a commit group of ledger records packed, hashed, chained and tagged in one call.
def blake2b_digest(data: bytes, digest_size: int = 64, key: bytes = b"") -> bytes:
    """``hashlib.blake2b(data, digest_size=, key=).digest()`` by the core's own BLAKE2b."""


class GroupRules:
    """What a commit group derives besides its records: rows.derive for the archive changes whose rows the core
    does not make itself, the settlement change whose recon row it does, the reversal's and reference load's kinds."""
    def __init__(self, derive: Callable[[tuple, int], Any], put_settlement: type, reversed_kind: str,
                 reference_kind: str) -> None: ...


class GroupPacker:
    """One ledger's records packed a commit group at a time (gateway/store/packed.py's layout)."""
    def __init__(self, key: bytes, tag_fallback: Callable[[str, tuple], bytes]) -> None: ...
    def pack(self, records: Any, last: int, previous: bytes, row_records: int, rules: GroupRules
             ) -> tuple[list[tuple[int, int, bytes]], bytes, list[tuple], dict[str, list[tuple]]]:
        """(rows, last chain value, requests rows, derived rows by table) of a commit group."""
    def tag(self, table: str, values: tuple) -> bytes:
        """``LedgerKey.tag(table, values)``."""
def copy_binary(rows: list[tuple], types: tuple[str, ...]) -> bytes:
    """``rows`` as one PostgreSQL COPY BINARY stream (types "text", "int8", "bytea"), signature and trailer included."""
