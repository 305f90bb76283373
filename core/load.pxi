# Row validation (SPEC §3) shared by the JSONL loader and the runtime
# put_person / put_filing calls, and the JSONL loader itself.
#
# Validators raise YidiError (reason code + Chinese message); the loader turns
# the first one into LoadError(file, line, reason).  Nothing is written to the
# store until a row has passed every check.

import os
import orjson

cdef object _MISSING = object()


# A validated row, its strings borrowed from the row's str objects (UTF-8,
# valid while the row lives); field names as in Person / Filing.
ctypedef struct PersonIn:
    const char* psn_no
    const char* certno
    const char* name
    const char* card_no
    Py_ssize_t psn_no_n
    Py_ssize_t certno_n
    Py_ssize_t name_n
    Py_ssize_t card_no_n
    uint32_t insuplc_admdvs
    int insutype
    int person_type
    int status
    int assistance
    int card_version_idx

ctypedef struct FilingIn:
    const char* filing_id
    Py_ssize_t filing_id_n
    int32_t person_idx
    int kind
    int status
    uint32_t dest_admdvs
    uint32_t valid_from
    uint32_t valid_to
    int n_fixmedins_codes


# ---------------------------------------------------------------- field helpers
cdef object _field(dict row, str key):
    v = row.get(key, _MISSING)
    if v is _MISSING or v is None:
        raise YidiError("INVALID_ARGUMENT", what=f"字段 {key}", problem="缺失（必填）", field=key)
    return v

cdef const char* _id_field(dict row, str key, Py_ssize_t* n) except NULL:
    return _id_of(_field(row, key), None, "INVALID_CODE", key, n)

cdef const char* _name_field(dict row, str key, Py_ssize_t* n) except NULL:
    return _name_of(_field(row, key), None, True, key, n)

cdef int64_t _int_of(object v, str key, int64_t lo, int64_t hi, str reason) except? -1:
    if type(v) is not int:
        raise YidiError("INVALID_ARGUMENT", what=f"字段 {key}", problem="必须是整数", field=key)
    if v < lo or v > hi:
        raise YidiError(reason, what=f"字段 {key} 取值 {v}", problem=f"超出范围 {lo}–{hi}", field=key)
    return <int64_t>v

cdef int64_t _int_field(dict row, str key, int64_t lo, int64_t hi, str reason) except? -1:
    return _int_of(_field(row, key), key, lo, hi, reason)

cdef int64_t _date_field(dict row, str key) except -1:
    return _date_of(_field(row, key), None, key)

cdef int _enum_field(dict row, str key, tuple values) except -1:
    v = _field(row, key)
    if type(v) is not str:
        raise YidiError("INVALID_ENUM", what=f"字段 {key}", problem="必须是字符串", field=key)
    try:
        return values.index(v)
    except ValueError:
        raise YidiError("INVALID_ENUM", what=f"字段 {key} 的取值 {v!r}", problem=f"无效，应为：{'、'.join(values)}",
                        field=key) from None

cdef bint _bool_field(dict row, str key) except -1:
    v = _field(row, key)
    if type(v) is not bool:
        raise YidiError("INVALID_ARGUMENT", what=f"字段 {key}", problem="必须是 true 或 false", field=key)
    return v is True

cdef uint32_t _admdvs_of(object v, str key) except 0:
    cdef Py_ssize_t n
    cdef const char* p
    if type(v) is not str:
        raise YidiError("INVALID_CODE", what=f"字段 {key}", problem="必须是 6 位行政区划代码字符串", field=key)
    p = PyUnicode_AsUTF8AndSize(v, &n)
    if not admdvs_ok(p, n):
        raise YidiError("INVALID_CODE", what=f"字段 {key} 的取值 {v!r}", problem="不是 6 位行政区划代码", field=key)
    return <uint32_t>int(v)

cdef uint32_t _admdvs_field(dict row, str key) except 0:
    return _admdvs_of(_field(row, key), key)


