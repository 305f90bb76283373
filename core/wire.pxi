# The protobuf wire format of the answers the core computes (protos/yidi/v1/common.proto), written
# straight from C structs: building the same answer as protobuf Python objects cost ~25 µs per
# settlement, writing it here ~1 µs.  The .proto files stay the contract: every field number and enum
# value used here comes from _wire_numbers.pxi, generated from their descriptors at build time, and
# tests/core/test_core_wire.py checks that these bytes equal what the generated classes serialize
# (deterministic), field by field.
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

cdef int pb_len(PbBuf* b, int field, const char* p, Py_ssize_t n) except -1:
    """A length-delimited field, written even when empty (a message that is present, a member of a oneof)."""
    pb_tag(b, field, WIRE_LEN)
    pb_raw_varint(b, <uint64_t>n)
    pb_reserve(b, n)
    if n:
        memcpy(b.data + b.len, p, n)
    b.len += n
    return 0

cdef int pb_bytes(PbBuf* b, int field, const char* p, Py_ssize_t n) except -1:
    """A string/bytes field; omitted when empty (proto3)."""
    if n == 0:
        return 0
    return pb_len(b, field, p, n)

cdef int pb_str(PbBuf* b, int field, str s) except -1:
    cdef Py_ssize_t n
    cdef const char* p = PyUnicode_AsUTF8AndSize(s, &n)
    return pb_bytes(b, field, p, n)

cdef inline int pb_message(PbBuf* b, int field, PbBuf* child) except -1:
    """A nested message, written even when empty: call it only when the parent must say it is present."""
    return pb_len(b, field, child.data, child.len)

cdef inline bytes pb_bytes_of(PbBuf* b):
    return b.data[:b.len] if b.len else b""


def length_delimited(int field, bytes payload not None):
    """``payload`` as a length-delimited field ``field`` (written even when empty): for nesting encoded bytes
    that must stay byte-identical, as a batch's outcomes nest each item's answer as it was sent."""
    cdef PbBuf b
    memset(&b, 0, sizeof(PbBuf))
    try:
        pb_len(&b, field, payload, len(payload))
        return pb_bytes_of(&b)
    finally:
        pb_free(&b)


# ---------------------------------------------------------------- reading requests
# A request the core decodes itself (OutpatientSettleRequest, SettleBatchRequest and its SettleItems)
# is read field by field into a named struct; anything unusual — an unknown field, fields out of
# order, a default value written out, a non-minimal varint, both members of a oneof, invalid UTF-8 —
# makes the reader answer None, and the caller parses the bytes with the generated classes instead.
# So what is read here is always exactly what upb would read, and when the reader accepts the bytes
# they are canonical: equal to the deterministic serialization, so the idempotency digest can be
# taken over them as they came (tests/core/test_core_wire.py checks both claims on random requests).

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


