# Eligibility (SPEC §4): checks 1..9 in order, one function each; the first failure is the answer,
# with a reason code and a message a counter clerk can read aloud.  Messages
# never contain the certno.

cdef int32_t _person_idx(Index self, object psn_no) except -2:
    cdef Py_ssize_t n
    cdef const char* p = _str_of(psn_no, "psn_no", &n)
    if not id_ok(p, n):
        return -1
    return tbl_find(&self.st, &self.st.t_psn, T_PSN, fnv1a(p, n, 0), p, n, 0)

cdef inline int32_t _candidate(Table* t, object key, uint64_t* pos) noexcept:
    """The row that key's hash-table slot names, unverified (-1: none, or key is no identifier), and that
    slot's position.  Nothing is checked or refused here: the look-up proper does that in its turn."""
    cdef Py_ssize_t n
    cdef const char* p
    cdef uint64_t h
    if type(key) is not str or not PyUnicode_IS_ASCII(key) or t.slots == NULL:
        return -1
    p = PyUnicode_AsUTF8AndSize(key, &n)
    if not id_ok(p, n):
        return -1
    h = fnv1a(p, n, 0)
    pos[0] = h & t.mask
    return tbl_candidate(t, h, pos)

cdef void _warm_person_institution(Store* st, object psn_no, object fixmedins_code) noexcept:
    """Start reading the person's row, key bytes and first filing (all three named by the person's slot, so
    read together), and the institution's row then its key, so that the look-ups that follow (each a chain of
    dependent reads: slot, row, key) find them in the cache instead of waiting for each read in turn."""
    cdef uint64_t ppos = 0, ipos = 0
    cdef int32_t pi = _candidate(&st.t_psn, psn_no, &ppos)
    cdef int32_t ii = _candidate(&st.t_inst, fixmedins_code, &ipos)
    cdef PersonSlotExtra* x
    if pi >= 0:
        x = person_extra(&st.t_psn, ppos)
        YIDI_TOUCH(&st.persons[pi])
        YIDI_TOUCH(st.arena + x.psn_no_off)
        if x.first_filing_idx >= 0:
            YIDI_TOUCH(&st.filings[x.first_filing_idx])
    if ii >= 0:
        YIDI_TOUCH(&st.insts[ii])
        YIDI_TOUCH(key_bytes(st, T_INST, ii))

cdef int32_t _inst_idx(Index self, object code) except -2:
    cdef Py_ssize_t n
    cdef const char* p = _str_of(code, "fixmedins_code", &n)
    if not id_ok(p, n):
        return -1
    return tbl_find(&self.st, &self.st.t_inst, T_INST, fnv1a(p, n, 0), p, n, 0)