# ---------------------------------------------------------------- persons
cdef int _check_person(Index self, dict row, PersonIn* o) except -1:
    cdef Py_ssize_t vn
    cdef const char* vp
    o.psn_no = _id_field(row, "psn_no", &o.psn_no_n)
    v = _field(row, "certno")
    o.certno = _str_of(v, "certno", &o.certno_n)
    if not certno_ok(o.certno, o.certno_n):
        raise YidiError("INVALID_CERTNO", what="身份证号码", problem="无效：须为 18 位，末位为 GB 11643 校验码（0–9 或 X）",
                        field="certno")
    o.name = _name_field(row, "name", &o.name_n)
    o.insuplc_admdvs = _admdvs_field(row, "insuplc_admdvs")
    o.insutype = _enum_field(row, "insutype", INSUTYPES)
    o.person_type = _enum_field(row, "person_type", PERSON_TYPES)
    o.status = _enum_field(row, "status", PERSON_STATUSES)
    o.assistance = _bool_field(row, "assistance")
    o.card_no = _id_field(row, "card_no", &o.card_no_n)
    cv = _field(row, "card_version")
    vp = _str_of(cv, "card_version", &vn)
    if not id_ok(vp, vn) or vn > MAX_CARD_VERSION_LEN:
        raise YidiError("INVALID_ARGUMENT", what="字段 card_version", problem=f"须为 1–{MAX_CARD_VERSION_LEN} 位可打印字符",
                        field="card_version")
    o.card_version_idx = _card_version_idx(self, cv, False)
    return 0

cdef int _card_version_idx(Index self, str version, bint intern) except -2:
    """The interned index of a card_version; a new one is interned only when a person is stored
    (intern), so that rows that are only checked, or refused, cannot use up MAX_CARD_VERSIONS.
    Returns -1 for a new version not interned."""
    idx = self._card_version_idx.get(version)
    if idx is not None:
        return idx
    if len(self._card_versions) >= MAX_CARD_VERSIONS:
        raise YidiError("INVALID_ARGUMENT", what="医保卡版本", problem=f"种类过多（最多 {MAX_CARD_VERSIONS} 种）", field="card_version")
    if not intern:
        return -1
    self._card_versions.append(version)
    self._card_version_idx[version] = len(self._card_versions) - 1
    return len(self._card_versions) - 1

cdef int _store_person_strings(Store* st, Person* p, PersonIn* o) except -1:
    p.psn_no_off = arena_put(st, o.psn_no, o.psn_no_n); p.psn_no_len = <uint8_t>o.psn_no_n
    p.certno_off = arena_put(st, o.certno, o.certno_n); p.certno_len = <uint8_t>o.certno_n
    p.name_off = arena_put(st, o.name, o.name_n); p.name_len = <uint16_t>o.name_n
    p.card_no_off = arena_put(st, o.card_no, o.card_no_n); p.card_no_len = <uint8_t>o.card_no_n
    return 0

cdef inline void _set_person_attrs(Person* p, PersonIn* o) noexcept nogil:
    p.insuplc_admdvs = o.insuplc_admdvs
    p.insutype = <uint8_t>o.insutype
    p.person_type = <uint8_t>o.person_type
    p.status = <uint8_t>o.status
    p.assistance = <uint8_t>o.assistance
    p.card_version_idx = <uint8_t>o.card_version_idx

cdef int _check_person_conflicts(Index self, PersonIn* o, bint certno_may_change,
                                 int32_t* by_psn_no, int32_t* by_certno) except -1:
    """PERSON_CONFLICT unless the row names one person: its certno is registered under no
    other psn_no and (unless certno_may_change) its psn_no under no other certno.

    The one conflict rule for the loader, put_person and check_person_conflicts.
    Sets the rows that hold the row's psn_no and certno (-1 = none).
    """
    cdef Store* st = &self.st
    by_psn_no[0] = tbl_find(st, &st.t_psn, T_PSN, fnv1a(o.psn_no, o.psn_no_n, 0), o.psn_no, o.psn_no_n, 0)
    by_certno[0] = tbl_find(st, &st.t_cert, T_CERT, fnv1a(o.certno, o.certno_n, 0), o.certno, o.certno_n, 0)
    if by_certno[0] == by_psn_no[0]:
        return 0
    if by_psn_no[0] >= 0 and not certno_may_change:
        raise YidiError("PERSON_CONFLICT", problem="人员编号已登记了另一个身份证号",
                        psn_no=(o.psn_no)[:o.psn_no_n].decode("ascii"))
    if by_certno[0] >= 0:
        raise YidiError("PERSON_CONFLICT", problem="该身份证号已登记在另一个人员编号下",
                        psn_no=(o.psn_no)[:o.psn_no_n].decode("ascii"))
    return 0

