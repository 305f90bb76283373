# Packed C structs, a bytes arena and open-addressing hash tables.
#
# Every identifier is stored once in the arena (offset + length); the tables
# map a 64-bit hash of the identifier to a row index, and a lookup always
# compares the exact bytes against the arena, so a hash collision can never
# mis-identify a row.  Tables use linear probing with backward-shift deletion
# and double (and rehash) when they pass 70% load.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, malloc, realloc, free
from libc.string cimport memcmp, memcpy, memset

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL


# Field names carry the SPEC's / protos' names and units (TIGER_STYLE: units
# last): `_fen` money, `_bp` basis points, `_admdvs` a 6-digit region code
# held as an integer, `_off`/`_len` a string in the arena, `_idx` a row index
# (-1 = none).  Enum fields name the enum they hold.  Every array size is a
# named constant from limits.pxi.

ctypedef struct Person:
    int64_t acct_balance_fen      # opening balance of the personal account in this data set (SPEC §10.1)
    uint32_t psn_no_off
    uint32_t certno_off
    uint32_t name_off
    uint32_t card_no_off
    uint32_t insuplc_admdvs       # the insured region
    int32_t first_filing_idx      # head of the person's filing list
    int32_t first_acc_idx         # head of the person's per-year accumulator list
    uint32_t mulaid_off           # mulaid_psn_nos (family accounts that may pay, in drawing order), joined by spaces
    uint32_t chronic_off          # chronic_diseases recognised by the insured place (SPEC §10.2), joined by spaces
    uint16_t mulaid_len
    uint16_t chronic_len
    uint16_t name_len
    uint8_t psn_no_len
    uint8_t certno_len
    uint8_t card_no_len
    uint8_t card_version_idx      # index into Index._card_versions
    uint8_t insutype              # INSUTYPE_*
    uint8_t person_type           # PTYPE_*
    uint8_t status                # PSTATUS_*
    uint8_t assistance            # 0/1: eligible for medical assistance

ctypedef struct Filing:
    uint32_t filing_id_off
    uint32_t fixmedins_codes_off  # the designated institution codes joined by single spaces
    int32_t person_idx
    int32_t next_filing_idx       # next filing of the same person
    uint32_t dest_admdvs          # a province or city code
    uint32_t valid_from           # yyyymmdd
    uint32_t valid_to             # yyyymmdd, 0 = open-ended
    uint16_t fixmedins_codes_len
    uint8_t filing_id_len
    uint8_t kind                  # KIND_*
    uint8_t status                # FSTATUS_*
    uint8_t n_fixmedins_codes

ctypedef struct Institution:
    uint32_t fixmedins_code_off
    uint32_t name_off
    uint32_t admdvs               # the institution's region (mdtrtarea_admdvs of its visits)
    uint32_t chronic_off          # chronic_diseases it is open for (SPEC §10.2), joined by spaces
    uint16_t chronic_len
    uint16_t name_len
    uint8_t fixmedins_code_len
    uint8_t kind                  # IKIND_*
    uint8_t level                 # 1..N_LEVELS-1
    uint8_t inpatient             # 0/1: open for cross-province inpatient settlement
    uint8_t outpatient            # 0/1: open for cross-province outpatient settlement

ctypedef struct CatalogItem:
    int64_t price_cap_fen         # 最高限价 per unit, 0 = none
    uint32_t province_admdvs      # the treatment province whose catalogue this is
    uint32_t code_off             # the catalogue item code
    uint32_t name_off
    uint16_t name_len
    uint16_t selfpay_bp           # 先行自付 share of a class-B item
    uint8_t code_len
    uint8_t category              # index into CATEGORIES
    uint8_t item_class            # CLASS_*

ctypedef struct Acc:
    int64_t value[N_ACCUMULATORS]  # by ACC_* (core/money.py): one person's accumulators for one calendar year
    int32_t next_acc_idx           # the same person's next year
    int32_t year

