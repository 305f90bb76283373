# cython: language_level=3
"""Yidi core: the in-memory index of filed persons and reference data,
eligibility (SPEC §4) and benefit calculation (SPEC §5).

One extension module that ``include``s its parts (asyncpg style):
limits.pxi (every bound), policy.pxi (the policy row: struct and loading),
index.pxi (structs, arena, hash tables),
validate.pxi (the one check of each field, also exported to Python),
wire.pxi (the protobuf bytes it reads and writes itself, with the contract's
numbers from the generated _wire_numbers.pxi), load.pxi (row validation and
JSONL loading), eligibility.pxi, benefit.pxi, invariants.pxi (what must hold
between the tables; debug builds check it after every change), keytable.pxi
(the gateway's recent idempotency keys, no Python object per key), settle.pxi (a run of outpatient
settlements decided, applied and recorded in one call), gcclock.pxi (the collector's pause clock, read
where no other thread can run in between), ledger.pxi (a commit group of ledger records packed, hashed, chained
and tagged in one call, on the ledger's writer thread).
Only the event loop calls it (a GroupPacker, called by the ledger's writer, changes nothing once made), so
nothing here takes a lock.
"""

import bisect

cimport cython

import msgspec

from core.errors import InvariantError, LoadError, YidiError
from core import _wire_numbers
from core.money import ACCUMULATOR_KEYS, BREAKDOWN_KEYS

include "limits.pxi"
include "_money.pxi"     # generated from core/money.py: BD_*, ACC_*, LAYER_* and their counts
include "policy.pxi"
include "index.pxi"
include "validate.pxi"
include "_wire_numbers.pxi"   # generated from the protos' descriptors: Message_field numbers, enum values
include "wire.pxi"

# A debug build (YIDI_DEBUG=1): the core checks its invariants after every
# change; Python code can run its own debug-only checks under `if DEBUG:`.
DEBUG = bool(YIDI_DEBUG)


# ---------------------------------------------------------------- domain facts for Python callers
# The data generator, tests and tools ask the core instead of restating these;
# each is answered by the same C function the rules use.
LONG_TERM_KINDS = tuple([k for i, k in enumerate(FILING_KINDS) if kind_is_long_term(i)])
TEMPORARY_KINDS = tuple([k for i, k in enumerate(FILING_KINDS) if not kind_is_long_term(i)])


def province_code(admdvs):
    """The province of a region: "210102" -> "210000"."""
    return f"{province_of(_admdvs_of(admdvs, 'admdvs'))}"


def pooling_code(admdvs):
    """The pooling region (prefecture) of a region: "210102" -> "210100"."""
    return f"{pooling_of(_admdvs_of(admdvs, 'admdvs'))}"


cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)
    int PyObject_GC_IsTracked(object op)


def untracked(tuple row):
    """``row`` (ints and strs, or tuples of them that are untracked already) no longer tracked by the collector.

    A collection stops tracking such a tuple by itself, but only when it walks it: until then a long-lived dict
    the tuple was stored in is tracked again and every young collection walks the whole dict.  A tuple of atoms
    can be part of no cycle, so the collector never needs to see it."""
    for item in row:
        if type(item) is tuple:
            if PyObject_GC_IsTracked(item):
                raise TypeError("untracked(): an inner tuple is still tracked (make it untracked first)")
        elif type(item) is not int and type(item) is not str:
            raise TypeError(f"untracked(): {type(item).__name__} is not an int, a str or a tuple of them")
    PyObject_GC_UnTrack(<void*>row)
    return row


def certno_check_char(first17):
    """The GB 11643 mod-11 check character of the first 17 digits of a certno."""
    cdef Py_ssize_t n
    cdef const char* p
    cdef int s = 0, i
    if type(first17) is not str or len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise YidiError("INVALID_CERTNO", what="身份证号码", problem=f"的前 17 位须为 17 位数字，收到 {first17!r}",
                        field="certno")
    p = PyUnicode_AsUTF8AndSize(first17, &n)
    for i in range(17):
        s += (p[i] - 48) * _CERT_W[i]
    return chr(_CERT_CHECK[s % 11])