cdef int _update_person(Store* st, int32_t idx, PersonIn* o, bint certno_changed) except -1:
    cdef Person* p = &st.persons[idx]
    if certno_changed:      # move the person in the certno table
        tbl_remove(st, &st.t_cert, T_CERT, key_hash(st, T_CERT, idx), idx)
        p.certno_off = arena_put(st, o.certno, o.certno_n); p.certno_len = <uint8_t>o.certno_n
        tbl_insert(st, &st.t_cert, T_CERT, fnv1a(o.certno, o.certno_n, 0), idx)
    p.name_off = arena_put(st, o.name, o.name_n); p.name_len = <uint16_t>o.name_n
    p.card_no_off = arena_put(st, o.card_no, o.card_no_n); p.card_no_len = <uint8_t>o.card_no_n
    _set_person_attrs(p, o)
    return 0

cdef int32_t _insert_person(Store* st, PersonIn* o) except -2:
    cdef int32_t idx = <int32_t>st.n_persons
    cdef Person* p
    st.persons = <Person*>grow_array(st.persons, &st.cap_persons, st.n_persons + 1, sizeof(Person))
    p = &st.persons[idx]
    memset(p, 0, sizeof(Person))
    _store_person_strings(st, p, o)
    _set_person_attrs(p, o)
    p.first_filing_idx = -1
    p.first_acc_idx = -1
    tbl_insert(st, &st.t_psn, T_PSN, fnv1a(o.psn_no, o.psn_no_n, 0), idx)
    tbl_insert(st, &st.t_cert, T_CERT, fnv1a(o.certno, o.certno_n, 0), idx)
    st.n_persons += 1
    return idx

cdef int32_t _put_person(Index self, dict row, bint replace) except -2:
    """Insert or (if replace) update a person; returns its row index.

    The loader (replace False) refuses a psn_no seen before.  At runtime
    (replace True) the row is an event the engine has already decided, which
    may correct the person's certno; a certno that is someone else's is still
    refused.
    """
    cdef PersonIn o
    cdef int32_t idx, other
    _check_person(self, row, &o)
    _check_person_conflicts(self, &o, replace, &idx, &other)
    if idx >= 0 and not replace:
        raise YidiError("PERSON_CONFLICT", problem=f"人员编号 {row['psn_no']} 重复", psn_no=row["psn_no"])
    if o.card_version_idx < 0:
        o.card_version_idx = _card_version_idx(self, row["card_version"], True)
    extras = _person_extras(row)
    if idx >= 0:
        _update_person(&self.st, idx, &o, other < 0)
    else:
        idx = _insert_person(&self.st, &o)
    _set_person_extras(&self.st, &self.st.persons[idx], row, extras)
    return idx


# ---------------------------------------------------------------- SPEC §10 person fields (all optional)
cdef str _codes_field(dict row, str key, int most, str what):
    """An optional list of identifiers (absent: None), joined by single spaces; no duplicates."""
    cdef Py_ssize_t n
    v = row.get(key)
    if v is None:
        return None
    if type(v) is not list:
        raise YidiError("INVALID_ARGUMENT", what=f"字段 {key}", problem=f"必须是{what}数组", field=key)
    if len(v) > most:
        raise YidiError("INVALID_ARGUMENT", what=f"字段 {key}", problem=f"最多 {most} 项", field=key)
    for c in v:
        _id_of(c, what, "INVALID_CODE", key, &n)
    if len(set(v)) != len(v):
        raise YidiError("INVALID_ARGUMENT", what=f"字段 {key}", problem="有重复项", field=key)
    return " ".join(v)