# The narrow fields above hold whatever the limits let through; checked once,
# at import, so that no store needs a runtime length check.
if not (MAX_ID_LEN <= 0xFF and MAX_NAME_BYTES <= 0xFFFF and MAX_CARD_VERSIONS <= 0x100
        and MAX_FILING_CODES <= 0xFF and MAX_FILING_CODES * (MAX_ID_LEN + 1) <= 0xFFFF and MAX_TIERS <= 0xFF
        and MAX_MULAID * (MAX_ID_LEN + 1) <= 0xFFFF and MAX_CHRONIC * (MAX_ID_LEN + 1) <= 0xFFFF):
    raise InvariantError("limits.pxi allows values wider than the struct fields in index.pxi")

ctypedef struct Slot:
    uint32_t tag              # high 32 bits of the hash
    int32_t idx               # row index, -1 = empty

# The persons' table carries two of the row's fields beside each slot, in the same 16 bytes: a look-up reads
# the slot, then the row, the key bytes and the first filing all at once (two levels of dependent reads
# instead of three: the key and the filing are otherwise named by the row).  Copies of the row's fields,
# kept in step wherever a slot is placed or a person's first filing changes (check_invariants checks them);
# only eligibility's early reads use them, every answer still comes from the row.
ctypedef struct PersonSlotExtra:
    uint32_t psn_no_off       # = the row's psn_no_off
    int32_t first_filing_idx  # = the row's first_filing_idx

ctypedef struct Table:
    Slot* slots               # (mask + 1) << shift Slots
    uint64_t mask
    int64_t count
    int shift                 # a slot is 1 << shift Slots wide: 1 in the persons' table (Slot, PersonSlotExtra)

ctypedef struct Store:
    char* arena
    uint64_t arena_len
    uint64_t arena_cap
    Person* persons
    int64_t n_persons
    int64_t cap_persons
    Filing* filings
    int64_t n_filings
    int64_t cap_filings
    Institution* insts
    int64_t n_insts
    int64_t cap_insts
    CatalogItem* items
    int64_t n_items
    int64_t cap_items
    Policy* policies
    int64_t n_policies
    int64_t cap_policies
    Acc* accs
    int64_t n_accs
    int64_t cap_accs
    Table t_psn
    Table t_cert
    Table t_filing
    Table t_inst
    Table t_item


# enums (C side) and their wire strings (Python side, same order)
cdef enum:
    INSUTYPE_310 = 0
    INSUTYPE_390 = 1
    PTYPE_IN_SERVICE = 0
    PTYPE_RETIRED = 1
    PSTATUS_ACTIVE = 0
    PSTATUS_SUSPENDED = 1
    KIND_RETIRED_RELOCATION = 0
    KIND_LONG_TERM_RESIDENCE = 1
    KIND_STATIONED_WORK = 2
    KIND_REFERRAL = 3
    KIND_EMERGENCY = 4
    KIND_OTHER_TEMPORARY = 5
    FSTATUS_ACTIVE = 0
    FSTATUS_REVOKED = 1
    IKIND_HOSPITAL = 0
    IKIND_CLINIC = 1
    IKIND_PHARMACY = 2
    CLASS_A = 0
    CLASS_B = 1
    CLASS_C = 2
    T_PSN = 0
    T_CERT = 1
    T_FILING = 2
    T_INST = 3
    T_ITEM = 4

INSUTYPES = ("310", "390")
PERSON_TYPES = ("in_service", "retired")
PERSON_STATUSES = ("active", "suspended")
FILING_KINDS = ("retired_relocation", "long_term_residence", "stationed_work",
                "referral", "emergency", "other_temporary")
FILING_STATUSES = ("active", "revoked")
INSTITUTION_KINDS = ("hospital", "clinic", "pharmacy")
CATEGORIES = ("drug", "treatment", "material", "service")
CLASSES = ("A", "B", "C")

KIND_NAMES_ZH = ("异地安置退休", "异地长期居住", "常驻异地工作",
                 "异地转诊", "异地急诊抢救", "其他临时外出就医")