def certno_valid(certno):
    """True for a certno the core accepts: 17 digits and their GB 11643 check character."""
    cdef Py_ssize_t n
    cdef const char* p
    if type(certno) is not str:
        return False
    p = PyUnicode_AsUTF8AndSize(certno, &n)
    return certno_ok(p, n)


cdef Acc _ACC_PROBE
cdef Policy _POLICY_PROBE

# What Python needs to know of the C layout, written from the C side: the
# named sizes, the ACC_* value of each accumulator name, and the array lengths
# of the structs counted by sizeof, so that tests/core/test_core_layout.py notices
# if a struct, an enum and ACCUMULATOR_KEYS drift apart.
LAYOUT = {
    "N_ACCUMULATORS": N_ACCUMULATORS,
    "MAX_TIERS": MAX_TIERS,
    "N_LEVELS": N_LEVELS,
    "N_FILING_KINDS": N_FILING_KINDS,
    "N_BREAKDOWN": N_BREAKDOWN,
    "index": MONEY_INDEX,
    "array_len": {
        "Acc.value": sizeof(_ACC_PROBE.value) // sizeof(int64_t),
        "Policy.inpatient_deductible_fen": sizeof(_POLICY_PROBE.inpatient_deductible_fen) // sizeof(int64_t),
        "Policy.inpatient_ratio_bp": sizeof(_POLICY_PROBE.inpatient_ratio_bp) // sizeof(int64_t),
        "Policy.outpatient_ratio_bp": sizeof(_POLICY_PROBE.outpatient_ratio_bp) // sizeof(int64_t),
        "Policy.crit_up_to_fen": sizeof(_POLICY_PROBE.crit_up_to_fen) // sizeof(int64_t),
        "Policy.crit_ratio_bp": sizeof(_POLICY_PROBE.crit_ratio_bp) // sizeof(int64_t),
        "Policy.reduction_bp": sizeof(_POLICY_PROBE.reduction_bp) // sizeof(int64_t),
    },
    "enum_len": {"FILING_KINDS": KIND_OTHER_TEMPORARY + 1},
}