cdef tuple _person_extras(dict row):
    """(acct_balance_fen or None, mulaid joined or None, chronic joined or None), validated; None = absent."""
    bal = row.get("acct_balance_fen")
    if bal is not None:
        _int_of(bal, "acct_balance_fen", 0, MAX_POLICY_FEN, "INVALID_AMOUNT")
    mulaid = _codes_field(row, "mulaid_psn_nos", MAX_MULAID, "共济人员编号")
    if mulaid is not None and row.get("psn_no") in mulaid.split(" "):
        raise YidiError("INVALID_ARGUMENT", what="共济人员（mulaid_psn_nos）", problem="不能包含本人", field="mulaid_psn_nos")
    return (bal, mulaid, _codes_field(row, "chronic_diseases", MAX_CHRONIC, "慢特病病种编码"))

cdef int _set_person_extras(Store* st, Person* p, dict row, tuple extras) except -1:
    """Store the fields a row gives; a row without them (a person filed by RPC) keeps what the person had."""
    cdef Py_ssize_t n
    cdef const char* c
    bal, mulaid, chronic = extras
    if bal is not None:
        p.acct_balance_fen = bal
    if mulaid is not None:
        c = PyUnicode_AsUTF8AndSize(mulaid, &n)
        p.mulaid_off = arena_put(st, c, n) if n else 0
        p.mulaid_len = <uint16_t>n
    if chronic is not None:
        c = PyUnicode_AsUTF8AndSize(chronic, &n)
        p.chronic_off = arena_put(st, c, n) if n else 0
        p.chronic_len = <uint16_t>n
    return 0

cdef list _arena_codes(Store* st, uint32_t off, uint16_t n):
    return (st.arena + off)[:n].decode("ascii").split(" ") if n else []

cdef int _check_mulaid(Index self, list rows) except -1:
    """After persons.jsonl: every family account named is a known person of the same pooling region."""
    cdef Store* st = &self.st
    cdef int32_t pi, fi
    for lineno, psn_no in rows:
        pi = _person_idx(self, psn_no)
        for other in _arena_codes(st, st.persons[pi].mulaid_off, st.persons[pi].mulaid_len):
            fi = _person_idx(self, other)
            if fi < 0:
                raise LoadError("persons.jsonl", lineno, f"REFERENCE_DATA_INVALID: 共济人员 {other} 不在人员数据中")
            if pooling_of(st.persons[fi].insuplc_admdvs) != pooling_of(st.persons[pi].insuplc_admdvs):
                raise LoadError("persons.jsonl", lineno,
                                f"REFERENCE_DATA_INVALID: 共济人员 {other} 与本人不属于同一统筹区")
    return 0


# ---------------------------------------------------------------- filings
cdef str _check_filing(Index self, dict row, FilingIn* o, object person=None):
    """Validate a filing row; returns its fixmedins_codes joined by spaces."""
    cdef Py_ssize_t n, psn_n
    cdef const char* psn_p
    cdef Store* st = &self.st
    cdef int64_t vf, vt
    o.filing_id = _id_field(row, "filing_id", &o.filing_id_n)
    psn_p = _id_field(row, "psn_no", &psn_n)
    o.kind = _enum_field(row, "kind", FILING_KINDS)
    o.dest_admdvs = _admdvs_field(row, "dest_admdvs")
    if o.dest_admdvs not in self._regions:
        raise YidiError("INVALID_CODE", what=f"备案就医地（dest_admdvs）{row['dest_admdvs']}", problem="不是已知的行政区划",
                        field="dest_admdvs")
    codes = _field(row, "fixmedins_codes")
    if type(codes) is not list:
        raise YidiError("INVALID_ARGUMENT", what="字段 fixmedins_codes", problem="必须是机构编码数组", field="fixmedins_codes")
    if len(codes) > MAX_FILING_CODES:
        raise YidiError("INVALID_ARGUMENT", what="备案指定机构", problem=f"最多 {MAX_FILING_CODES} 家", field="fixmedins_codes")
    for c in codes:
        _id_of(c, "备案指定机构编码", "INVALID_CODE", "fixmedins_codes", &n)
    vf = _date_field(row, "valid_from")
    v = _field(row, "valid_to")
    if v == 0 and type(v) is int:
        vt = 0
        if not kind_is_long_term(o.kind):
            raise YidiError("INVALID_DATE", what=f"临时外出就医备案（{KIND_NAMES_ZH[o.kind]}）", problem="必须有截止日期",
                            field="valid_to")
    else:
        vt = _date_field(row, "valid_to")
        if vt < vf:
            raise YidiError("INVALID_DATE", what="备案截止日期", problem="早于开始日期", field="valid_to")
        if not kind_is_long_term(o.kind) and day_number(vt) - day_number(vf) + 1 > MAX_TEMPORARY_FILING_DAYS:
            raise YidiError("INVALID_DATE", what="临时外出就医备案有效期",
                            problem=f"最长 {MAX_TEMPORARY_FILING_DAYS} 天", field="valid_to")
    o.status = _enum_field(row, "status", FILING_STATUSES)
    o.valid_from = <uint32_t>vf
    o.valid_to = <uint32_t>vt
    o.n_fixmedins_codes = len(codes)
    o.person_idx = tbl_find(st, &st.t_psn, T_PSN, fnv1a(psn_p, psn_n, 0), psn_p, psn_n, 0)
    if o.person_idx < 0 and not (type(person) is dict and person.get("psn_no") == row["psn_no"]):
        raise YidiError("PERSON_NOT_FOUND", psn_no=row["psn_no"])   # a filing's person is registered first
    return " ".join(codes)

