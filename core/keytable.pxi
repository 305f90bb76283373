# The recent idempotency keys (gateway/store/idempotency.py) in two C arrays, no Python object per key, so the
# cyclic collector has nothing of them to walk.
#
# A key is named by a 128-bit hash of (caller, request_id) that the caller of the table computes.  The entries
# form a ring in arrival order: the oldest is at `head`, a new key goes after the newest, and when the ring is
# full the new key takes the oldest's place (constant-time FIFO eviction).  The hash table is linear probing
# over int32 entry numbers, at most half full, with backward-shift deletion (no tombstones), so a lookup or an
# eviction costs a few probes however many keys have gone through.

ctypedef struct KeyEntry:
    uint64_t hash_a             # the key's 128-bit hash, in two halves; hash_a & mask is its home slot
    uint64_t hash_b
    int64_t seq                 # the ledger record holding the answer
    uint8_t digest_len
    uint8_t digest[MAX_KEY_DIGEST_BYTES]   # the request digest (or the reversal marker) seen under the key


cdef class KeyTable:
    """At most ``capacity`` idempotency keys, each a 16-byte hash → (request digest of ≤ 32 bytes, seq); when
    full, a new key pushes out the oldest.  Storing a key already held changes its digest and seq and keeps its
    place in the order (as a dict does)."""

    cdef KeyEntry* _entries     # capacity entries; _count of them in use, the oldest at _head
    cdef int32_t* _slots        # entry number, or -1 (empty)
    cdef uint64_t _mask         # slots - 1 (slots: a power of two, at least twice the capacity)
    cdef int64_t _capacity
    cdef int64_t _count
    cdef int64_t _head

    def __cinit__(self, int64_t capacity):
        cdef uint64_t n = 2
        if not 1 <= capacity <= MAX_RECENT_KEYS:
            raise ValueError(f"a KeyTable holds 1..{MAX_RECENT_KEYS} keys, not {capacity}")
        while n < 2 * <uint64_t>capacity:
            n *= 2
        # calloc: the entries' pages are touched only as keys arrive
        self._entries = <KeyEntry*>calloc(capacity, sizeof(KeyEntry))
        self._slots = <int32_t*>malloc(n * sizeof(int32_t))
        if self._entries == NULL or self._slots == NULL:
            raise MemoryError()
        memset(self._slots, 0xFF, n * sizeof(int32_t))
        self._mask = n - 1
        self._capacity = capacity

    def __dealloc__(self):
        free(self._entries)
        free(self._slots)

    def __len__(self):
        return self._count

    @property
    def capacity(self):
        return self._capacity

    def memory_bytes(self):
        """C memory allocated for the entries and the slots (the entries' pages are resident once used)."""
        return self._capacity * sizeof(KeyEntry) + (self._mask + 1) * sizeof(int32_t)

    def get(self, bytes key_hash not None):
        """(digest, seq) stored under this hash, or None."""
        cdef uint64_t a, b
        cdef int64_t slot
        cdef KeyEntry* e
        _kt_split(key_hash, &a, &b)
        slot = self._find(a, b)
        if slot < 0:
            return None
        e = &self._entries[self._slots[slot]]
        return (<char*>e.digest)[:e.digest_len], e.seq

    def __contains__(self, bytes key_hash not None):
        cdef uint64_t a, b
        _kt_split(key_hash, &a, &b)
        return self._find(a, b) >= 0

    def put(self, bytes key_hash not None, bytes digest not None, int64_t seq):
        """Store (digest, seq) under this hash; a new key pushes out the oldest when the table is full."""
        cdef uint64_t a, b
        cdef int64_t slot
        cdef int32_t idx
        if len(digest) > MAX_KEY_DIGEST_BYTES:
            raise ValueError(f"a digest in a KeyTable has at most {MAX_KEY_DIGEST_BYTES} bytes, not {len(digest)}")
        _kt_split(key_hash, &a, &b)
        slot = self._find(a, b)
        if slot >= 0:
            _kt_fill(&self._entries[self._slots[slot]], a, b, digest, seq)
            return
        if self._count == self._capacity:
            self._remove_oldest()
        idx = <int32_t>((self._head + self._count) % self._capacity)
        _kt_fill(&self._entries[idx], a, b, digest, seq)
        slot = a & self._mask
        while self._slots[slot] >= 0:
            slot = (slot + 1) & self._mask
        self._slots[slot] = idx
        self._count += 1

    cdef int64_t _find(self, uint64_t a, uint64_t b) noexcept:
        """The slot holding this hash, or -1."""
        cdef uint64_t slot = a & self._mask
        cdef int32_t idx = self._slots[slot]
        while idx >= 0:
            if self._entries[idx].hash_a == a and self._entries[idx].hash_b == b:
                return <int64_t>slot
            slot = (slot + 1) & self._mask
            idx = self._slots[slot]
        return -1

    cdef int _remove_oldest(self) except -1:
        """Drop the entry at the head of the ring, and close the gap its slot leaves: each following entry of
        the probe run whose home slot is not between the gap and itself moves back into the gap."""
        cdef KeyEntry* e = &self._entries[self._head]
        cdef int64_t found = self._find(e.hash_a, e.hash_b)
        cdef uint64_t gap, j, home
        if found < 0:
            raise InvariantError("KeyTable: the oldest key is not in its hash table")
        gap = j = <uint64_t>found
        while True:
            j = (j + 1) & self._mask
            if self._slots[j] < 0:
                break
            home = self._entries[self._slots[j]].hash_a & self._mask
            if ((j - home) & self._mask) >= ((j - gap) & self._mask):
                self._slots[gap] = self._slots[j]
                gap = j
        self._slots[gap] = -1
        self._head = (self._head + 1) % self._capacity
        self._count -= 1
        return 0


cdef inline void _kt_split(bytes key_hash, uint64_t* a, uint64_t* b) except *:
    if len(key_hash) != KEY_HASH_BYTES:
        raise ValueError(f"a key hash has {KEY_HASH_BYTES} bytes, not {len(key_hash)}")
    memcpy(a, <char*>key_hash, 8)
    memcpy(b, (<char*>key_hash) + 8, 8)


cdef inline void _kt_fill(KeyEntry* e, uint64_t a, uint64_t b, bytes digest, int64_t seq) noexcept:
    e.hash_a = a
    e.hash_b = b
    e.seq = seq
    e.digest_len = <uint8_t>len(digest)
    memcpy(e.digest, <char*>digest, e.digest_len)