cdef inline bint kind_is_long_term(int kind) noexcept nogil:
    return kind <= KIND_STATIONED_WORK


# Start reading memory that will be needed soon: lookups of several keys read their rows in passes, so that
# their cache misses overlap instead of waiting one after another.  A plain load whose value nothing waits
# for, not a prefetch instruction: on this project's machines prefetches of reads scattered over a large
# heap did nothing measurable (likely dropped when the page is not in the TLB), and a bill's fee lines read
# after prefetches cost twice what they cost after loads.  So the address must be one that may be read.
cdef extern from *:
    """
    #define YIDI_TOUCH(p) ((void)*(const volatile char*)(p))
    """
    void YIDI_TOUCH(const void* p) noexcept nogil


# ---------------------------------------------------------------- hashing
cdef inline uint64_t fnv1a(const char* p, Py_ssize_t n, uint64_t seed) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL ^ seed
    cdef Py_ssize_t i
    for i in range(n):
        h ^= <uint8_t>p[i]
        h *= 1099511628211ULL
    # finalizer (murmur3 fmix64): spread the bits so that masking the low bits is fair
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h

cdef inline uint64_t item_hash(const char* p, Py_ssize_t n, uint32_t province) noexcept nogil:
    return fnv1a(p, n, <uint64_t>province * 0x9E3779B97F4A7C15ULL)


# ---------------------------------------------------------------- arena
cdef uint32_t arena_put(Store* st, const char* p, Py_ssize_t n) except? 0xFFFFFFFF:
    cdef uint64_t need = st.arena_len + <uint64_t>n
    cdef uint64_t cap
    cdef char* nb
    cdef uint32_t off
    if need > MAX_ARENA_BYTES:
        raise MemoryError("core string arena full (4 GiB)")
    if need > st.arena_cap:
        cap = st.arena_cap * 2 if st.arena_cap else 65536
        while cap < need:
            cap *= 2
        if cap > MAX_ARENA_BYTES:
            cap = MAX_ARENA_BYTES
        nb = <char*>realloc(st.arena, cap)
        if nb == NULL:
            raise MemoryError()
        st.arena = nb
        st.arena_cap = cap
    off = <uint32_t>st.arena_len
    if n:
        memcpy(st.arena + off, p, n)
    st.arena_len = need
    return off

cdef inline str arena_str(Store* st, uint32_t off, Py_ssize_t n):
    return (st.arena + off)[:n].decode("utf-8")


# ---------------------------------------------------------------- row arrays
cdef void* grow_array(void* arr, int64_t* cap, int64_t need, size_t item) except NULL:
    """Return arr grown (realloc, doubling) so that it holds at least `need` items."""
    cdef int64_t c = cap[0]
    cdef void* na
    if need > MAX_ROWS:
        raise MemoryError("core table full")
    if need <= c and arr != NULL:
        return arr
    if c < 16:
        c = 16
    while c < need:
        c *= 2
    na = realloc(arr, <size_t>c * item)
    if na == NULL:
        raise MemoryError()
    cap[0] = c
    return na


# ---------------------------------------------------------------- tables
cdef inline bint key_eq(Store* st, int kind, int32_t idx, const char* p, Py_ssize_t n,
                        uint32_t extra) noexcept nogil:
    cdef uint32_t off
    cdef Py_ssize_t ln
    if kind == T_PSN:
        off = st.persons[idx].psn_no_off; ln = st.persons[idx].psn_no_len
    elif kind == T_CERT:
        off = st.persons[idx].certno_off; ln = st.persons[idx].certno_len
    elif kind == T_FILING:
        off = st.filings[idx].filing_id_off; ln = st.filings[idx].filing_id_len
    elif kind == T_INST:
        off = st.insts[idx].fixmedins_code_off; ln = st.insts[idx].fixmedins_code_len
    else:
        if st.items[idx].province_admdvs != extra:
            return False
        off = st.items[idx].code_off; ln = st.items[idx].code_len
    return ln == n and memcmp(st.arena + off, p, n) == 0