cdef int32_t _put_filing(Index self, dict row, bint replace) except -2:
    cdef FilingIn o
    cdef Store* st = &self.st
    cdef Filing* f
    cdef int32_t idx
    cdef uint64_t h
    cdef Py_ssize_t cn
    cdef const char* cp
    codes = _check_filing(self, row, &o, None)
    h = fnv1a(o.filing_id, o.filing_id_n, 0)
    idx = tbl_find(st, &st.t_filing, T_FILING, h, o.filing_id, o.filing_id_n, 0)
    if idx >= 0:
        if not replace:
            raise YidiError("FILING_CONFLICT", filing_id=row["filing_id"], problem="重复")
        if st.filings[idx].person_idx != o.person_idx:
            raise YidiError("FILING_CONFLICT", filing_id=row["filing_id"], problem="已属于另一参保人，不能改挂")
    else:
        st.filings = <Filing*>grow_array(st.filings, &st.cap_filings, st.n_filings + 1, sizeof(Filing))
        idx = <int32_t>st.n_filings
        f = &st.filings[idx]
        f.filing_id_off = arena_put(st, o.filing_id, o.filing_id_n)
        f.filing_id_len = <uint8_t>o.filing_id_n
        f.person_idx = o.person_idx
        f.next_filing_idx = st.persons[o.person_idx].first_filing_idx
        person_set_first_filing(st, o.person_idx, idx)
        tbl_insert(st, &st.t_filing, T_FILING, h, idx)
        st.n_filings += 1
    f = &st.filings[idx]
    cp = PyUnicode_AsUTF8AndSize(codes, &cn)     # fits its uint16 length: see the field widths in index.pxi
    f.fixmedins_codes_off = arena_put(st, cp, cn) if cn else 0
    f.fixmedins_codes_len = <uint16_t>cn
    f.n_fixmedins_codes = <uint8_t>o.n_fixmedins_codes
    f.kind = <uint8_t>o.kind
    f.status = <uint8_t>o.status
    f.dest_admdvs = o.dest_admdvs
    f.valid_from = o.valid_from
    f.valid_to = o.valid_to
    return idx


# ---------------------------------------------------------------- regions, institutions, catalogue
cdef int _put_region(Index self, dict row) except -1:
    cdef Py_ssize_t n
    code = _admdvs_field(row, "admdvs")
    _name_field(row, "name", &n)
    if code in self._regions:
        raise YidiError("INVALID_CODE", what=f"行政区划 {row['admdvs']}", problem="重复", field="admdvs")
    self._regions[code] = row["name"]
    return 0