cdef class Index:
    """All reference data and filed persons, in packed C structs.

    Build one, ``load_dir`` it once, then serve; persons and filings can be
    added at runtime (``put_person`` / ``put_filing``).  A failed
    ``load_dir`` leaves the Index half-filled: discard it.
    """
    cdef Store st
    cdef dict _regions            # admdvs (int) -> name
    cdef dict _policies           # (pooling admdvs, insutype index) -> sorted [(effective_from, policy row)]
    cdef list _card_versions      # interned card_version strings
    cdef dict _card_version_idx
    cdef frozenset _accepted
    cdef dict _meta
    cdef dict _chronic            # policy row -> {disease code | "default": (deductible, ratio 1..3, bonus, cap)}
    cdef dict _voucher_keys       # province (int) -> its electronic-voucher key (bytes; SPEC §10.5, never logged)
    cdef list _inst_order         # institution rows by code (SPEC §10.8 look-ups), built at the first one
    cdef list _inst_sorted_codes
    cdef bint _loaded
    cdef int32_t* policy_first     # the policy directory (eligibility.pxi _policy_idx)
    cdef int32_t* policy_count
    cdef int32_t* policy_order

    def __cinit__(self):
        memset(&self.st, 0, sizeof(Store))

    def __init__(self, *, accepted_card_versions=("2.0", "3.0")):
        if isinstance(accepted_card_versions, str):
            raise TypeError("accepted_card_versions must be an iterable of strings, not a string")
        self._accepted = frozenset(accepted_card_versions)
        for v in self._accepted:
            if type(v) is not str:
                raise TypeError("accepted_card_versions must contain strings")
        self._regions = {}
        self._policies = {}
        self._card_versions = []
        self._card_version_idx = {}
        self._meta = {}
        self._chronic = {}
        self._voucher_keys = {}
        self._loaded = False

    def __dealloc__(self):
        store_free(&self.st)
        free(self.policy_first)
        free(self.policy_count)
        free(self.policy_order)

    @property
    def meta(self):
        """manifest.json of the loaded directory ({} if absent); a copy, read-only."""
        return dict(self._meta)

    def load_dir(self, str path, progress=None):
        _load_dir(self, path, progress)
        _build_policy_directory(self)

    def save_image(self, str path, str fingerprint):
        """Write the freshly loaded tables to ``path`` (atomically), tagged with the data set's fingerprint."""
        _save_image(self, path, fingerprint)

    def load_image(self, str path, str fingerprint):
        """Fill this empty Index from an image of the data set ``fingerprint``; ValueError if it is not one."""
        _load_image(self, path, fingerprint)
        _build_policy_directory(self)
        if YIDI_DEBUG:
            _check_store(&self.st)

    def use_huge_pages(self, double budget_s):
        """Move the loaded tables into 2 MiB pages (index.pxi, "huge pages"), spending at most about ``budget_s``
        on it now; the bytes moved now (0 where the kernel has no transparent huge pages for us)."""
        cdef uint64_t moved
        cdef uint64_t deadline_ns = yidi_now_ns() + <uint64_t>(max(budget_s, 0.0) * 1e9)
        with nogil:
            moved = store_huge_pages(&self.st, deadline_ns)
        return moved

    def check_invariants(self):
        """Raise InvariantError unless every row is reachable and consistent (O(n); see invariants.pxi)."""
        _check_store(&self.st)

    def _debug_corrupt(self, str what, psn_no):
        """Tests only, debug builds only: break one invariant of the person's rows."""
        _debug_corrupt(self, what, psn_no)

    def counts(self):
        return {
            "regions": len(self._regions),
            "institutions": self.st.n_insts,
            "catalog_items": self.st.n_items,
            "policies": self.st.n_policies,
            "persons": self.st.n_persons,
            "filings": self.st.n_filings,
        }

    def memory_bytes(self):
        """C memory held by the index (arena, row arrays, hash tables), by part."""
        cdef Store* st = &self.st
        return {
            "arena": st.arena_cap,
            "persons": st.cap_persons * sizeof(Person),
            "filings": st.cap_filings * sizeof(Filing),
            "institutions": st.cap_insts * sizeof(Institution),
            "catalog": st.cap_items * sizeof(CatalogItem),
            "policies": st.cap_policies * sizeof(Policy),
            "accumulators": st.cap_accs * sizeof(Acc),
            "tables": (_tbl_bytes(&st.t_psn) + _tbl_bytes(&st.t_cert) + _tbl_bytes(&st.t_filing)
                       + _tbl_bytes(&st.t_inst) + _tbl_bytes(&st.t_item)),
        }

    # ------------------------------------------------------------ regions / institutions
    def region_name(self, admdvs):
        if type(admdvs) is not str or len(admdvs) != 6 or not admdvs.isascii() or not admdvs.isdigit():
            return None
        return self._regions.get(int(admdvs))

    def get_institution(self, fixmedins_code):
        cdef int32_t ii = _inst_idx(self, fixmedins_code)
        cdef Institution* it
        if ii < 0:
            return None
        it = &self.st.insts[ii]
        return {
            "fixmedins_code": _inst_code(&self.st, ii),
            "name": _inst_name(&self.st, ii),
            "admdvs": f"{it.admdvs}",
            "kind": INSTITUTION_KINDS[it.kind],
            "level": it.level,
            "inpatient": it.inpatient != 0,
            "outpatient": it.outpatient != 0,
            "chronic_diseases": _arena_codes(&self.st, it.chronic_off, it.chronic_len),
        }

    def institutions(self, admdvs="", kind="", bint inpatient=False, bint outpatient=False, dise_codg="",
                     after="", int limit=100):
        """SPEC §10.8: up to ``limit`` institutions with a code after ``after``, by code, filtered; and whether
        there are more."""
        cdef Store* st = &self.st
        cdef Institution* it
        cdef uint32_t region = 0
        cdef int kind_i = -1
        cdef int64_t i
        if admdvs:
            region = _admdvs_of(admdvs, "admdvs")
        if kind:
            if kind not in INSTITUTION_KINDS:
                raise YidiError("INVALID_ENUM", what=f"机构类型 {kind[:20]!r}",
                                problem=f"无效，应为：{'、'.join(INSTITUTION_KINDS)}")
            kind_i = INSTITUTION_KINDS.index(kind)
        if self._inst_order is None:   # by code, built once per index
            codes = [_inst_code(st, j) for j in range(st.n_insts)]
            self._inst_order = sorted(range(st.n_insts), key=codes.__getitem__)
            self._inst_sorted_codes = [codes[j] for j in self._inst_order]
        out = []
        start = bisect.bisect_right(self._inst_sorted_codes, after) if after else 0
        for i in self._inst_order[start:]:
            it = &st.insts[i]
            if region and not dest_covers(region, it.admdvs):
                continue
            if (kind_i >= 0 and it.kind != kind_i) or (inpatient and not it.inpatient) or (outpatient and not it.outpatient):
                continue
            if dise_codg and dise_codg not in _arena_codes(st, it.chronic_off, it.chronic_len):
                continue
            if len(out) == limit:
                return out, True
            out.append(self.get_institution(_inst_code(st, i)))
        return out, False

    # ------------------------------------------------------------ persons / filings
    def check_person(self, dict row):
        cdef PersonIn o
        _check_person(self, row, &o)

    def check_person_conflicts(self, dict row):
        """Validate the row (as check_person), then PERSON_CONFLICT if its psn_no is registered
        with another certno or its certno under another psn_no."""
        cdef PersonIn o
        cdef int32_t by_psn_no, by_certno
        _check_person(self, row, &o)
        _check_person_conflicts(self, &o, False, &by_psn_no, &by_certno)

    def put_person(self, dict row):
        cdef int32_t pi = _put_person(self, row, True)
        if YIDI_DEBUG:
            _check_person_rows(&self.st, pi, NULL, NULL)

    def check_filing(self, dict row, person=None):
        """Validate a filing row.  `person`: the person row being filed together with it
        (not yet in the index), which then satisfies the person-exists check."""
        cdef FilingIn o
        _check_filing(self, row, &o, person)

    def put_filing(self, dict row):
        cdef int32_t fi = _put_filing(self, row, True)
        if YIDI_DEBUG:
            _check_filing_row(&self.st, fi)
            _check_person_rows(&self.st, self.st.filings[fi].person_idx, NULL, NULL)

    def get_person(self, psn_no):
        cdef int32_t pi = _person_idx(self, psn_no)
        cdef Person* p
        cdef Store* st = &self.st
        if pi < 0:
            return None
        p = &st.persons[pi]
        return {
            "psn_no": arena_str(st, p.psn_no_off, p.psn_no_len),
            "certno": arena_str(st, p.certno_off, p.certno_len),
            "name": arena_str(st, p.name_off, p.name_len),
            "insuplc_admdvs": f"{p.insuplc_admdvs}",
            "insutype": INSUTYPES[p.insutype],
            "person_type": PERSON_TYPES[p.person_type],
            "status": PERSON_STATUSES[p.status],
            "assistance": p.assistance != 0,
            "card_no": arena_str(st, p.card_no_off, p.card_no_len),
            "card_version": self._card_versions[p.card_version_idx],
            "acct_balance_fen": p.acct_balance_fen,
            "mulaid_psn_nos": _arena_codes(st, p.mulaid_off, p.mulaid_len),
            "chronic_diseases": _arena_codes(st, p.chronic_off, p.chronic_len),
        }

    def account(self, psn_no):
        """(opening balance of the personal account in this data set, family psn_nos in drawing order), or None."""
        cdef int32_t pi = _person_idx(self, psn_no)
        cdef Person* p
        if pi < 0:
            return None
        p = &self.st.persons[pi]
        return p.acct_balance_fen, tuple(_arena_codes(&self.st, p.mulaid_off, p.mulaid_len))

    def psn_no_by_certno(self, certno):
        cdef Py_ssize_t n
        cdef const char* c = _str_of(certno, "certno", &n)
        cdef int32_t pi
        if not id_ok(c, n):
            return None
        pi = tbl_find(&self.st, &self.st.t_cert, T_CERT, fnv1a(c, n, 0), c, n, 0)
        if pi < 0:
            return None
        return arena_str(&self.st, self.st.persons[pi].psn_no_off, self.st.persons[pi].psn_no_len)

    def get_filing(self, filing_id):
        cdef Py_ssize_t n
        cdef const char* c = _str_of(filing_id, "filing_id", &n)
        cdef int32_t fi
        if not id_ok(c, n):
            return None
        fi = tbl_find(&self.st, &self.st.t_filing, T_FILING, fnv1a(c, n, 0), c, n, 0)
        if fi < 0:
            return None
        return _filing_row(&self.st, fi)

    def filings_of(self, psn_no):
        cdef int32_t pi = _person_idx(self, psn_no)
        if pi < 0:
            return []
        return [_filing_row(&self.st, fi) for fi in _filings_sorted(&self.st, &self.st.persons[pi])]

    # ------------------------------------------------------------ eligibility / benefit
    def eligibility(self, psn_no, fixmedins_code, bint inpatient, date, card_no=None, card_version=None,
                    bint has_open_inpatient=False):
        """SPEC §4 checks 1..9 in order: the visit facts as a dict, or the first refusal."""
        return _eligibility(self, psn_no, fixmedins_code, inpatient, date, card_no, card_version,
                            has_open_inpatient).as_dict()

    def admission(self, psn_no, fixmedins_code, bint inpatient, date, card_no=None, card_version=None,
                  bint has_open_inpatient=False, bint emergency=False):
        """The same checks with a compact Admission answer (what the settle path uses); ``emergency``: SPEC §10.6."""
        return _eligibility(self, psn_no, fixmedins_code, inpatient, date, card_no, card_version,
                            has_open_inpatient, emergency)

    def bill(self, psn_no, fixmedins_code, filing_kind, bint inpatient, date, lines, chronic=None, stay=None):
        """benefit's computation as a compact Bill (C arrays; the answer written as protobuf from it).
        ``chronic``: (dise_codg, deductible used, fund paid this year for that disease) for a chronic-disease
        visit (SPEC §10.2), which settles under the policy's chronic entry with those accumulators.
        ``stay``: (the stay's deductible D, deductible its earlier settlements applied) for a stay already settled
        in part (SPEC §10.3); then the admission does not count again."""
        return _bill(self, psn_no, fixmedins_code, filing_kind, inpatient, date, lines, chronic, stay)

    def benefit(self, psn_no, fixmedins_code, filing_kind, bint inpatient, date, lines, chronic=None):
        return _benefit(self, psn_no, fixmedins_code, filing_kind, inpatient, date, lines, chronic)

    def verify_voucher(self, token, int64_t now_utc_minute):
        """SPEC §10.5: the psn_no of an electronic-voucher token ``psn_no.yyyymmddhhmm.mac`` that is unexpired at
        ``now_utc_minute`` (yyyymmddhhmm, UTC) and carries the right mac (HMAC-SHA256 with the insured province's
        key over ``psn_no.expiry``, first 16 bytes, hex), compared in constant time; else CREDENTIAL_INVALID.
        The message never repeats the token."""
        return _verify_voucher(self, token, now_utc_minute)

    def voucher_provinces(self):
        """The provinces that have a voucher key (never the keys)."""
        return sorted(f"{p}" for p in self._voucher_keys)

    def explain(self, psn_no, fixmedins_code, filing_kind, bint inpatient, date, lines, chronic, stay,
                tuple acc_before, tuple accounts=(0, 0)):
        """SPEC §10.7: a settlement computed again from its recorded inputs (and the account payments it recorded),
        with every term it used."""
        return _explain(self, psn_no, fixmedins_code, filing_kind, inpatient, date, lines, chronic, stay, acc_before,
                        accounts)

    def chronic_refusal(self, psn_no, fixmedins_code, dise_codg):
        """SPEC §10.2 checks 10 and 11: None, or the refusal."""
        person = self.get_person(psn_no)
        inst = self.get_institution(fixmedins_code)
        if person is None or dise_codg not in person["chronic_diseases"]:
            return YidiError("DISEASE_NOT_RECOGNISED", dise_codg=dise_codg,
                             recognised="、".join(person["chronic_diseases"]) if person else "无")
        if inst is None or dise_codg not in inst["chronic_diseases"]:
            return YidiError("INSTITUTION_NOT_ENABLED_FOR_DISEASE", dise_codg=dise_codg,
                             institution=inst["name"] if inst else fixmedins_code)
        return None

    # ------------------------------------------------------------ accumulators
    ACCUMULATOR_KEYS = ACCUMULATOR_KEYS

    def accumulators(self, psn_no, year):
        return _accumulators(self, psn_no, year)

    def apply_deltas(self, psn_no, year, deltas, sign):
        """add_deltas with the deltas as a dict by accumulator name (absent: 0)."""
        self.add_deltas(psn_no, _year_of(year), _deltas_of(deltas, sign), sign)

    def add_deltas(self, psn_no, int year, tuple deltas, int sign):
        """sign (+1 apply, -1 cancel) * deltas, a tuple in ACCUMULATOR_KEYS order (what events record)."""
        cdef int32_t pi = _add_deltas(self, psn_no, year, deltas, sign)
        if YIDI_DEBUG:
            _check_person_rows(&self.st, pi, NULL, NULL)

    def accumulator_rows(self):
        """(psn_no, year, values in ACCUMULATOR_KEYS order) of every person-year with accumulators."""
        cdef Store* st = &self.st
        cdef int64_t i
        cdef int32_t ai
        cdef int k, n = len(ACCUMULATOR_KEYS)
        out = []
        for i in range(st.n_persons):
            ai = st.persons[i].first_acc_idx
            while ai >= 0:
                out.append((arena_str(st, st.persons[i].psn_no_off, st.persons[i].psn_no_len), st.accs[ai].year,
                            tuple([st.accs[ai].value[k] for k in range(n)])))
                ai = st.accs[ai].next_acc_idx
        return out


cdef inline uint64_t _tbl_bytes(Table* t) noexcept nogil:
    return (t.mask + 1) * sizeof(Slot) if t.slots != NULL else 0


cdef dict _filing_row(Store* st, int32_t fi):
    cdef Filing* f = &st.filings[fi]
    codes = (st.arena + f.fixmedins_codes_off)[:f.fixmedins_codes_len].decode("ascii").split(" ") if f.fixmedins_codes_len else []
    return {
        "filing_id": arena_str(st, f.filing_id_off, f.filing_id_len),
        "psn_no": arena_str(st, st.persons[f.person_idx].psn_no_off, st.persons[f.person_idx].psn_no_len),
        "kind": FILING_KINDS[f.kind],
        "dest_admdvs": f"{f.dest_admdvs}",
        "fixmedins_codes": codes,
        "valid_from": f.valid_from,
        "valid_to": f.valid_to,
        "status": FILING_STATUSES[f.status],
    }


include "load.pxi"
include "eligibility.pxi"
include "benefit.pxi"
include "invariants.pxi"
include "image.pxi"
include "voucher.pxi"
include "keytable.pxi"
include "ledger.pxi"
include "settle.pxi"
include "gcclock.pxi"