cdef inline uint64_t key_hash(Store* st, int kind, int32_t idx) noexcept nogil:
    if kind == T_PSN:
        return fnv1a(st.arena + st.persons[idx].psn_no_off, st.persons[idx].psn_no_len, 0)
    elif kind == T_CERT:
        return fnv1a(st.arena + st.persons[idx].certno_off, st.persons[idx].certno_len, 0)
    elif kind == T_FILING:
        return fnv1a(st.arena + st.filings[idx].filing_id_off, st.filings[idx].filing_id_len, 0)
    elif kind == T_INST:
        return fnv1a(st.arena + st.insts[idx].fixmedins_code_off, st.insts[idx].fixmedins_code_len, 0)
    return item_hash(st.arena + st.items[idx].code_off, st.items[idx].code_len, st.items[idx].province_admdvs)

cdef inline int tbl_shift(int kind) noexcept nogil:
    """A table's slot width, as a shift of sizeof(Slot): the persons' table has its PersonSlotExtra beside."""
    return 1 if kind == T_PSN else 0

cdef inline Slot* slot_at(Table* t, uint64_t pos) noexcept nogil:
    return t.slots + (pos << t.shift)

cdef inline PersonSlotExtra* person_extra(Table* t, uint64_t pos) noexcept nogil:
    """The persons' table only: the row's fields beside slot pos."""
    return <PersonSlotExtra*>(t.slots + (pos << 1) + 1)

cdef inline uint64_t tbl_bytes(Table* t) noexcept nogil:
    return ((t.mask + 1) << t.shift) * sizeof(Slot) if t.slots != NULL else 0

cdef int tbl_init(Table* t, int kind, int64_t expected) except -1:
    cdef uint64_t cap = 16
    cdef int shift = tbl_shift(kind)
    while cap * 7 < <uint64_t>expected * 10:
        cap *= 2
    cdef Slot* s = <Slot*>malloc((cap << shift) * sizeof(Slot))
    if s == NULL:
        raise MemoryError()
    memset(s, 0xFF, (cap << shift) * sizeof(Slot))     # idx = -1 everywhere (an extra is written with its slot)
    free(t.slots)
    t.slots = s
    t.mask = cap - 1
    t.count = 0
    t.shift = shift
    return 0

cdef inline int32_t tbl_candidate(Table* t, uint64_t h, uint64_t* pos) noexcept nogil:
    """From slot pos[0] on, the row in the first slot that carries h's tag (pos[0] left on that slot), or -1
    at an empty slot.  The row is only a candidate until its key bytes are compared (tbl_verify)."""
    cdef uint32_t tag = <uint32_t>(h >> 32)
    cdef Slot* s
    while True:
        s = slot_at(t, pos[0])
        if s.idx < 0 or s.tag == tag:
            return s.idx
        pos[0] = (pos[0] + 1) & t.mask

cdef int32_t tbl_verify(Store* st, Table* t, int kind, uint64_t h, uint64_t pos, int32_t idx,
                        const char* p, Py_ssize_t n, uint32_t extra) noexcept nogil:
    """tbl_find's answer from the candidate tbl_candidate found at slot pos: its key bytes compared, and on a
    tag that matched another key the probe goes on.  Split from tbl_find so that a caller with several keys
    can fetch every candidate's row and key bytes before comparing any (their cache misses overlap)."""
    while idx >= 0:
        if key_eq(st, kind, idx, p, n, extra):
            return idx
        pos = (pos + 1) & t.mask
        idx = tbl_candidate(t, h, &pos)
    return -1