cdef int _put_institution(Index self, dict row) except -1:
    cdef Store* st = &self.st
    cdef Py_ssize_t cn, nn
    cdef const char* cp = _id_field(row, "fixmedins_code", &cn)
    cdef const char* np = _name_field(row, "name", &nn)
    cdef uint32_t adm = _admdvs_field(row, "admdvs")
    cdef int kind = _enum_field(row, "kind", INSTITUTION_KINDS)
    cdef int level = _int_field(row, "level", 1, N_LEVELS - 1, "INVALID_ENUM")
    cdef bint ip = _bool_field(row, "inpatient")
    cdef bint op = _bool_field(row, "outpatient")
    cdef uint64_t h = fnv1a(cp, cn, 0)
    cdef Institution* it
    if kind == IKIND_PHARMACY and ip:
        raise YidiError("INVALID_ARGUMENT", what="药店", problem="只能开通门诊（购药）直接结算，inpatient 必须为 false",
                        field="inpatient")
    if tbl_find(st, &st.t_inst, T_INST, h, cp, cn, 0) >= 0:
        raise YidiError("INVALID_CODE", what=f"机构编码 {row['fixmedins_code']}", problem="重复", field="fixmedins_code")
    st.insts = <Institution*>grow_array(st.insts, &st.cap_insts, st.n_insts + 1, sizeof(Institution))
    it = &st.insts[st.n_insts]
    it.fixmedins_code_off = arena_put(st, cp, cn); it.fixmedins_code_len = <uint8_t>cn
    it.name_off = arena_put(st, np, nn); it.name_len = <uint16_t>nn
    it.admdvs = adm
    it.kind = <uint8_t>kind
    it.level = <uint8_t>level
    it.inpatient = ip
    it.outpatient = op
    chronic = _codes_field(row, "chronic_diseases", MAX_CHRONIC, "慢特病病种编码")
    it.chronic_off = it.chronic_len = 0
    if chronic:
        cp = PyUnicode_AsUTF8AndSize(chronic, &cn)
        it.chronic_off = arena_put(st, cp, cn)
        it.chronic_len = <uint16_t>cn
    tbl_insert(st, &st.t_inst, T_INST, h, <int32_t>st.n_insts)
    st.n_insts += 1
    return 0

cdef int _put_item(Index self, dict row) except -1:
    cdef Store* st = &self.st
    cdef uint32_t prov = _admdvs_field(row, "province")
    cdef Py_ssize_t cn, nn
    cdef const char* cp = _id_field(row, "code", &cn)
    cdef const char* np = _name_field(row, "name", &nn)
    cdef int cat = _enum_field(row, "category", CATEGORIES)
    cdef int cls = _enum_field(row, "class", CLASSES)
    cdef int64_t selfpay = _int_field(row, "selfpay_bp", 0, BP_ONE, "INVALID_ARGUMENT")
    cdef int64_t cap = _int_field(row, "price_cap_fen", 0, MAX_UNIT_PRICE_FEN, "INVALID_PRICE")
    cdef uint64_t h = item_hash(cp, cn, prov)
    cdef CatalogItem* it
    if prov % 10000 != 0:
        raise YidiError("INVALID_CODE", what=f"目录所属省份 {row['province']}", problem="须为省级代码（以 0000 结尾）",
                        field="province")
    if tbl_find(st, &st.t_item, T_ITEM, h, cp, cn, prov) >= 0:
        raise YidiError("INVALID_CODE", what=f"目录项目 {row['code']}", problem=f"在省份 {row['province']} 重复", field="code")
    st.items = <CatalogItem*>grow_array(st.items, &st.cap_items, st.n_items + 1, sizeof(CatalogItem))
    it = &st.items[st.n_items]
    it.province_admdvs = prov
    it.code_off = arena_put(st, cp, cn); it.code_len = <uint8_t>cn
    it.name_off = arena_put(st, np, nn); it.name_len = <uint16_t>nn
    it.category = <uint8_t>cat
    it.item_class = <uint8_t>cls
    it.selfpay_bp = <uint16_t>selfpay
    it.price_cap_fen = cap
    tbl_insert(st, &st.t_item, T_ITEM, h, <int32_t>st.n_items)
    st.n_items += 1
    return 0


