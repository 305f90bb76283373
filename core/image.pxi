# A binary image of a freshly loaded Index: the packed C tables as they are in memory,
# so that start-up reads ~0.5 GB of arrays instead of parsing ~0.8 GB of JSON Lines.
#
# The image is a cache of the JSONL load, never a source of truth: it is
# written only from an Index loaded by load_dir (no runtime persons, filings or
# accumulators), carries the fingerprint of the directory it came from and the
# C layout it was written by, and is refused (the caller then parses the JSONL)
# on any difference or on a CRC-32 mismatch of any section.
#
# Layout: magic, version, then sections, each: u64 length, u32 crc32, bytes.
# Section order: header (msgpack), arena, persons, filings, institutions,
# catalogue, policies, then the five hash tables' slots, then the Python-side
# dictionaries (msgpack).

import zlib
import msgspec

cdef bytes IMAGE_MAGIC = b"YIDIIMG\x01"
# Bumped whenever a struct or table of index.pxi changes meaning (sizes are checked too).
cdef int IMAGE_LAYOUT_VERSION = 3   # 3: the persons' table's slots carry a PersonSlotExtra


def _image_layout():
    return [IMAGE_LAYOUT_VERSION, <int>sizeof(Person), <int>sizeof(Filing), <int>sizeof(Institution),
            <int>sizeof(CatalogItem), <int>sizeof(Policy), <int>sizeof(Slot), <int>sizeof(PersonSlotExtra),
            N_ACCUMULATORS]


