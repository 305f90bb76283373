# The protobuf wire format of the answers the core computes (protos/yidi/v1/common.proto), written
# straight from C structs: building the same answer as protobuf Python objects cost ~25 µs per
# settlement, writing it here ~1 µs.  The .proto files stay the contract; tests/test_core_wire.py
# checks that these bytes equal what the generated classes serialize (deterministic), field by field.
#
# Proto3 rules kept here: fields in ascending number, a scalar equal to its default (0, "") is
# omitted, varints little-endian base 128, negative ints as 10-byte two's complement.

cdef enum:
    WIRE_VARINT = 0
    WIRE_LEN = 2


ctypedef struct PbBuf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef int pb_reserve(PbBuf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap
    cdef char* grown
    if b.len + extra <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 256
    while cap < b.len + extra:
        cap *= 2
    grown = <char*>realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.cap = cap
    return 0

cdef inline void pb_free(PbBuf* b) noexcept:
    free(b.data)
    b.data = NULL
    b.len = b.cap = 0

cdef int pb_raw_varint(PbBuf* b, uint64_t v) except -1:
    pb_reserve(b, 10)
    while v >= 0x80:
        b.data[b.len] = <char>((v & 0x7F) | 0x80)
        b.len += 1
        v >>= 7
    b.data[b.len] = <char>v
    b.len += 1
    return 0

cdef inline int pb_tag(PbBuf* b, int field, int wire_type) except -1:
    return pb_raw_varint(b, <uint64_t>((field << 3) | wire_type))

cdef int pb_int(PbBuf* b, int field, int64_t v) except -1:
    """An int32/int64/enum field; omitted when 0 (proto3)."""
    if v == 0:
        return 0
    pb_tag(b, field, WIRE_VARINT)
    return pb_raw_varint(b, <uint64_t>v)

cdef int pb_bytes(PbBuf* b, int field, const char* p, Py_ssize_t n) except -1:
    """A string/bytes/message field; omitted when empty (proto3)."""
    if n == 0:
        return 0
    pb_tag(b, field, WIRE_LEN)
    pb_raw_varint(b, <uint64_t>n)
    pb_reserve(b, n)
    memcpy(b.data + b.len, p, n)
    b.len += n
    return 0

cdef int pb_str(PbBuf* b, int field, str s) except -1:
    cdef Py_ssize_t n
    cdef const char* p = PyUnicode_AsUTF8AndSize(s, &n)
    return pb_bytes(b, field, p, n)

cdef int pb_message(PbBuf* b, int field, PbBuf* child) except -1:
    """A nested message; written even when empty only if the parent must say it is present."""
    pb_tag(b, field, WIRE_LEN)
    pb_raw_varint(b, <uint64_t>child.len)
    pb_reserve(b, child.len)
    if child.len:
        memcpy(b.data + b.len, child.data, child.len)
    b.len += child.len
    return 0

cdef inline bytes pb_bytes_of(PbBuf* b):
    return b.data[:b.len] if b.len else b""


# ---------------------------------------------------------------- reading requests
# A request the core decodes itself (OutpatientSettleRequest, DischargeSettleRequest, SettleBatchRequest)
# is read field by field into Python values; anything unusual — an unknown field, fields out of
# order, a default value written out, a non-minimal varint, both members of a oneof, invalid UTF-8 —
# makes the reader answer None, and the caller parses the bytes with the generated classes instead.
# So what is read here is always exactly what upb would read, and when the reader accepts the bytes
# they are canonical: equal to the deterministic serialization, so the idempotency digest can be
# taken over them as they came (tests/test_core_wire.py checks both claims on random requests).

ctypedef struct PbIn:
    const unsigned char* p
    Py_ssize_t pos
    Py_ssize_t end
    bint bad


cdef inline uint64_t pb_read_varint(PbIn* r) noexcept nogil:
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef unsigned char c
    cdef Py_ssize_t start = r.pos
    while True:
        if r.pos >= r.end or shift > 63:
            r.bad = True
            return 0
        c = r.p[r.pos]
        r.pos += 1
        v |= <uint64_t>(c & 0x7F) << shift
        if c < 0x80:
            break
        shift += 7
    if c == 0 and r.pos - start > 1:     # a trailing zero byte: not the minimal encoding
        r.bad = True
    return v

cdef inline Py_ssize_t pb_read_len(PbIn* r) noexcept nogil:
    """The length of a length-delimited field; its bytes start at r.pos."""
    cdef uint64_t n = pb_read_varint(r)
    if r.bad or n > <uint64_t>(r.end - r.pos):
        r.bad = True
        return 0
    return <Py_ssize_t>n

cdef object pb_read_str(PbIn* r, bint may_be_empty=False):
    """A UTF-8 string field, or None (r.bad set) when it is not UTF-8, or empty where proto3 would omit it
    (a member of a oneof is written even when empty: ``may_be_empty``)."""
    cdef Py_ssize_t n = pb_read_len(r)
    if r.bad or (n == 0 and not may_be_empty):
        r.bad = True
        return None
    try:
        s = (<const char*>r.p + r.pos)[:n].decode("utf-8")
    except UnicodeDecodeError:
        r.bad = True
        return None
    r.pos += n
    return s

cdef inline int64_t pb_read_int(PbIn* r, bint is32) noexcept nogil:
    """A non-zero int32/int64 (a written zero is not canonical)."""
    cdef uint64_t v = pb_read_varint(r)
    if v == 0:
        r.bad = True
    if is32:
        return <int64_t><int32_t><uint32_t>v
    return <int64_t>v


cdef tuple _read_fee_line(const unsigned char* p, Py_ssize_t n):
    """FeeLine {1 feedetl_sn, 2 code, 3 name, 4 unit_price_fen, 5 qty_milli, 6 fee_date} -> tuple or None."""
    cdef PbIn r
    cdef uint64_t key
    cdef int field, last = 0
    r.p, r.pos, r.end, r.bad = p, 0, n, False
    sn = code = name = ""
    cdef int64_t price = 0, qty = 0, fee_date = 0
    while r.pos < r.end and not r.bad:
        key = pb_read_varint(&r)
        field = <int>(key >> 3)
        if field <= last:
            return None
        last = field
        if field <= 3 and (key & 7) == WIRE_LEN:
            value = pb_read_str(&r)
            if field == 1:
                sn = value
            elif field == 2:
                code = value
            else:
                name = value
        elif 4 <= field <= 6 and (key & 7) == WIRE_VARINT:
            if field == 4:
                price = pb_read_int(&r, False)
            elif field == 5:
                qty = pb_read_int(&r, False)
            else:
                fee_date = pb_read_int(&r, True)
        else:
            return None
    if r.bad:
        return None
    return (sn, code, name, price, qty, fee_date)


def read_outpatient_request(const unsigned char[::1] raw):
    """OutpatientSettleRequest -> (request_id, psn_no, certno, fixmedins_code, setl_date,
    (card_no, card_version) | None, [fee line tuples]), or None: parse it with the generated class."""
    cdef PbIn r, c
    cdef uint64_t key
    cdef int field, last = 0
    cdef Py_ssize_t n
    r.p, r.pos, r.end, r.bad = &raw[0] if raw.shape[0] else NULL, 0, raw.shape[0], False
    request_id = psn_no = certno = fixmedins_code = ""
    cdef int64_t setl_date = 0
    cdef bint person = False
    card = None
    lines = []
    while r.pos < r.end and not r.bad:
        key = pb_read_varint(&r)
        field = <int>(key >> 3)
        if field < last or (field == last and field != 7):
            return None
        last = field
        if field in (1, 2, 3, 4) and (key & 7) == WIRE_LEN:
            value = pb_read_str(&r, field == 2 or field == 3)
            if field == 1:
                request_id = value
            elif field == 4:
                fixmedins_code = value
            elif person:         # both members of the oneof on the wire: let upb decide which one stands
                return None
            else:
                person = True
                if field == 2:
                    psn_no = value
                else:
                    certno = value
        elif field == 5 and (key & 7) == WIRE_VARINT:
            setl_date = pb_read_int(&r, True)
        elif field in (6, 7) and (key & 7) == WIRE_LEN:
            n = pb_read_len(&r)
            if r.bad:
                return None
            if field == 6:
                card = _read_card(r.p + r.pos, n)
                if card is None:
                    return None
            else:
                line = _read_fee_line(r.p + r.pos, n)
                if line is None:
                    return None
                lines.append(line)
            r.pos += n
        else:
            return None
    if r.bad:
        return None
    return (request_id, psn_no, certno, fixmedins_code, setl_date, card, lines)


cdef tuple _read_card(const unsigned char* p, Py_ssize_t n):
    """Card {1 card_no, 2 card_version} -> (card_no, card_version), or None; an empty card is present but blank."""
    cdef PbIn r
    cdef uint64_t key
    cdef int field, last = 0
    r.p, r.pos, r.end, r.bad = p, 0, n, False
    card_no = card_version = ""
    while r.pos < r.end and not r.bad:
        key = pb_read_varint(&r)
        field = <int>(key >> 3)
        if field <= last or field > 2 or (key & 7) != WIRE_LEN:
            return None
        last = field
        if field == 1:
            card_no = pb_read_str(&r)
        else:
            card_version = pb_read_str(&r)
    if r.bad:
        return None
    return (card_no, card_version)


def read_settle_item(const unsigned char[::1] raw):
    """SettleItem {oneof settle: 1 outpatient, 2 discharge, 3 admit, 4 fees} -> (field, the inner request bytes), or None."""
    cdef PbIn r
    cdef uint64_t key
    cdef Py_ssize_t n
    r.p, r.pos, r.end, r.bad = &raw[0] if raw.shape[0] else NULL, 0, raw.shape[0], False
    if r.end == 0:
        return None
    key = pb_read_varint(&r)
    if (key & 7) != WIRE_LEN or (key >> 3) not in (1, 2, 3, 4):
        return None
    n = pb_read_len(&r)
    if r.bad or r.pos + n != r.end:
        return None
    return (<int>(key >> 3), bytes(raw[r.pos:r.pos + n]))


def read_batch_items(const unsigned char[::1] raw):
    """SettleBatchRequest {repeated SettleItem items = 1} -> [each item's bytes], or None."""
    cdef PbIn r
    cdef uint64_t key
    cdef Py_ssize_t n
    r.p, r.pos, r.end, r.bad = &raw[0] if raw.shape[0] else NULL, 0, raw.shape[0], False
    items = []
    while r.pos < r.end:
        key = pb_read_varint(&r)
        if r.bad or key != ((1 << 3) | WIRE_LEN):
            return None
        n = pb_read_len(&r)
        if r.bad:
            return None
        items.append(bytes(raw[r.pos:r.pos + n]))
        r.pos += n
    return items