cdef inline const char* key_bytes(Store* st, int kind, int32_t idx) noexcept nogil:
    """Where row idx's key is in the arena (to start reading it before tbl_verify compares it)."""
    if kind == T_PSN:
        return st.arena + st.persons[idx].psn_no_off
    elif kind == T_CERT:
        return st.arena + st.persons[idx].certno_off
    elif kind == T_FILING:
        return st.arena + st.filings[idx].filing_id_off
    elif kind == T_INST:
        return st.arena + st.insts[idx].fixmedins_code_off
    return st.arena + st.items[idx].code_off

cdef int32_t tbl_find(Store* st, Table* t, int kind, uint64_t h, const char* p, Py_ssize_t n,
                      uint32_t extra) noexcept nogil:
    cdef uint64_t pos = h & t.mask
    if t.slots == NULL:
        return -1
    return tbl_verify(st, t, kind, h, pos, tbl_candidate(t, h, &pos), p, n, extra)

cdef void tbl_place(Store* st, Table* t, uint64_t h, int32_t idx) noexcept nogil:
    cdef uint64_t i = h & t.mask
    cdef Slot* s
    while slot_at(t, i).idx >= 0:
        i = (i + 1) & t.mask
    s = slot_at(t, i)
    s.tag = <uint32_t>(h >> 32)
    s.idx = idx
    if t.shift:
        person_extra(t, i).psn_no_off = st.persons[idx].psn_no_off
        person_extra(t, i).first_filing_idx = st.persons[idx].first_filing_idx

cdef int tbl_insert(Store* st, Table* t, int kind, uint64_t h, int32_t idx) except -1:
    """Insert a key known to be absent; double and rehash past 70% load."""
    cdef Slot* old
    cdef uint64_t oldcap, j
    if t.slots == NULL:
        tbl_init(t, kind, 16)
    if (t.count + 1) * 10 > <int64_t>(t.mask + 1) * 7:
        old = t.slots
        oldcap = t.mask + 1
        t.slots = <Slot*>malloc(((oldcap * 2) << t.shift) * sizeof(Slot))
        if t.slots == NULL:
            t.slots = old
            raise MemoryError()
        memset(t.slots, 0xFF, ((oldcap * 2) << t.shift) * sizeof(Slot))
        t.mask = oldcap * 2 - 1
        for j in range(oldcap):
            if old[j << t.shift].idx >= 0:
                tbl_place(st, t, key_hash(st, kind, old[j << t.shift].idx), old[j << t.shift].idx)
        free(old)
    tbl_place(st, t, h, idx)
    t.count += 1
    return 0

cdef void tbl_remove(Store* st, Table* t, int kind, uint64_t h, int32_t idx) noexcept nogil:
    """Remove row idx (stored under hash h), backward-shifting the probe chain."""
    cdef uint64_t i = h & t.mask
    cdef uint64_t j, home
    if t.slots == NULL:
        return
    while slot_at(t, i).idx != idx:
        if slot_at(t, i).idx < 0:
            return
        i = (i + 1) & t.mask
    j = i
    while True:
        slot_at(t, i).idx = -1
        while True:
            j = (j + 1) & t.mask
            if slot_at(t, j).idx < 0:
                t.count -= 1
                return
            home = key_hash(st, kind, slot_at(t, j).idx) & t.mask
            # keep slot j where it is if its home lies cyclically in (i, j]
            if i <= j:
                if i < home <= j:
                    continue
            else:
                if home > i or home <= j:
                    continue
            break
        memcpy(slot_at(t, i), slot_at(t, j), sizeof(Slot) << t.shift)    # the slot and its extra, if any
        i = j

cdef PersonSlotExtra* person_slot_extra(Store* st, int32_t pi) noexcept nogil:
    """What the persons' table holds beside person pi's slot; NULL if no slot names the person."""
    cdef Table* t = &st.t_psn
    cdef uint64_t pos = key_hash(st, T_PSN, pi) & t.mask
    if t.slots == NULL:
        return NULL
    while slot_at(t, pos).idx >= 0:
        if slot_at(t, pos).idx == pi:
            return person_extra(t, pos)
        pos = (pos + 1) & t.mask
    return NULL