# What the readers answer: the message's fields by their proto names, in the core's own types.
class OutpatientRequestRead(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """An OutpatientSettleRequest as read by ``read_outpatient_request``."""

    request_id: str
    psn_no: str
    certno: str
    fixmedins_code: str
    setl_date: int
    card: object              # core.commands.Card, or None when the request has none
    lines: tuple              # of core.events.FeeLine, in request order
    acct_used_flag: bool
    acct_mulaid_flag: bool
    med_type: int             # a MedType value (0 when unset)
    dise_codg: str
    mdtrt_cert_type: str
    mdtrt_cert_no: str


class SettleItemRead(msgspec.Struct, frozen=True, gc=False):
    """A SettleItem as read by ``read_settle_item``: which member of its oneof (the member's SettleItem field
    number) and that member's bytes."""

    field: int
    request: bytes


# core.events.FeeLine and core.commands.Card, looked up on the first read: core.commands imports this module
# (through core.funds), so it cannot be imported while this one loads.
cdef object _FeeLine = None
cdef object _Card = None
cdef object _PersonId = None
cdef object _OutpatientCommand = None
cdef object _blake2b = None

cdef int _read_types() except -1:
    global _FeeLine, _Card, _PersonId, _OutpatientCommand, _blake2b
    from hashlib import blake2b
    from core.commands import Card, OutpatientSettle, PersonId
    from core.events import FeeLine
    _FeeLine, _Card, _PersonId, _OutpatientCommand, _blake2b = FeeLine, Card, PersonId, OutpatientSettle, blake2b
    return 0


@cython.final
@cython.no_gc
cdef class Wire:
    """A request the core read from wire bytes: its command (core.commands) and its idempotency digest; any other
    attribute is the command's (so the access rules and the audit see ``fixmedins_code``, ``person`` ... as on a
    protobuf message).  Its command holds no reference back to it: the collector never needs to see it."""

    cdef readonly object command
    cdef readonly bytes digest

    def __init__(self, command, bytes digest not None):
        self.command = command
        self.digest = digest

    def __getattr__(self, name):
        return getattr(self.command, name)


cdef Wire _wire(command, bytes digest):
    cdef Wire w = Wire.__new__(Wire)
    w.command = command
    w.digest = digest
    return w


cdef object _read_fee_line(const unsigned char* p, Py_ssize_t n):
    """FeeLine bytes -> core.events.FeeLine, or None."""
    cdef PbIn r
    cdef uint64_t key
    cdef uint64_t field, last = 0     # as sent (up to 61 bits): never truncated into one of ours
    r.p, r.pos, r.end, r.bad = p, 0, n, False
    sn = code = name = init_sn = ""
    cdef int64_t price = 0, qty = 0, fee_date = 0
    while r.pos < r.end and not r.bad:
        key = pb_read_varint(&r)
        field = key >> 3
        if field <= last:
            return None
        last = field
        if (key & 7) == WIRE_LEN:
            if field == FeeLine_feedetl_sn:
                sn = pb_read_str(&r)
            elif field == FeeLine_code:
                code = pb_read_str(&r)
            elif field == FeeLine_name:
                name = pb_read_str(&r)
            elif field == FeeLine_init_feedetl_sn:
                init_sn = pb_read_str(&r)
            else:
                return None
        elif (key & 7) == WIRE_VARINT:
            if field == FeeLine_unit_price_fen:
                price = pb_read_int(&r, False)
            elif field == FeeLine_qty_milli:
                qty = pb_read_int(&r, False)
            elif field == FeeLine_fee_date:
                fee_date = pb_read_int(&r, True)
            else:
                return None
        else:
            return None
    if r.bad:
        return None
    return _FeeLine(feedetl_sn=sn, code=code, name=name, unit_price_fen=price, qty_milli=qty, fee_date=fee_date,
                    init_feedetl_sn=init_sn)


def read_outpatient_request(const unsigned char[::1] raw):
    """OutpatientSettleRequest bytes -> OutpatientRequestRead, or None: parse them with the generated class.
    A field this reader does not know (a newer one) also gives None: never dropped."""
    return _read_outpatient(&raw[0] if raw.shape[0] else NULL, raw.shape[0], False)


def read_outpatient(const unsigned char[::1] raw):
    """OutpatientSettleRequest bytes -> a Wire (its OutpatientSettle and digest, made here) when they are canonical
    and name no credential and no medical type (the command is then exactly what the gateway would make of the
    decoded message); an OutpatientRequestRead when they are canonical but do (the gateway adds the credential's
    arrival minute and the medical type's name); None when they are not canonical (parse them with the generated
    class)."""
    return _read_outpatient(&raw[0] if raw.shape[0] else NULL, raw.shape[0], True)


cdef object _read_outpatient(const unsigned char* p, Py_ssize_t size, bint as_wire):
    """read_outpatient_request (``as_wire`` False) or read_outpatient (True) of ``size`` bytes at ``p``."""
    cdef PbIn r
    cdef uint64_t key
    cdef uint64_t field, last = 0     # as sent (up to 61 bits): never truncated into one of ours
    cdef Py_ssize_t n
    if _FeeLine is None:
        _read_types()
    r.p, r.pos, r.end, r.bad = p, 0, size, False
    request_id = psn_no = certno = fixmedins_code = dise_codg = cert_type = cert_no = ""
    cdef int64_t setl_date = 0, med_type = 0
    cdef bint person = False, acct_used = False, acct_mulaid = False
    card = None
    lines = []
    while r.pos < r.end and not r.bad:
        key = pb_read_varint(&r)
        field = key >> 3
        if field < last or (field == last and field != OutpatientSettleRequest_lines):
            return None
        last = field
        if (key & 7) == WIRE_LEN:
            if field == OutpatientSettleRequest_request_id:
                request_id = pb_read_str(&r)
            elif field == OutpatientSettleRequest_psn_no or field == OutpatientSettleRequest_certno:
                value = pb_read_str(&r, True)    # a member of a oneof is written even when empty
                if person:                       # both members of the oneof on the wire: let upb decide which stands
                    return None
                person = True
                if field == OutpatientSettleRequest_psn_no:
                    psn_no = value
                else:
                    certno = value
            elif field == OutpatientSettleRequest_fixmedins_code:
                fixmedins_code = pb_read_str(&r)
            elif field == OutpatientSettleRequest_card or field == OutpatientSettleRequest_lines:
                n = pb_read_len(&r)
                if r.bad:
                    return None
                if field == OutpatientSettleRequest_card:
                    card = _read_card(r.p + r.pos, n)
                    if card is None:
                        return None
                else:
                    line = _read_fee_line(r.p + r.pos, n)
                    if line is None:
                        return None
                    lines.append(line)
                r.pos += n
            elif field == OutpatientSettleRequest_dise_codg:
                dise_codg = pb_read_str(&r)
            elif field == OutpatientSettleRequest_mdtrt_cert_type:
                cert_type = pb_read_str(&r)
            elif field == OutpatientSettleRequest_mdtrt_cert_no:
                cert_no = pb_read_str(&r)
            else:
                return None
        elif (key & 7) == WIRE_VARINT:
            if field == OutpatientSettleRequest_setl_date:
                setl_date = pb_read_int(&r, True)
            elif field == OutpatientSettleRequest_acct_used_flag or field == OutpatientSettleRequest_acct_mulaid_flag:
                if pb_read_varint(&r) != 1:      # a bool true is written as 1; false is omitted (proto3)
                    return None
                if field == OutpatientSettleRequest_acct_used_flag:
                    acct_used = True
                else:
                    acct_mulaid = True
            elif field == OutpatientSettleRequest_med_type:
                med_type = pb_read_int(&r, True)
            else:
                return None
        else:
            return None
    if r.bad:
        return None
    if as_wire and not (med_type or cert_type or cert_no):
        # convert.outpatient_command's command (MED_TYPE "" and no credential); canonical bytes are the deterministic
        # serialization, so their hash is the digest request_digest would give
        command = _OutpatientCommand(
            request_id=request_id, person=_PersonId(psn_no, certno), fixmedins_code=fixmedins_code,
            setl_date=setl_date, lines=tuple(lines), card=card, acct_used_flag=acct_used,
            acct_mulaid_flag=acct_mulaid, dise_codg=dise_codg)
        return _wire(command, _blake2b((<const char*>p)[:size], digest_size=16).digest())
    return OutpatientRequestRead(
        request_id=request_id, psn_no=psn_no, certno=certno, fixmedins_code=fixmedins_code, setl_date=setl_date,
        card=card, lines=tuple(lines), acct_used_flag=acct_used, acct_mulaid_flag=acct_mulaid, med_type=med_type,
        dise_codg=dise_codg, mdtrt_cert_type=cert_type, mdtrt_cert_no=cert_no)


cdef object _read_card(const unsigned char* p, Py_ssize_t n):
    """Card bytes -> core.commands.Card, or None; an empty card is present but blank."""
    cdef PbIn r
    cdef uint64_t key
    cdef uint64_t field, last = 0     # as sent (up to 61 bits): never truncated into one of ours
    r.p, r.pos, r.end, r.bad = p, 0, n, False
    card_no = card_version = ""
    while r.pos < r.end and not r.bad:
        key = pb_read_varint(&r)
        field = key >> 3
        if field <= last or (key & 7) != WIRE_LEN:
            return None
        last = field
        if field == Card_card_no:
            card_no = pb_read_str(&r)
        elif field == Card_card_version:
            card_version = pb_read_str(&r)
        else:
            return None
    if r.bad:
        return None
    return _Card(card_no=card_no, card_version=card_version)


def read_settle_item(const unsigned char[::1] raw):
    """SettleItem bytes -> SettleItemRead (outpatient, discharge, admit or fees), or None."""
    cdef PbIn r
    cdef uint64_t key
    cdef Py_ssize_t n
    cdef uint64_t field
    r.p, r.pos, r.end, r.bad = &raw[0] if raw.shape[0] else NULL, 0, raw.shape[0], False
    if r.end == 0:
        return None
    key = pb_read_varint(&r)
    field = key >> 3
    if (key & 7) != WIRE_LEN or not (field == SettleItem_outpatient or field == SettleItem_discharge
                                     or field == SettleItem_admit or field == SettleItem_fees):
        return None
    n = pb_read_len(&r)
    if r.bad or r.pos + n != r.end:
        return None
    return SettleItemRead(field=field, request=bytes(raw[r.pos:r.pos + n]))


def read_outpatient_item(const unsigned char[::1] raw, method, answer_field):
    """SettleItem bytes -> (method, Wire, answer_field) when the item is an outpatient settlement read_outpatient
    makes a Wire of, else None (convert.settle_item reads it)."""
    if raw.shape[0] == 0:
        return None
    return _read_item(&raw[0], raw.shape[0], method, answer_field)


def read_batch(const unsigned char[::1] raw, method, answer_field):
    """SettleBatchRequest bytes -> each item, in order: (method, Wire, answer_field) for an outpatient settlement
    read whole here (read_outpatient_item), else the SettleItem's bytes; None when the batch itself is not
    canonical (then parse it with the generated class).  No protobuf object is made for an item read here."""
    cdef PbIn r
    cdef uint64_t key
    cdef Py_ssize_t n
    r.p, r.pos, r.end, r.bad = &raw[0] if raw.shape[0] else NULL, 0, raw.shape[0], False
    items = []
    while r.pos < r.end:
        key = pb_read_varint(&r)
        if r.bad or key != ((SettleBatchRequest_items << 3) | WIRE_LEN):
            return None
        n = pb_read_len(&r)
        if r.bad:
            return None
        item = _read_item(r.p + r.pos, n, method, answer_field) if n else None
        items.append(item if item is not None else (<const char*>r.p + r.pos)[:n])
        r.pos += n
    return items


cdef object _read_item(const unsigned char* p, Py_ssize_t size, method, answer_field):
    """read_outpatient_item of ``size`` (> 0) bytes at ``p``."""
    cdef PbIn r
    cdef Py_ssize_t n
    r.p, r.pos, r.end, r.bad = p, 0, size, False
    if pb_read_varint(&r) != ((SettleItem_outpatient << 3) | WIRE_LEN) or r.bad:
        return None
    n = pb_read_len(&r)
    if r.bad or r.pos + n != r.end:
        return None
    read = _read_outpatient(r.p + r.pos, n, True)
    if type(read) is not Wire:
        return None
    return (method, read, answer_field)


def read_batch_items(const unsigned char[::1] raw):
    """SettleBatchRequest {repeated SettleItem items} -> [each item's bytes], or None."""
    cdef PbIn r
    cdef uint64_t key
    cdef Py_ssize_t n
    r.p, r.pos, r.end, r.bad = &raw[0] if raw.shape[0] else NULL, 0, raw.shape[0], False
    items = []
    while r.pos < r.end:
        key = pb_read_varint(&r)
        if r.bad or key != ((SettleBatchRequest_items << 3) | WIRE_LEN):
            return None
        n = pb_read_len(&r)
        if r.bad:
            return None
        items.append(bytes(raw[r.pos:r.pos + n]))
        r.pos += n
    return items


cdef inline uint64_t _read_any_varint(PbIn* r) noexcept nogil:
    """A varint of at most ten bytes, minimal or not (r.bad set when it runs past the end or is longer)."""
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef unsigned char c
    while True:
        if r.pos >= r.end or shift > 63:
            r.bad = True
            return 0
        c = r.p[r.pos]
        r.pos += 1
        v |= <uint64_t>(c & 0x7F) << shift
        if c < 0x80:
            return v
        shift += 7


def count_field(const unsigned char[::1] raw, uint64_t field):
    """How many times a top-level length-delimited field (a message, string or bytes) occurs in protobuf bytes,
    every value skipped unread (a batch's items
    counted before any is decoded); -1 when the bytes are not well-formed at the top level or hold a group
    (then parse them with the generated class).  Non-minimal varints are accepted, as upb accepts them."""
    cdef PbIn r
    r.p, r.pos, r.end, r.bad = &raw[0] if raw.shape[0] else NULL, 0, raw.shape[0], False
    return _count_field(&r, field)


cdef Py_ssize_t _count_field(PbIn* r, uint64_t field) noexcept nogil:
    cdef uint64_t key, n
    cdef Py_ssize_t count = 0
    cdef int wire
    while r.pos < r.end:
        key = _read_any_varint(r)
        wire = key & 7
        if r.bad or key >> 3 == 0:
            return -1
        if wire == WIRE_VARINT:
            _read_any_varint(r)
            n = 0
        elif wire == 1 or wire == 5:              # fixed64, fixed32
            n = 8 if wire == 1 else 4
        elif wire == WIRE_LEN:
            n = _read_any_varint(r)
        else:                                     # groups (3, 4) and the unassigned 6, 7
            return -1
        if r.bad or n > <uint64_t>(r.end - r.pos):
            return -1
        r.pos += n
        if key == (field << 3 | WIRE_LEN):
            count += 1
    return count