cdef int64_t _policy_idx(Index self, uint32_t insuplc, int insutype, int64_t date) noexcept nogil:
    """The policy row in force on `date` for the person's pooling region and insutype, -1 = none.

    Through the policy directory (a C array by pooling region, built after each load), not the
    dictionary of versions: this runs twice per settlement.
    """
    cdef uint32_t slot = (insuplc // 100) * N_INSUTYPES + <uint32_t>insutype
    cdef int32_t i
    if self.policy_first == NULL or slot >= POLICY_SLOTS:
        return -1
    i = self.policy_first[slot] + self.policy_count[slot] - 1
    while i >= self.policy_first[slot]:     # versions by effective_from: the latest in force
        if self.st.policies[self.policy_order[i]].effective_from <= date:
            return self.policy_order[i]
        i -= 1
    return -1


cdef int _build_policy_directory(Index self) except -1:
    """policy_first/count[(pooling region // 100) * N_INSUTYPES + insutype] -> rows in policy_order, by date."""
    cdef int32_t at = 0
    cdef uint32_t slot
    free(self.policy_first); free(self.policy_count); free(self.policy_order)
    self.policy_first = <int32_t*>calloc(POLICY_SLOTS, sizeof(int32_t))
    self.policy_count = <int32_t*>calloc(POLICY_SLOTS, sizeof(int32_t))
    self.policy_order = <int32_t*>malloc(max(1, self.st.n_policies) * sizeof(int32_t))
    if self.policy_first == NULL or self.policy_count == NULL or self.policy_order == NULL:
        raise MemoryError()
    for (pooling, insutype), versions in self._policies.items():
        slot = (<uint32_t>pooling // 100) * N_INSUTYPES + <uint32_t>insutype
        self.policy_first[slot] = at
        self.policy_count[slot] = len(versions)
        for _eff, idx in versions:          # kept sorted by effective_from at load
            self.policy_order[at] = idx
            at += 1
    return 0

cdef str _region_label(Index self, uint32_t code):
    name = self._regions.get(code)
    if name is None:
        name = self._regions.get(pooling_of(code))
        if name is None:
            name = self._regions.get(province_of(code))
            if name is None:
                return f"{code}"
    return f"{name}（{code}）"

cdef str _validity_zh(Filing* f):
    if f.valid_to == 0:
        return f"{_date_zh(f.valid_from)}起长期有效"
    return f"{_date_zh(f.valid_from)}至{_date_zh(f.valid_to)}"

cdef str _state_zh(Filing* f, int64_t date):
    if f.status == FSTATUS_REVOKED:
        return "已撤销"
    if date < f.valid_from:
        return "尚未生效"
    if f.valid_to != 0 and date > f.valid_to:
        return "已过期"
    return "有效"

cdef inline str _filing_id(Store* st, Filing* f):
    return arena_str(st, f.filing_id_off, f.filing_id_len)

cdef inline str _inst_code(Store* st, int32_t i):
    return arena_str(st, st.insts[i].fixmedins_code_off, st.insts[i].fixmedins_code_len)

cdef inline str _inst_name(Store* st, int32_t i):
    return arena_str(st, st.insts[i].name_off, st.insts[i].name_len)

cdef bint _designates(Store* st, Filing* f, Institution* it) noexcept nogil:
    """fixmedins_codes empty, or one of its space-separated codes is the institution's."""
    cdef const char* p
    cdef const char* code
    cdef int i = 0, start, n
    if f.fixmedins_codes_len == 0:
        return True
    p = st.arena + f.fixmedins_codes_off
    code = st.arena + it.fixmedins_code_off
    n = f.fixmedins_codes_len
    while i < n:
        start = i
        while i < n and p[i] != 32:
            i += 1
        if i - start == it.fixmedins_code_len and memcmp(p + start, code, it.fixmedins_code_len) == 0:
            return True
        i += 1
    return False

cdef list _filings_sorted(Store* st, Person* p):
    """Row indexes of the person's filings in (valid_from, filing_id) order."""
    out = []
    cdef int32_t fi = p.first_filing_idx
    while fi >= 0:
        out.append((st.filings[fi].valid_from, _filing_id(st, &st.filings[fi]), fi))
        fi = st.filings[fi].next_filing_idx
    out.sort()
    return [t[2] for t in out]

cdef str _designated_zh(Index self, Filing* f):
    cdef Store* st = &self.st
    cdef int32_t ii
    cdef Py_ssize_t n
    cdef const char* cp
    parts = []
    for code in (st.arena + f.fixmedins_codes_off)[:f.fixmedins_codes_len].decode("ascii").split(" "):
        cp = PyUnicode_AsUTF8AndSize(code, &n)
        ii = tbl_find(st, &st.t_inst, T_INST, fnv1a(cp, n, 0), cp, n, 0)
        parts.append(f"{code}（{_inst_name(st, ii) if ii >= 0 else '机构信息未登记'}）")
    return "、".join(parts)

cdef bint _better(Store* st, int32_t a, int64_t ra, int32_t b, int64_t rb) noexcept:
    """Is filing a (reduction ra) preferable to filing b (reduction rb)?"""
    cdef Filing* fa = &st.filings[a]
    cdef Filing* fb = &st.filings[b]
    cdef int c
    if ra != rb:
        return ra < rb
    if fa.valid_from != fb.valid_from:
        return fa.valid_from > fb.valid_from
    # last resort, for determinism: the smaller filing_id
    c = memcmp(st.arena + fa.filing_id_off, st.arena + fb.filing_id_off, imin(fa.filing_id_len, fb.filing_id_len))
    return c < 0 or (c == 0 and fa.filing_id_len < fb.filing_id_len)

# ---------------------------------------------------------------- the checks, one function each
cdef int32_t _check1_filed(Index self, object psn_no) except -2:
    """Check 1: the person is known and has a filing record; returns the person's row."""
    cdef int32_t pi = _person_idx(self, psn_no)
    if pi >= 0 and self.st.persons[pi].first_filing_idx >= 0:
        return pi
    raise YidiError("PERSON_NOT_FILED", person=f"人员编号 {psn_no}", psn_no=psn_no)

cdef int _check2_active(Person* p, object psn_no) except -1:
    """Check 2: the person's insurance is active."""
    if p.status == PSTATUS_SUSPENDED:
        raise YidiError("INSURANCE_SUSPENDED", psn_no=psn_no)
    return 0

cdef int _check3_card(Index self, Person* p, object psn_no, object card_no, object card_version) except -1:
    """Check 3, when a card is presented: its number is the person's and its version accepted."""
    cdef Store* st = &self.st
    cdef Py_ssize_t cn
    cdef const char* cp
    if card_no is None and card_version is None:
        return 0
    if card_no is not None:
        cp = _str_of(card_no, "card_no", &cn)
        if cn != p.card_no_len or memcmp(cp, st.arena + p.card_no_off, cn) != 0:
            raise YidiError("CARD_INVALID", problem="卡号与参保人登记的卡号不一致", psn_no=psn_no,
                            cause="card_no_mismatch")
    version = card_version if card_version is not None else self._card_versions[p.card_version_idx]
    if version not in self._accepted:
        raise YidiError("CARD_INVALID", problem=f"版本 {version} 不在受理范围（受理版本：{'、'.join(sorted(self._accepted))}）",
                        psn_no=psn_no, cause="card_version_not_accepted")
    return 0

cdef int32_t _check4_institution(Index self, object fixmedins_code) except -2:
    """Check 4: the institution is known; returns its row."""
    cdef int32_t ii = _inst_idx(self, fixmedins_code)
    if ii >= 0:
        return ii
    raise YidiError("INSTITUTION_UNKNOWN", fixmedins_code=fixmedins_code)

cdef int _check5_cross_province(Index self, Person* p, int32_t ii, object psn_no, object fixmedins_code) except -1:
    """Check 5: the institution's province is not the person's insured province."""
    cdef Institution* it = &self.st.insts[ii]
    if province_of(it.admdvs) != province_of(p.insuplc_admdvs):
        return 0
    raise YidiError("NOT_CROSS_PROVINCE", insured=_region_label(self, p.insuplc_admdvs),
                    institution=_inst_name(&self.st, ii), treatment=_region_label(self, it.admdvs),
                    province=_region_label(self, province_of(it.admdvs)), psn_no=psn_no, fixmedins_code=fixmedins_code)

cdef int _check6_open_for_visit(Index self, int32_t ii, bint inpatient, object fixmedins_code) except -1:
    """Check 6: the institution is open for cross-province settlement of this kind of visit."""
    cdef Institution* it = &self.st.insts[ii]
    if it.inpatient if inpatient else it.outpatient:
        return 0
    raise YidiError("INSTITUTION_NOT_ENABLED", fixmedins_code=fixmedins_code, institution=_inst_name(&self.st, ii),
                    visit="住院" if inpatient else "门诊")

cdef inline bint _covers(Filing* f, Institution* it, int64_t date) noexcept nogil:
    """Check 7 for one filing: active, valid on the date, its destination covers the institution."""
    return (f.status == FSTATUS_ACTIVE and f.valid_from <= date and (f.valid_to == 0 or date <= f.valid_to)
            and dest_covers(f.dest_admdvs, it.admdvs))

cdef int _check7_filed_for_destination(Index self, Person* p, Institution* it, int64_t date,
                                       object psn_no, object fixmedins_code) except -1:
    """Check 7: some filing covers the institution on the date; else name the filings the person has."""
    cdef Store* st = &self.st
    cdef int32_t fi = p.first_filing_idx
    cdef Filing* f
    while fi >= 0:
        if _covers(&st.filings[fi], it, date):
            return 0
        fi = st.filings[fi].next_filing_idx
    have = []
    for fi in _filings_sorted(st, p):
        f = &st.filings[fi]
        have.append(f"{_region_label(self, f.dest_admdvs)}·{KIND_NAMES_ZH[f.kind]}·{_validity_zh(f)}·{_state_zh(f, date)}")
    raise YidiError("NOT_FILED_FOR_DESTINATION", on=_date_zh(date), region=_region_label(self, it.admdvs),
                    filings="；".join(have), psn_no=psn_no, fixmedins_code=fixmedins_code)

cdef int _check8_designated(Index self, Person* p, int32_t ii, int64_t date,
                            object psn_no, object fixmedins_code) except -1:
    """Check 8: a covering filing designates the institution (or none); else name the designated ones."""
    cdef Store* st = &self.st
    cdef Institution* it = &st.insts[ii]
    cdef int32_t fi = p.first_filing_idx
    cdef Filing* f
    while fi >= 0:
        f = &st.filings[fi]
        if _covers(f, it, date) and _designates(st, f, it):
            return 0
        fi = f.next_filing_idx
    named = []
    for fi in _filings_sorted(st, p):
        f = &st.filings[fi]
        if _covers(f, it, date):
            named.append(f"{KIND_NAMES_ZH[f.kind]}备案（{_filing_id(st, f)}）指定机构：{_designated_zh(self, f)}")
    raise YidiError("INSTITUTION_NOT_DESIGNATED", fixmedins_code=fixmedins_code, institution=_inst_name(st, ii),
                    designated="；".join(named), psn_no=psn_no)

cdef int32_t _choose_filing(Index self, Person* p, Institution* it, int64_t date) except -2:
    """Of the filings passing checks 7 and 8, the smallest ratio reduction, then the latest valid_from; -1 none."""
    cdef Store* st = &self.st
    cdef int64_t pol = _policy_idx(self, p.insuplc_admdvs, p.insutype, date)
    cdef int32_t fi = p.first_filing_idx, best = -1
    cdef int64_t r, best_r = 0
    cdef Filing* f
    while fi >= 0:
        f = &st.filings[fi]
        if _covers(f, it, date) and _designates(st, f, it):
            r = st.policies[pol].reduction_bp[f.kind] if pol >= 0 else 0
            if best < 0 or _better(st, fi, r, best, best_r):
                best = fi
                best_r = r
        fi = f.next_filing_idx
    return best

cdef int _check9_no_open_admission(bint inpatient, bint has_open_inpatient, object psn_no) except -1:
    """Check 9, inpatient only: no other open inpatient visit."""
    if inpatient and has_open_inpatient:
        raise YidiError("DUPLICATE_ADMISSION", psn_no=psn_no)
    return 0

@cython.no_gc      # it refers only to the Index, which never refers back: no cycle to collect
cdef class Admission:
    """Eligibility's answer (SPEC §4): the rows it chose, strings made only when asked for.

    Valid until the index next changes (the engine reads it at once, while deciding).
    """
    cdef Index index
    cdef readonly int32_t person_row
    cdef readonly int32_t institution_row
    cdef readonly int32_t filing_row

    @property
    def filing_id(self) -> str:
        if self.filing_row < 0:   # SPEC §10.6: the implied emergency filing
            return EMERGENCY_FILING_ID
        return _filing_id(&self.index.st, &self.index.st.filings[self.filing_row])

    @property
    def filing_kind(self) -> str:
        if self.filing_row < 0:
            return FILING_KINDS[KIND_EMERGENCY]
        return FILING_KINDS[self.index.st.filings[self.filing_row].kind]

    @property
    def insuplc_admdvs(self) -> str:
        return _admdvs_str(self.index.st.persons[self.person_row].insuplc_admdvs)

    @property
    def mdtrtarea_admdvs(self) -> str:
        return _admdvs_str(self.index.st.insts[self.institution_row].admdvs)

    @property
    def fixmedins_level(self) -> int:
        return self.index.st.insts[self.institution_row].level

    def as_dict(self) -> dict:
        cdef Person* p = &self.index.st.persons[self.person_row]
        return {
            "filing_id": self.filing_id, "filing_kind": self.filing_kind,
            "insuplc_admdvs": self.insuplc_admdvs, "mdtrtarea_admdvs": self.mdtrtarea_admdvs,
            "fixmedins_level": self.fixmedins_level, "insutype": INSUTYPES[p.insutype],
            "person_type": PERSON_TYPES[p.person_type], "assistance": p.assistance != 0,
        }


cdef str _admdvs_str(uint32_t admdvs):
    return PyUnicode_FromFormat("%u", admdvs)


cdef extern from "Python.h":
    object PyUnicode_FromFormat(const char* fmt, ...)


# ---------------------------------------------------------------- SPEC §4, in order
EMERGENCY_FILING_ID = "EMERGENCY"


cdef Admission _eligibility(Index self, object psn_no, object fixmedins_code, bint inpatient, object date_obj,
                            object card_no, object card_version, bint has_open_inpatient, bint emergency=False):
    """SPEC §4 checks 1–9.  ``emergency`` (SPEC §10.6, 急诊抢救视同备案): a known person whose filings do not pass
    checks 7–8 (or who has none) is admitted with an implied emergency filing (filing_row -1)."""
    cdef Store* st = &self.st
    cdef int64_t date = _date_of(date_obj, "就诊日期", None)
    cdef int32_t pi, ii, fi
    cdef Person* p
    cdef Institution* it
    _warm_person_institution(st, psn_no, fixmedins_code)
    pi = _person_idx(self, psn_no) if emergency else -1
    if pi < 0:
        pi = _check1_filed(self, psn_no)
    p = &st.persons[pi]
    _check2_active(p, psn_no)
    _check3_card(self, p, psn_no, card_no, card_version)
    ii = _check4_institution(self, fixmedins_code)
    it = &st.insts[ii]
    _check5_cross_province(self, p, ii, psn_no, fixmedins_code)
    _check6_open_for_visit(self, ii, inpatient, fixmedins_code)
    fi = _choose_filing(self, p, it, date)
    if fi < 0 and not emergency:  # the refusal walks the filings again, to say which check failed and name them
        _check7_filed_for_destination(self, p, it, date, psn_no, fixmedins_code)
        _check8_designated(self, p, ii, date, psn_no, fixmedins_code)
        raise InvariantError("eligibility: no filing chosen, yet checks 7 and 8 pass")
    _check9_no_open_admission(inpatient, has_open_inpatient, psn_no)
    cdef Admission answer = Admission.__new__(Admission)
    answer.index = self
    answer.person_row, answer.institution_row, answer.filing_row = pi, ii, fi
    return answer