cdef _write_section(f, const char* p, uint64_t n):
    data = b"" if n == 0 else (<const unsigned char[:n]> <const unsigned char*> p)
    f.write(n.to_bytes(8, "little"))
    f.write((zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little"))
    f.write(data)


cdef char* _read_section(f, uint64_t expected, str what) except? NULL:
    """A malloc'd buffer holding the next section (NULL for an empty one); ValueError on any mismatch."""
    cdef uint64_t n = int.from_bytes(f.read(8), "little")
    cdef unsigned int crc = int.from_bytes(f.read(4), "little")
    cdef char* buf
    cdef unsigned char[::1] view
    if n != expected:
        raise ValueError(f"index image: section {what} is {n} bytes, expected {expected}")
    if n == 0:
        if crc != (zlib.crc32(b"") & 0xFFFFFFFF):
            raise ValueError(f"index image: section {what} fails its checksum")
        return NULL
    buf = <char*>malloc(n)
    if buf == NULL:
        raise MemoryError()
    view = <unsigned char[:n]> <unsigned char*> buf
    try:
        if f.readinto(view) != n or (zlib.crc32(view) & 0xFFFFFFFF) != crc:
            raise ValueError(f"index image: section {what} is short or fails its checksum")
    except BaseException:
        free(buf)
        raise
    return buf


cdef bytes _read_blob(f, str what):
    cdef uint64_t n = int.from_bytes(f.read(8), "little")
    cdef unsigned int crc = int.from_bytes(f.read(4), "little")
    data = f.read(n)
    if len(data) != n or (zlib.crc32(data) & 0xFFFFFFFF) != crc:
        raise ValueError(f"index image: section {what} is short or fails its checksum")
    return data


cdef void _tables(Store* st, Table** out) noexcept:
    out[0] = &st.t_psn; out[1] = &st.t_cert; out[2] = &st.t_filing; out[3] = &st.t_inst; out[4] = &st.t_item


cdef int _save_image(Index self, str path, str fingerprint) except -1:
    cdef Store* st = &self.st
    cdef Table* tables[5]
    cdef int i
    _tables(st, tables)
    if st.n_accs:
        raise InvariantError("an index image is written only from a fresh load_dir, before any settlement")
    header = msgspec.msgpack.encode({
        "fingerprint": fingerprint, "layout": _image_layout(), "arena_len": st.arena_len,
        "n": [st.n_persons, st.n_filings, st.n_insts, st.n_items, st.n_policies],
        "tables": [[tables[i].mask, tables[i].count] for i in range(5)],
    })
    python_side = msgspec.msgpack.encode({
        "regions": [[k, v] for k, v in self._regions.items()],
        "policies": [[k[0], k[1], v] for k, v in self._policies.items()],
        "card_versions": self._card_versions, "meta": self._meta,
        "chronic": [[k, [[c, list(v)] for c, v in e.items()]] for k, e in self._chronic.items()],
        "voucher_keys": [[k, v] for k, v in self._voucher_keys.items()],
    })
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(IMAGE_MAGIC)
        _write_section(f, header, len(header))
        _write_section(f, st.arena, st.arena_len)
        _write_section(f, <char*>st.persons, st.n_persons * sizeof(Person))
        _write_section(f, <char*>st.filings, st.n_filings * sizeof(Filing))
        _write_section(f, <char*>st.insts, st.n_insts * sizeof(Institution))
        _write_section(f, <char*>st.items, st.n_items * sizeof(CatalogItem))
        _write_section(f, <char*>st.policies, st.n_policies * sizeof(Policy))
        for i in range(5):
            _write_section(f, <char*>tables[i].slots, tbl_bytes(tables[i]))
        _write_section(f, python_side, len(python_side))
    os.replace(tmp, path)
    return 0


cdef int _load_image(Index self, str path, str fingerprint) except -1:
    """Fill an empty Index from an image; ValueError (the Index left empty) if it is not the one wanted."""
    cdef Store* st = &self.st
    cdef Table* tables[5]
    cdef int i
    _tables(st, tables)
    if self._loaded or st.n_persons or self._regions:
        raise RuntimeError("load_image needs an empty Index")
    with open(path, "rb") as f:
        if f.read(8) != IMAGE_MAGIC:
            raise ValueError("index image: not an image (bad magic)")
        header = msgspec.msgpack.decode(_read_blob(f, "header"))
        if header["fingerprint"] != fingerprint:
            raise ValueError("index image: written from another data set (fingerprint differs)")
        if header["layout"] != _image_layout():
            raise ValueError("index image: written by another build of the core (layout differs)")
        n = header["n"]
        try:
            st.arena = _read_section(f, header["arena_len"], "arena")
            st.arena_len = st.arena_cap = header["arena_len"]
            st.persons = <Person*>_read_section(f, n[0] * sizeof(Person), "persons")
            st.n_persons = st.cap_persons = n[0]
            st.filings = <Filing*>_read_section(f, n[1] * sizeof(Filing), "filings")
            st.n_filings = st.cap_filings = n[1]
            st.insts = <Institution*>_read_section(f, n[2] * sizeof(Institution), "institutions")
            st.n_insts = st.cap_insts = n[2]
            st.items = <CatalogItem*>_read_section(f, n[3] * sizeof(CatalogItem), "catalogue")
            st.n_items = st.cap_items = n[3]
            st.policies = <Policy*>_read_section(f, n[4] * sizeof(Policy), "policies")
            st.n_policies = st.cap_policies = n[4]
            for i in range(5):
                mask, count = header["tables"][i]
                tables[i].slots = <Slot*>_read_section(f, ((mask + 1) << tbl_shift(i)) * sizeof(Slot), "table")
                tables[i].shift = tbl_shift(i)
                tables[i].mask = mask
                tables[i].count = count
            python_side = msgspec.msgpack.decode(_read_blob(f, "dictionaries"))
        except BaseException:
            store_free(st)
            raise
    self._regions = {k: v for k, v in python_side["regions"]}
    self._policies = {(a, b): [tuple(x) for x in v] for a, b, v in python_side["policies"]}
    self._card_versions = list(python_side["card_versions"])
    self._card_version_idx = {v: i for i, v in enumerate(self._card_versions)}
    self._meta = python_side["meta"]
    self._chronic = {k: {c: tuple(v) for c, v in e} for k, e in python_side["chronic"]}
    self._voucher_keys = {k: bytes(v) for k, v in python_side["voucher_keys"]}
    self._loaded = True
    if YIDI_DEBUG:
        self.check_invariants()
    return 0
