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
