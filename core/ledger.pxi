# A commit group of ledger records packed in one call (gateway/store/packed.py is the layout, chain.py the checksum
# and chain, rows.py the idempotency hashes and tags): the packed row bodies, the chain values, the idempotency
# rows and the derived rows' tags, with no Python bytecode per record.  BLAKE2b is RFC 7693's, written here (the
# core links nothing else); every digest equals hashlib.blake2b's for the same key, size and input, so the bytes
# are the ones the ledger has always held (tests/gateway/test_ledger_group_c.py compares them).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromUnsignedLongLong

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object value, int* overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object value) except? -1

cdef enum:
    B2_BLOCK = 128
    RECORD_HEAD = 33        # packed.py's _RECORD: <HHHBHII16s
    LENGTHS_HEAD = 36       # chain.py's _LENGTHS: <QIIIIIII
    CHAIN_LEN = 32
    CHECKSUM_LEN = 16
    TAG_LEN = 16
    REQUEST_HASH_LEN = 8
    FIELDS = 7              # kind, caller, request_id, digest, key, body, response
    TAG_STACK = 512         # a derived row's msgpack up to this long is encoded on the stack

ctypedef struct Blake2b:
    uint64_t h[8]
    uint64_t t0
    uint64_t t1
    uint8_t buf[B2_BLOCK]
    size_t fill
    size_t outlen

cdef uint64_t B2_IV[8]
B2_IV[:] = [0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
            0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179]
cdef uint8_t B2_SIGMA[12][16]
for _r, _row in enumerate((
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
        (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4), (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
        (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13), (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
        (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11), (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
        (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5), (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3))):
    for _c in range(16):
        B2_SIGMA[_r][_c] = _row[_c]


cdef inline uint64_t _rotr64(uint64_t x, int n) noexcept nogil:
    return (x >> n) | (x << (64 - n))


cdef inline uint64_t _load64le(const uint8_t* p) noexcept nogil:
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16) | (<uint64_t>p[3] << 24) |
            (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40) | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56))