# ---------------------------------------------------------------- JSONL files
cdef int64_t _count_lines(str path) except -1:
    cdef int64_t n = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            n += chunk.count(b"\n")
    return n + 1

cdef int _load_file(Index self, str dirpath, str name, int which, object progress, bint required) except -1:
    """Load one JSONL file; the first bad row raises LoadError(name, line, reason)."""
    cdef int64_t lineno = 0, rows = 0, expected
    cdef dict row
    cdef Store* st = &self.st
    cdef list mulaid_rows = []
    path = os.path.join(dirpath, name)
    if not os.path.exists(path):
        if required:
            raise LoadError(name, 0, "文件不存在")
        return 0
    table = name[:len(name) - 6]
    expected = _count_lines(path)
    if which == 4:      # persons: size the arrays and tables once
        st.persons = <Person*>grow_array(st.persons, &st.cap_persons, expected, sizeof(Person))
        tbl_init(&st.t_psn, T_PSN, expected)
        tbl_init(&st.t_cert, T_CERT, expected)
    elif which == 5:
        st.filings = <Filing*>grow_array(st.filings, &st.cap_filings, expected, sizeof(Filing))
        tbl_init(&st.t_filing, T_FILING, expected)
    with open(path, "rb") as f:
        for line in f:
            lineno += 1
            if not line.strip():
                continue
            try:
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise YidiError("INVALID_ARGUMENT", what="这一行", problem=f"不是有效的 JSON：{e}")
                if type(obj) is not dict:
                    raise YidiError("INVALID_ARGUMENT", what="这一行", problem="必须是一个 JSON 对象")
                row = <dict>obj
                if which == 0:
                    _put_region(self, row)
                elif which == 1:
                    _put_institution(self, row)
                elif which == 2:
                    _put_item(self, row)
                elif which == 3:
                    _put_policy(self, row)
                elif which == 6:
                    _put_voucher_key(self, row)
                elif which == 4:
                    _put_person(self, row, False)
                    if row.get("mulaid_psn_nos"):
                        mulaid_rows.append((lineno, row["psn_no"]))
                else:
                    _put_filing(self, row, False)
            except YidiError as e:
                raise LoadError(name, lineno, f"{e.reason}: {e.message}") from None
            rows += 1
            if progress is not None and rows % PROGRESS_EVERY_ROWS == 0:
                progress(table, rows)
    if mulaid_rows:
        _check_mulaid(self, mulaid_rows)
    if progress is not None:
        progress(table, rows)
    return 0

cdef int _shrink(Index self) except -1:
    """Give back the doubling slack of the arena after a bulk load."""
    cdef Store* st = &self.st
    cdef char* nb
    if st.arena_len and st.arena_cap > st.arena_len:
        nb = <char*>realloc(st.arena, st.arena_len)
        if nb != NULL:
            st.arena = nb
            st.arena_cap = st.arena_len
    return 0

cdef int _load_dir(Index self, str path, object progress) except -1:
    if self._loaded or self.st.n_persons or self._regions:
        raise RuntimeError("load_dir needs an empty Index")
    self._loaded = True
    if not os.path.isdir(path):
        raise LoadError(path, 0, "目录不存在")
    mpath = os.path.join(path, "manifest.json")
    if os.path.exists(mpath):
        with open(mpath, "rb") as f:
            try:
                meta = orjson.loads(f.read())
            except orjson.JSONDecodeError as e:
                raise LoadError("manifest.json", 1, f"REFERENCE_DATA_INVALID: 不是有效的 JSON：{e}") from None
        if type(meta) is not dict:
            raise LoadError("manifest.json", 1, "REFERENCE_DATA_INVALID: 必须是一个 JSON 对象")
        self._meta = meta
    for which, name in enumerate(("regions.jsonl", "institutions.jsonl", "catalog.jsonl",
                                   "policies.jsonl", "persons.jsonl", "filings.jsonl")):
        _load_file(self, path, name, which, progress, True)
    _load_file(self, path, "voucher_keys.jsonl", 6, None, False)   # SPEC §10.5, optional
    _shrink(self)
    return 0
