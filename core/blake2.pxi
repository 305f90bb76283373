# BLAKE2b (RFC 7693) with a key and an 8-byte digest, in C: the on-site sample hashes every settlement's setl_id
# with it (core/funds.py on_site_check), and hashlib's keyed BLAKE2b cost ~1 µs a call from the settle loop
# (a Python object and a key block each time).  tests/core/test_core_blake2.py checks it against hashlib.

cdef uint64_t[8] _B2_IV = [0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
                           0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179]
cdef uint8_t[12][16] _B2_SIGMA = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3]]

cdef enum:
    B2_BLOCK = 128
    B2_MAX_KEY = 64


cdef inline uint64_t _rotr64(uint64_t x, int n) noexcept nogil:
    return (x >> n) | (x << (64 - n))


cdef inline void _b2_g(uint64_t* v, int a, int b, int c, int d, uint64_t x, uint64_t y) noexcept nogil:
    v[a] = v[a] + v[b] + x
    v[d] = _rotr64(v[d] ^ v[a], 32)
    v[c] = v[c] + v[d]
    v[b] = _rotr64(v[b] ^ v[c], 24)
    v[a] = v[a] + v[b] + y
    v[d] = _rotr64(v[d] ^ v[a], 16)
    v[c] = v[c] + v[d]
    v[b] = _rotr64(v[b] ^ v[c], 63)


cdef void _b2_compress(uint64_t* h, const uint8_t* block, uint64_t t, bint last) noexcept nogil:
    cdef uint64_t[16] v
    cdef uint64_t[16] m
    cdef int i, j
    cdef const uint8_t* s
    for i in range(16):
        m[i] = 0
        for j in range(8):
            m[i] |= <uint64_t>block[8 * i + j] << (8 * j)     # little-endian words
    for i in range(8):
        v[i] = h[i]
        v[i + 8] = _B2_IV[i]
    v[12] ^= t
    if last:
        v[14] = ~v[14]
    for i in range(12):
        s = _B2_SIGMA[i]
        _b2_g(v, 0, 4, 8, 12, m[s[0]], m[s[1]])
        _b2_g(v, 1, 5, 9, 13, m[s[2]], m[s[3]])
        _b2_g(v, 2, 6, 10, 14, m[s[4]], m[s[5]])
        _b2_g(v, 3, 7, 11, 15, m[s[6]], m[s[7]])
        _b2_g(v, 0, 5, 10, 15, m[s[8]], m[s[9]])
        _b2_g(v, 1, 6, 11, 12, m[s[10]], m[s[11]])
        _b2_g(v, 2, 7, 8, 13, m[s[12]], m[s[13]])
        _b2_g(v, 3, 4, 9, 14, m[s[14]], m[s[15]])
    for i in range(8):
        h[i] ^= v[i] ^ v[i + 8]


cdef uint64_t _blake2b_64(const uint8_t* key, Py_ssize_t key_len, const uint8_t* msg, Py_ssize_t n) noexcept nogil:
    """The 8-byte keyed BLAKE2b digest of ``msg``, read as a big-endian number (``int.from_bytes(digest, "big")``).
    ``key_len`` is 1..64 (the caller checks)."""
    cdef uint64_t[8] h
    cdef uint8_t[B2_BLOCK] block
    cdef uint64_t t = B2_BLOCK
    cdef uint64_t out = 0
    cdef int i
    for i in range(8):
        h[i] = _B2_IV[i]
    h[0] ^= 0x01010000 ^ (<uint64_t>key_len << 8) ^ 8
    memset(block, 0, B2_BLOCK)
    memcpy(block, key, key_len)
    if n == 0:                                   # the key block is the last block
        _b2_compress(h, block, t, True)
    else:
        _b2_compress(h, block, t, False)
        while n > B2_BLOCK:
            t += B2_BLOCK
            _b2_compress(h, msg, t, False)
            msg += B2_BLOCK
            n -= B2_BLOCK
        memset(block, 0, B2_BLOCK)
        memcpy(block, msg, n)
        t += <uint64_t>n
        _b2_compress(h, block, t, True)
    for i in range(8):                           # the digest is h[0]'s little-endian bytes
        out = (out << 8) | ((h[0] >> (8 * i)) & 0xFF)
    return out


def blake2b_64(bytes key not None, bytes data not None):
    """``int.from_bytes(hashlib.blake2b(data, key=key, digest_size=8).digest(), "big")``, with a key of 1..64
    bytes."""
    if not 1 <= len(key) <= B2_MAX_KEY:
        raise ValueError("blake2b_64: the key must be 1 to 64 bytes")
    return _blake2b_64(<const uint8_t*><const char*>key, len(key), <const uint8_t*><const char*>data, len(data))