cdef inline void _put_le(uint8_t* p, uint64_t x, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        p[i] = <uint8_t>(x >> (8 * i))


cdef inline void _put_be(uint8_t* p, uint64_t x, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        p[i] = <uint8_t>(x >> (8 * (n - 1 - i)))


cdef inline void _b2_g(uint64_t* v, int a, int b, int c, int d, uint64_t x, uint64_t y) noexcept nogil:
    v[a] = v[a] + v[b] + x
    v[d] = _rotr64(v[d] ^ v[a], 32)
    v[c] = v[c] + v[d]
    v[b] = _rotr64(v[b] ^ v[c], 24)
    v[a] = v[a] + v[b] + y
    v[d] = _rotr64(v[d] ^ v[a], 16)
    v[c] = v[c] + v[d]
    v[b] = _rotr64(v[b] ^ v[c], 63)


cdef void _b2_compress(Blake2b* s, bint last) noexcept nogil:
    cdef uint64_t v[16]
    cdef uint64_t m[16]
    cdef const uint8_t* sg
    cdef int i, r
    for i in range(8):
        v[i] = s.h[i]
        v[i + 8] = B2_IV[i]
    v[12] ^= s.t0
    v[13] ^= s.t1
    if last:
        v[14] = ~v[14]
    for i in range(16):
        m[i] = _load64le(s.buf + 8 * i)
    for r in range(12):
        sg = B2_SIGMA[r]
        _b2_g(v, 0, 4, 8, 12, m[sg[0]], m[sg[1]])
        _b2_g(v, 1, 5, 9, 13, m[sg[2]], m[sg[3]])
        _b2_g(v, 2, 6, 10, 14, m[sg[4]], m[sg[5]])
        _b2_g(v, 3, 7, 11, 15, m[sg[6]], m[sg[7]])
        _b2_g(v, 0, 5, 10, 15, m[sg[8]], m[sg[9]])
        _b2_g(v, 1, 6, 11, 12, m[sg[10]], m[sg[11]])
        _b2_g(v, 2, 7, 8, 13, m[sg[12]], m[sg[13]])
        _b2_g(v, 3, 4, 9, 14, m[sg[14]], m[sg[15]])
    for i in range(8):
        s.h[i] ^= v[i] ^ v[i + 8]


cdef void _b2_init(Blake2b* s, size_t outlen, const uint8_t* key, size_t keylen) noexcept nogil:
    """A state for a digest of ``outlen`` bytes; with a key, its block already compressed (so every message hashed
    from a copy of this state must be at least one byte long, as every one here is)."""
    cdef int i
    for i in range(8):
        s.h[i] = B2_IV[i]
    s.h[0] ^= 0x01010000 ^ (<uint64_t>keylen << 8) ^ outlen
    s.t0 = s.t1 = 0
    s.fill = 0
    s.outlen = outlen
    if keylen:
        memset(s.buf, 0, B2_BLOCK)
        memcpy(s.buf, key, keylen)
        s.t0 = B2_BLOCK
        _b2_compress(s, 0)


cdef void _b2_update(Blake2b* s, const uint8_t* data, size_t n) noexcept nogil:
    cdef size_t take
    while n > 0:
        if s.fill == B2_BLOCK:   # a full block is compressed only once more input shows it is not the last
            s.t0 += B2_BLOCK
            if s.t0 < B2_BLOCK:
                s.t1 += 1
            _b2_compress(s, 0)
            s.fill = 0
        take = B2_BLOCK - s.fill
        if take > n:
            take = n
        memcpy(s.buf + s.fill, data, take)
        s.fill += take
        data += take
        n -= take


cdef void _b2_final(Blake2b* s, uint8_t* out) noexcept nogil:
    cdef size_t i
    s.t0 += s.fill
    if s.t0 < s.fill:
        s.t1 += 1
    memset(s.buf + s.fill, 0, B2_BLOCK - s.fill)
    _b2_compress(s, 1)
    for i in range(s.outlen):
        out[i] = <uint8_t>(s.h[i >> 3] >> (8 * (i & 7)))


def blake2b_digest(data, Py_ssize_t digest_size=64, key=b""):
    """``hashlib.blake2b(data, digest_size=, key=).digest()`` by the core's own BLAKE2b (what tests compare)."""
    cdef const uint8_t[::1] d = data
    cdef const uint8_t[::1] k = key
    cdef Blake2b s
    cdef uint8_t out[64]
    if not 1 <= digest_size <= 64 or k.shape[0] > 64:
        raise ValueError("BLAKE2b: a digest of 1..64 bytes, a key of at most 64")
    _b2_init(&s, digest_size, &k[0] if k.shape[0] else NULL, k.shape[0])
    if d.shape[0]:
        _b2_update(&s, &d[0], d.shape[0])
    elif k.shape[0]:
        raise ValueError("blake2b_digest: a keyed digest of an empty message is not what the ledger computes")
    _b2_final(&s, out)
    return PyBytes_FromStringAndSize(<char*>out, digest_size)


# ---------------------------------------------------------------- msgpack of a derived row, as msgspec writes it
cdef inline Py_ssize_t _mp_head(uint8_t* p, uint64_t n, uint8_t fix, uint64_t fix_max, uint8_t first8,
                                bint has8) noexcept nogil:
    """The header of a str (0xa0 fix, 0xd9..), bin (no fix form, 0xc4..) or array (0x90 fix, 0xdc..) of n."""
    if n < fix_max:
        p[0] = fix | <uint8_t>n
        return 1
    if has8 and n < 256:
        p[0] = first8
        p[1] = <uint8_t>n
        return 2
    if n < 65536:
        p[0] = first8 + 1 if has8 else first8
        _put_be(p + 1, n, 2)
        return 3
    p[0] = first8 + 2 if has8 else first8 + 1
    _put_be(p + 1, n, 4)
    return 5


cdef inline Py_ssize_t _mp_int(uint8_t* p, object value) except -2:
    """An int as msgspec encodes it (the shortest form: unsigned for >= 0); -1 where it does not fit 64 bits."""
    cdef int overflow = 0
    cdef long long i = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef uint64_t u
    if overflow < 0:
        return -1
    if overflow > 0:
        if value >= 1 << 64:
            return -1
        u = PyLong_AsUnsignedLongLong(value)
    elif i >= 0:
        u = <uint64_t>i
    else:
        if i >= -32:
            p[0] = <uint8_t>i
            return 1
        if i >= -128:
            p[0] = 0xd0
            p[1] = <uint8_t>i
            return 2
        if i >= -32768:
            p[0] = 0xd1
            _put_be(p + 1, <uint64_t>i, 2)
            return 3
        if i >= -2147483648:
            p[0] = 0xd2
            _put_be(p + 1, <uint64_t>i, 4)
            return 5
        p[0] = 0xd3
        _put_be(p + 1, <uint64_t>i, 8)
        return 9
    if u < 128:
        p[0] = <uint8_t>u
        return 1
    if u < 256:
        p[0] = 0xcc
        p[1] = <uint8_t>u
        return 2
    if u < 65536:
        p[0] = 0xcd
        _put_be(p + 1, u, 2)
        return 3
    if u <= 0xffffffff:
        p[0] = 0xce
        _put_be(p + 1, u, 4)
        return 5
    p[0] = 0xcf
    _put_be(p + 1, u, 8)
    return 9


cdef inline const uint8_t* _utf8(object text, Py_ssize_t* n) except NULL:
    return <const uint8_t*>PyUnicode_AsUTF8AndSize(text, n)


cdef inline Py_ssize_t _u16_field(Py_ssize_t n, str what) except -1:
    if n > 0xffff:
        raise ValueError(f"a ledger record's {what} is at most 65535 bytes, not {n}")
    return n


cdef class GroupRules:
    """What a commit group derives besides its records (gateway/store/packed.py makes the one instance): the
    Python ``derive(changes, seq)`` of rows.py for every archive change but a settlement's (whose ``recon`` row
    ``GroupPacker`` makes itself, as rows.recon_row does), the kind of a reversal's record (it also holds its
    original's key) and of a reference load's (named in ``reference_loads``)."""

    cdef object derive
    cdef object put_settlement
    cdef str reversed_kind
    cdef str reference_kind

    def __cinit__(self, derive, put_settlement, str reversed_kind, str reference_kind):
        self.derive = derive
        self.put_settlement = put_settlement
        self.reversed_kind = reversed_kind
        self.reference_kind = reference_kind


cdef inline object _id_number(object ident, uint8_t prefix):
    """events.id_seq: the number of an id the gateway issues (the prefix and 15 ASCII digits), 0 if not one."""
    cdef Py_ssize_t n, k
    cdef const uint8_t* p = _utf8(ident, &n)
    cdef int64_t value = 0
    if n != 16 or p[0] != prefix:
        return 0
    for k in range(1, 16):
        if not 48 <= p[k] <= 57:
            return 0
        value = value * 10 + (p[k] - 48)
    return value


cdef inline object _ascii_number(object text):
    """int(text) of 1..18 ASCII digits; None for anything else (Python's int() decides those)."""
    cdef Py_ssize_t n, k
    cdef const uint8_t* p = _utf8(<str?>text, &n)
    cdef int64_t value = 0
    if not 1 <= n <= 18:
        return None
    for k in range(n):
        if not 48 <= p[k] <= 57:
            return None
        value = value * 10 + (p[k] - 48)
    return value


cdef class GroupPacker:
    """One ledger's records packed a commit group at a time (``pack``), keyed with that ledger's key."""

    cdef Blake2b _link_state     # keyed BLAKE2b-256, its key block compressed: a chain value
    cdef Blake2b _tag_state      # keyed BLAKE2b-128: a derived row's tag
    cdef Blake2b _request_state  # BLAKE2b-64: an idempotency key's hash, an institution's recon key
    cdef Blake2b _checksum_state  # BLAKE2b-128: a record's checksum
    cdef object _tag_fallback    # tag(table, values) in Python, for a value that is not an int, str or bytes

    def __cinit__(self, bytes key, tag_fallback):
        if len(key) != CHAIN_LEN:
            raise ValueError(f"a ledger key is {CHAIN_LEN} bytes")
        _b2_init(&self._link_state, CHAIN_LEN, <const uint8_t*>PyBytes_AS_STRING(key), CHAIN_LEN)
        _b2_init(&self._tag_state, TAG_LEN, <const uint8_t*>PyBytes_AS_STRING(key), CHAIN_LEN)
        _b2_init(&self._request_state, REQUEST_HASH_LEN, NULL, 0)
        _b2_init(&self._checksum_state, CHECKSUM_LEN, NULL, 0)
        self._tag_fallback = tag_fallback

    def pack(self, records, int64_t last, bytes previous, Py_ssize_t row_records, GroupRules rules):
        """(rows, chain, requests, derived) of ``records`` numbered after ``last`` and chained from ``previous``:
        the (last_seq, first_seq, body) of each row of at most ``row_records`` records (0: one row), the last
        chain value, (caller, request_id, h, seq, tag) of each idempotency key, and table -> [(*values, tag)] of
        each reference load (its seq) and each row a record's archive changes derive, by ``rules``."""
        cdef list items = list(records)
        cdef Py_ssize_t n = len(items)
        cdef Py_ssize_t step = row_records if 0 < row_records < n else n
        cdef Py_ssize_t* sizes = NULL
        cdef list rows = []
        cdef Py_ssize_t start
        if len(previous) != CHAIN_LEN:
            raise ValueError(f"a chain value is {CHAIN_LEN} bytes")
        if n == 0:
            return rows, previous, [], {}
        sizes = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
        if sizes == NULL:
            raise MemoryError()
        try:
            for start in range(n):
                sizes[start] = self._record_size(items[start])
            for start in range(0, n, step):
                body, previous = self._row(items, start, min(start + step, n), last, previous, sizes)
                rows.append((last + min(start + step, n), last + start + 1, body))
        finally:
            free(sizes)
        return rows, previous, self._requests(items, last, rules.reversed_kind), self._derived(items, last, rules)

    cdef Py_ssize_t _record_size(self, r) except -1:
        cdef Py_ssize_t n, total = RECORD_HEAD
        cdef Py_ssize_t digest = len(<bytes?>r.digest)
        if digest > 0xff:
            raise ValueError(f"a ledger record's digest is at most 255 bytes, not {digest}")
        for text, what in ((r.kind, "kind"), (r.caller, "caller"), (r.request_id, "request id"), (r.key, "key")):
            _utf8(text, &n)
            total += _u16_field(n, what)
        n = len(<bytes?>r.body) + len(<bytes?>r.response)
        if len(r.body) > 0xffffffff or len(r.response) > 0xffffffff:
            raise ValueError("a ledger record's body and response are each under 4 GiB")
        return total + digest + n

    cdef tuple _row(self, list items, Py_ssize_t lo, Py_ssize_t hi, int64_t last, bytes previous,
                    Py_ssize_t* sizes):
        """One row body of items[lo:hi] (packed.py's layout) and the chain value after its last record."""
        cdef Py_ssize_t count = hi - lo, head = 4 * (count + 2) + CHAIN_LEN * count, data = 0, i
        for i in range(lo, hi):
            data += sizes[i]
        if head + data > 0xffffffff:
            raise ValueError("a row of the ledger is under 4 GiB")
        body = PyBytes_FromStringAndSize(NULL, head + data)
        cdef uint8_t* out = <uint8_t*>PyBytes_AS_STRING(body)
        cdef uint8_t* chains = out + 4 * (count + 2)
        cdef uint8_t* record = out + head
        cdef const uint8_t* link = <const uint8_t*>PyBytes_AS_STRING(previous)
        cdef Py_ssize_t at = 0
        _put_le(out, count, 4)
        for i in range(lo, hi):
            _put_le(out + 4 * (i - lo + 1), at, 4)
            self._record(items[i], last + 1 + i, record + at, link, chains + CHAIN_LEN * (i - lo))
            link = chains + CHAIN_LEN * (i - lo)
            at += sizes[i]
        _put_le(out + 4 * (count + 1), at, 4)
        return body, PyBytes_FromStringAndSize(<const char*>link, CHAIN_LEN)

    cdef int _record(self, r, int64_t seq, uint8_t* out, const uint8_t* previous, uint8_t* chain) except -1:
        """One record at ``out`` (its lengths, checksum, fields) and its chain value at ``chain``."""
        cdef const uint8_t* p[FIELDS]
        cdef Py_ssize_t n[FIELDS]
        cdef uint8_t lengths[LENGTHS_HEAD]
        cdef uint8_t* field = out + RECORD_HEAD
        cdef Blake2b s
        cdef int i
        p[0] = _utf8(r.kind, &n[0])
        p[1] = _utf8(r.caller, &n[1])
        p[2] = _utf8(r.request_id, &n[2])
        digest, body, response = r.digest, r.body, r.response
        p[3], n[3] = <const uint8_t*>PyBytes_AS_STRING(digest), PyBytes_GET_SIZE(digest)
        p[4] = _utf8(r.key, &n[4])
        p[5], n[5] = <const uint8_t*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body)
        p[6], n[6] = <const uint8_t*>PyBytes_AS_STRING(response), PyBytes_GET_SIZE(response)
        _put_le(out, n[0], 2)
        _put_le(out + 2, n[1], 2)
        _put_le(out + 4, n[2], 2)
        out[6] = <uint8_t>n[3]
        _put_le(out + 7, n[4], 2)
        _put_le(out + 9, n[5], 4)
        _put_le(out + 13, n[6], 4)
        _put_le(lengths, <uint64_t>seq, 8)
        for i in range(FIELDS):
            _put_le(lengths + 8 + 4 * i, n[i], 4)
            memcpy(field, p[i], n[i])
            field += n[i]
        s = self._checksum_state
        _b2_update(&s, lengths, LENGTHS_HEAD)
        _b2_update(&s, out + RECORD_HEAD, field - (out + RECORD_HEAD))
        _b2_final(&s, out + 17)
        s = self._link_state
        _b2_update(&s, previous, CHAIN_LEN)
        _b2_update(&s, out + 17, CHECKSUM_LEN)
        _b2_final(&s, chain)
        return 0

    cdef list _requests(self, list items, int64_t last, str reversed_kind):
        cdef list out = []
        cdef int64_t seq = last
        for r in items:
            seq += 1
            rid, kind = r.request_id, r.kind
            if kind == reversed_kind:
                if rid:
                    out.append(self._request(r.caller, rid, seq))
                out.append(self._request(r.caller, r.key, seq))
            elif rid:
                out.append(self._request(r.caller, rid, seq))
        return out

    cdef tuple _request(self, str caller, str request_id, int64_t seq):
        """(caller, request_id, h, seq, tag): rows.request_hash's h, tagged as a ``requests`` row."""
        cdef Py_ssize_t nc, nr
        cdef const uint8_t* c = _utf8(caller, &nc)
        cdef const uint8_t* q = _utf8(request_id, &nr)
        cdef uint8_t zero = 0
        cdef uint8_t digest[REQUEST_HASH_LEN]
        cdef uint64_t h = 0
        cdef Blake2b s = self._request_state
        cdef int i
        _b2_update(&s, c, nc)
        _b2_update(&s, &zero, 1)
        _b2_update(&s, q, nr)
        _b2_final(&s, digest)
        for i in range(REQUEST_HASH_LEN):
            h = (h << 8) | digest[i]
        hash_ = PyLong_FromUnsignedLongLong(h >> 1)
        return caller, request_id, hash_, seq, self._tag("requests", (hash_, seq))

    cdef dict _derived(self, list items, int64_t last, GroupRules rules):
        cdef dict out = {}
        cdef int64_t seq = last
        for r in items:
            seq += 1
            if r.kind == rules.reference_kind:
                out.setdefault("reference_loads", []).append((seq, self._tag("reference_loads", (seq,))))
            for change in r.changes:
                values = self._recon(change.settlement.facts) if type(change) is rules.put_settlement else None
                if values is not None:
                    out.setdefault("recon", []).append((*values, self._tag("recon", values)))
                    continue
                for table, values in rules.derive((change,), seq):
                    out.setdefault(table, []).append((*values, self._tag(table, values)))
        return out

    cdef tuple _recon(self, facts):
        """rows.recon_row(facts); None where its insutype is not plain digits (Python's int() decides)."""
        cdef Py_ssize_t n
        cdef const uint8_t* code = _utf8(<str?>facts.fixmedins_code, &n)
        cdef uint8_t digest[REQUEST_HASH_LEN]
        cdef uint64_t h = 0
        cdef Blake2b s = self._request_state
        cdef int i
        insutype = _ascii_number(facts.insutype)
        if insutype is None:
            return None
        _b2_update(&s, <const uint8_t*>b"inst\x00", 5)
        _b2_update(&s, code, n)
        _b2_final(&s, digest)
        for i in range(REQUEST_HASH_LEN):
            h = (h << 8) | digest[i]
        b = facts.breakdown
        return (PyLong_FromUnsignedLongLong(h >> 1), facts.setl_date, _id_number(facts.setl_id, 83), insutype,
                b.medfee_sumamt, b.fund_pay_sumamt, b.psn_cash_pay, facts.risk_flags)

    def tag(self, str table, tuple values):
        """``LedgerKey.tag(table, values)``, in C where every value is an int, a str or bytes."""
        return self._tag(table, values)

    cdef bytes _tag(self, str table, tuple values):
        """The keyed BLAKE2b-128 of msgpack (table, values); a value of another type is tagged by the fallback."""
        cdef uint8_t stack[TAG_STACK]
        cdef uint8_t* buf = stack
        cdef uint8_t tag[TAG_LEN]
        cdef Py_ssize_t size = 2 + 5 + len(table) * 4 + 5, at, n, k
        cdef const uint8_t* text
        cdef Blake2b s
        for v in values:
            t = type(v)
            if t is int:
                size += 9
            elif t is str or t is bytes:
                size += 5 + 4 * len(v)
            else:
                return self._tag_fallback(table, values)
        if size > TAG_STACK:
            buf = <uint8_t*>malloc(size)
            if buf == NULL:
                raise MemoryError()
        try:
            buf[0] = 0x92
            text = _utf8(table, &n)
            at = 1 + _mp_head(buf + 1, n, 0xa0, 32, 0xd9, True)
            memcpy(buf + at, text, n)
            at += n
            at += _mp_head(buf + at, len(values), 0x90, 16, 0xdc, False)
            for v in values:
                if type(v) is int:
                    k = _mp_int(buf + at, v)
                    if k < 0:
                        return self._tag_fallback(table, values)
                    at += k
                    continue
                if type(v) is str:
                    text = _utf8(v, &n)
                    at += _mp_head(buf + at, n, 0xa0, 32, 0xd9, True)
                else:
                    text, n = <const uint8_t*>PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)
                    at += _mp_head(buf + at, n, 0, 0, 0xc4, True)
                memcpy(buf + at, text, n)
                at += n
            s = self._tag_state
            _b2_update(&s, buf, at)
            _b2_final(&s, tag)
        finally:
            if buf != stack:
                free(buf)
        return PyBytes_FromStringAndSize(<char*>tag, TAG_LEN)