cdef void person_set_first_filing(Store* st, int32_t pi, int32_t fi) noexcept nogil:
    """The person's first filing, in the row and beside the person's slot in the persons' table."""
    cdef PersonSlotExtra* x = person_slot_extra(st, pi)
    st.persons[pi].first_filing_idx = fi
    if x != NULL:
        x.first_filing_idx = fi

# ---------------------------------------------------------------- huge pages
# A look-up is a chain of dependent reads scattered over ~0.4 GB of tables (slot, row, key, filing).  With 4 KiB
# pages nearly every one of them also misses the TLB, and in a virtual machine a TLB miss walks two page tables;
# in 2 MiB pages the whole index fits the TLB.  The tables are moved there after they are filled (MADV_COLLAPSE,
# Linux 6.1+: a copy into huge pages), not allocated in huge pages before: then every first write waits for
# a huge page, which is where an earlier attempt lost seconds of start-up.  The collapse runs against a deadline
# (finding free huge pages may mean compacting memory); what it leaves is advised (MADV_HUGEPAGE), for the
# kernel's khugepaged to collapse in the background.  Nothing is changed but the pages the bytes live in.
cdef extern from *:
    """
    #include <sys/mman.h>
    #include <stdint.h>
    #include <time.h>
    #ifndef MADV_HUGEPAGE
    #define MADV_HUGEPAGE 14
    #endif
    #ifndef MADV_COLLAPSE
    #define MADV_COLLAPSE 25
    #endif
    #define YIDI_HUGE_PAGE_BYTES ((uintptr_t)2 << 20)
    #define YIDI_COLLAPSE_CHUNK_BYTES ((uintptr_t)32 << 20)

    static uint64_t yidi_now_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
    }

    /* The 2 MiB-aligned interior of [p, p + n) advised for huge pages and, chunk by chunk while the deadline
       (CLOCK_MONOTONIC, ns) is ahead, collapsed into them now; the bytes collapsed. */
    static uint64_t yidi_huge_pages(void* p, uint64_t n, uint64_t deadline_ns) {
        uintptr_t start = ((uintptr_t)p + YIDI_HUGE_PAGE_BYTES - 1) & ~(YIDI_HUGE_PAGE_BYTES - 1);
        uintptr_t end = ((uintptr_t)p + n) & ~(YIDI_HUGE_PAGE_BYTES - 1);
        uintptr_t at, stop;
        uint64_t moved = 0;
        if (p == NULL || end <= start || madvise((void*)start, end - start, MADV_HUGEPAGE) != 0)
            return 0;
        for (at = start; at < end && yidi_now_ns() < deadline_ns; at = stop) {
            stop = end - at > YIDI_COLLAPSE_CHUNK_BYTES ? at + YIDI_COLLAPSE_CHUNK_BYTES : end;
            if (madvise((void*)at, stop - at, MADV_COLLAPSE) == 0)
                moved += stop - at;
        }
        return moved;
    }
    """
    uint64_t yidi_now_ns() noexcept nogil
    uint64_t yidi_huge_pages(void* p, uint64_t n, uint64_t deadline_ns) noexcept nogil


cdef uint64_t store_huge_pages(Store* st, uint64_t deadline_ns) noexcept nogil:
    """Bytes of the store's arrays collapsed into huge pages; those eligibility reads first (the persons' slots,
    rows, keys and filings), the rest after."""
    cdef uint64_t n = 0
    n += yidi_huge_pages(st.t_psn.slots, tbl_bytes(&st.t_psn), deadline_ns)
    n += yidi_huge_pages(st.persons, st.n_persons * sizeof(Person), deadline_ns)
    n += yidi_huge_pages(st.filings, st.n_filings * sizeof(Filing), deadline_ns)
    n += yidi_huge_pages(st.arena, st.arena_len, deadline_ns)
    n += yidi_huge_pages(st.insts, st.n_insts * sizeof(Institution), deadline_ns)
    n += yidi_huge_pages(st.t_inst.slots, tbl_bytes(&st.t_inst), deadline_ns)
    n += yidi_huge_pages(st.items, st.n_items * sizeof(CatalogItem), deadline_ns)
    n += yidi_huge_pages(st.t_item.slots, tbl_bytes(&st.t_item), deadline_ns)
    n += yidi_huge_pages(st.t_cert.slots, tbl_bytes(&st.t_cert), deadline_ns)
    n += yidi_huge_pages(st.t_filing.slots, tbl_bytes(&st.t_filing), deadline_ns)
    return n


cdef void store_free(Store* st) noexcept nogil:
    free(st.arena); free(st.persons); free(st.filings); free(st.insts); free(st.items)
    free(st.policies); free(st.accs)
    free(st.t_psn.slots); free(st.t_cert.slots); free(st.t_filing.slots)
    free(st.t_inst.slots); free(st.t_item.slots)
    memset(st, 0, sizeof(Store))


# ---------------------------------------------------------------- small validators
cdef inline bint id_ok(const char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if n < 1 or n > MAX_ID_LEN:
        return False
    for i in range(n):
        if <uint8_t>p[i] < 0x21 or <uint8_t>p[i] > 0x7E:
            return False
    return True

cdef int _CERT_W[17]
_CERT_W[:] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
cdef const char* _CERT_CHECK = b"10X98765432"

cdef inline bint certno_ok(const char* p, Py_ssize_t n) noexcept nogil:
    """GB 11643: 17 digits and a mod-11 check character (0-9 or X)."""
    cdef int s = 0, i
    if n != 18:
        return False
    for i in range(17):
        if p[i] < 48 or p[i] > 57:
            return False
        s += (p[i] - 48) * _CERT_W[i]
    return p[17] == _CERT_CHECK[s % 11]

cdef inline int days_in_month(int y, int m) noexcept nogil:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31

cdef inline bint date_ok(int64_t d) noexcept nogil:
    cdef int y, m, dd
    if d < MIN_DATE or d > MAX_DATE:
        return False
    y = <int>(d // 10000); m = <int>((d // 100) % 100); dd = <int>(d % 100)
    return 1 <= m <= 12 and 1 <= dd <= days_in_month(y, m)

cdef inline int64_t day_number(int64_t d) noexcept nogil:
    """Days since 0000-03-01 (civil calendar), for date differences."""
    cdef int64_t y = d // 10000, m = (d // 100) % 100, dd = d % 100
    if m <= 2:
        y -= 1
        m += 12
    return 365 * y + y // 4 - y // 100 + y // 400 + (153 * (m - 3) + 2) // 5 + dd

cdef inline bint admdvs_ok(const char* p, Py_ssize_t n) noexcept nogil:
    cdef int i
    if n != 6 or p[0] == 48:
        return False
    for i in range(6):
        if p[i] < 48 or p[i] > 57:
            return False
    return True

cdef inline uint32_t province_of(uint32_t admdvs) noexcept nogil:
    return admdvs // 10000 * 10000

cdef inline uint32_t pooling_of(uint32_t admdvs) noexcept nogil:
    return admdvs // 100 * 100

cdef inline bint dest_covers(uint32_t dest, uint32_t region) noexcept nogil:
    """A filing destination covers a region: province code, city code or exact code."""
    if dest % 10000 == 0:
        return province_of(region) == dest
    if dest % 100 == 0:
        return pooling_of(region) == dest
    return region == dest

cdef inline int64_t bp(int64_t x, int64_t b) noexcept nogil:
    """(x * b + 5000) // 10000 for 0 <= x, 0 <= b <= 10000, without overflow."""
    return (x // BP_ONE) * b + ((x % BP_ONE) * b + 5000) // BP_ONE

cdef inline int64_t imin(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b

cdef inline int64_t imax(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b

def _date_zh(int64_t d):
    return f"{d // 10000}年{(d // 100) % 100}月{d % 100}日"