# ---------------------------------------------------------------- PostgreSQL's COPY BINARY of a group's rows
cdef bytes _COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)   # signature, flags, header extension length
cdef dict _COPY_KINDS = {"text": 0, "int8": 1, "bytea": 2}


def copy_binary(list rows, tuple types):
    """``rows`` (tuples of values of the PostgreSQL ``types``: "text" a str, "int8" an int, "bytea" bytes) as one
    COPY ... FROM STDIN (FORMAT BINARY) stream, signature and trailer included: what psycopg's ``write_row``
    writes for each row, made without a Python call per value."""
    cdef Py_ssize_t ncols = len(types), size = len(_COPY_SIGNATURE) + 2, n, c
    cdef uint8_t kinds[64]
    cdef const uint8_t* text
    if ncols > 64:
        raise ValueError("copy_binary: at most 64 columns")
    for c in range(ncols):
        kinds[c] = _COPY_KINDS[types[c]]
    for row in rows:
        if len(<tuple?>row) != ncols:
            raise ValueError(f"copy_binary: a row of {len(row)} values for {ncols} columns")
        size += 2 + 4 * ncols
        for c in range(ncols):
            value = row[c]
            if kinds[c] == 1:
                if type(value) is not int:
                    raise TypeError(f"copy_binary: column {c} is int8, not {type(value).__name__}")
                size += 8
            elif kinds[c] == 0:
                _utf8(<str?>value, &n)
                size += n
            else:
                size += len(<bytes?>value)
    out = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(_COPY_SIGNATURE), len(_COPY_SIGNATURE))
    p += len(_COPY_SIGNATURE)
    for row in rows:
        _put_be(p, ncols, 2)
        p += 2
        for c in range(ncols):
            value = row[c]
            if kinds[c] == 1:
                _put_be(p, 8, 4)
                _put_be(p + 4, <uint64_t><int64_t>value, 8)
                p += 12
                continue
            if kinds[c] == 0:
                text = _utf8(value, &n)
            else:
                text, n = <const uint8_t*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)
            _put_be(p, n, 4)
            memcpy(p + 4, text, n)
            p += 4 + n
    p[0] = p[1] = 0xff   # the trailer: a field count of -1
    return out
