# Invariants of the index: what must hold between the row arrays, the hash
# tables, the arena and the linked lists, whatever the data.  A failure is a
# bug in the core (or memory corruption), never the caller's: InvariantError.
#
# Index.check_invariants() runs the full O(n) check in every build.  Debug
# builds (YIDI_DEBUG=1, see limits.pxi) also check the touched person's rows
# after every put_person / put_filing / apply_deltas, the whole index after
# load_dir, and the money of every benefit; release builds compile those calls
# away.

cdef int _broken(str what) except -1:
    raise InvariantError(f"index: {what}")

# Messages are formatted only on failure: a full check of a national index
# visits millions of rows.
cdef int _check_string(Store* st, uint32_t off, Py_ssize_t n, str what, int64_t row) except -1:
    if <uint64_t>off + <uint64_t>n > st.arena_len:
        _broken(f"{what} of row {row} lies outside the arena")
    return 0

cdef tuple _ROW_NAMES = ("person (by psn_no)", "person (by certno)", "filing", "institution", "catalogue item")

cdef int _check_found(Store* st, Table* t, int kind, int32_t idx) except -1:
    """Row idx is found through its table by its own key (so its slot is on its probe chain)."""
    cdef uint64_t h = key_hash(st, kind, idx)
    cdef uint32_t off
    cdef Py_ssize_t n
    cdef uint32_t extra = 0
    if kind == T_PSN:
        off = st.persons[idx].psn_no_off; n = st.persons[idx].psn_no_len
    elif kind == T_CERT:
        off = st.persons[idx].certno_off; n = st.persons[idx].certno_len
    elif kind == T_FILING:
        off = st.filings[idx].filing_id_off; n = st.filings[idx].filing_id_len
    elif kind == T_INST:
        off = st.insts[idx].fixmedins_code_off; n = st.insts[idx].fixmedins_code_len
    else:
        off = st.items[idx].code_off; n = st.items[idx].code_len; extra = st.items[idx].province_admdvs
    _check_string(st, off, n, "the key", idx)
    if tbl_find(st, t, kind, h, st.arena + off, n, extra) != idx:
        _broken(f"{_ROW_NAMES[kind]} {idx} is not found through its table by its own key")
    return 0

cdef int _check_table(Store* st, Table* t, int kind, int64_t n_rows, str name) except -1:
    """The table holds each of its n_rows rows once: every slot names a row, the count is n_rows."""
    cdef uint64_t i
    cdef int64_t used = 0
    if t.slots == NULL:
        if n_rows:
            _broken(f"table {name} is missing for {n_rows} rows")
        return 0
    for i in range(t.mask + 1):
        if slot_at(t, i).idx >= 0:
            if slot_at(t, i).idx >= n_rows:
                _broken(f"table {name} slot {i} names row {slot_at(t, i).idx} of {n_rows}")
            used += 1
    if used != t.count or t.count != n_rows:
        _broken(f"table {name} holds {used} slots, counts {t.count}, for {n_rows} rows")
    return 0

cdef int _check_filing_row(Store* st, int32_t fi) except -1:
    cdef Filing* f = &st.filings[fi]
    _check_found(st, &st.t_filing, T_FILING, fi)
    _check_string(st, f.fixmedins_codes_off, f.fixmedins_codes_len, "the codes of filing", fi)
    if f.person_idx < 0 or f.person_idx >= st.n_persons:
        _broken(f"filing {fi} names person {f.person_idx} of {st.n_persons}")
    if f.kind >= N_FILING_KINDS:
        _broken(f"filing {fi} has kind {f.kind}")
    return 0

cdef int _check_filing_list(Store* st, int32_t pi, uint8_t* seen) except -1:
    """The person's filings: each names the person, no cycle; `seen` (if given) marks each reached once."""
    cdef int32_t fi = st.persons[pi].first_filing_idx
    cdef int64_t steps = 0
    while fi >= 0:
        if fi >= st.n_filings or steps >= st.n_filings:
            _broken(f"the filing list of person {pi} leaves the filings or loops")
        if st.filings[fi].person_idx != pi:
            _broken(f"filing {fi} is in the list of person {pi} but names person {st.filings[fi].person_idx}")
        if seen != NULL:
            if seen[fi]:
                _broken(f"filing {fi} is reached twice")
            seen[fi] = 1
        steps += 1
        fi = st.filings[fi].next_filing_idx
    return 0

cdef int _check_acc_list(Store* st, int32_t pi, uint8_t* seen) except -1:
    """The person's accumulators: no cycle, each year once, every value in 0..MAX_ACCUMULATOR_FEN."""
    cdef uint8_t year_seen[N_YEARS]
    cdef int32_t ai = st.persons[pi].first_acc_idx
    cdef int64_t steps = 0
    cdef int k, y
    memset(year_seen, 0, sizeof(year_seen))
    while ai >= 0:
        if ai >= st.n_accs or steps >= st.n_accs:
            _broken(f"the accumulator list of person {pi} leaves the accumulators or loops")
        if seen != NULL:
            if seen[ai]:
                _broken(f"accumulator row {ai} is reached twice")
            seen[ai] = 1
        y = st.accs[ai].year - MIN_DATE // 10000
        if y < 0 or y >= N_YEARS or year_seen[y]:
            _broken(f"person {pi} has year {st.accs[ai].year} twice or out of range")
        year_seen[y] = 1
        for k in range(N_ACCUMULATORS):
            if not (0 <= st.accs[ai].value[k] <= MAX_ACCUMULATOR_FEN):
                _broken(f"accumulator {ACCUMULATOR_KEYS[k]} of person {pi} for {st.accs[ai].year} "
                        f"is {st.accs[ai].value[k]}")
        steps += 1
        ai = st.accs[ai].next_acc_idx
    return 0

cdef int _check_person_rows(Store* st, int32_t pi, uint8_t* filing_seen, uint8_t* acc_seen) except -1:
    """One person: found by psn_no and certno, strings in the arena, its filing and accumulator lists."""
    cdef Person* p = &st.persons[pi]
    cdef PersonSlotExtra* x
    _check_found(st, &st.t_psn, T_PSN, pi)
    x = person_slot_extra(st, pi)
    if x == NULL or x.psn_no_off != p.psn_no_off or x.first_filing_idx != p.first_filing_idx:
        _broken(f"the persons' table holds ({x.psn_no_off if x != NULL else None}, {x.first_filing_idx if x != NULL else None}) beside person {pi}'s slot, "
                f"its row ({p.psn_no_off}, {p.first_filing_idx})")
    _check_found(st, &st.t_cert, T_CERT, pi)
    _check_string(st, p.name_off, p.name_len, "the name of person", pi)
    _check_string(st, p.card_no_off, p.card_no_len, "the card of person", pi)
    _check_filing_list(st, pi, filing_seen)
    _check_acc_list(st, pi, acc_seen)
    return 0

cdef int _check_policy(Policy* pol, int64_t i) except -1:
    cdef int t
    if pol.crit_n_tiers > MAX_TIERS or (pol.crit_present and pol.crit_n_tiers == 0):
        _broken(f"policy {i} has {pol.crit_n_tiers} tiers")
    for t in range(pol.crit_n_tiers):
        if (pol.crit_up_to_fen[t] < 0) != (t == pol.crit_n_tiers - 1):
            _broken(f"policy {i}: only its last tier is open-ended")
    return 0

cdef int _check_store(Store* st) except -1:
    """Everything, in O(n): tables, rows, lists, and that every filing and accumulator row is reached."""
    cdef uint8_t* filing_seen = <uint8_t*>calloc(st.n_filings + 1, 1)
    cdef uint8_t* acc_seen = <uint8_t*>calloc(st.n_accs + 1, 1)
    cdef int64_t i
    try:
        if filing_seen == NULL or acc_seen == NULL:
            raise MemoryError()
        _check_table(st, &st.t_psn, T_PSN, st.n_persons, "psn_no")
        _check_table(st, &st.t_cert, T_CERT, st.n_persons, "certno")
        _check_table(st, &st.t_filing, T_FILING, st.n_filings, "filing_id")
        _check_table(st, &st.t_inst, T_INST, st.n_insts, "fixmedins_code")
        _check_table(st, &st.t_item, T_ITEM, st.n_items, "catalogue code")
        for i in range(st.n_persons):
            _check_person_rows(st, <int32_t>i, filing_seen, acc_seen)
        for i in range(st.n_filings):
            _check_filing_row(st, <int32_t>i)
            if not filing_seen[i]:
                _broken(f"filing {i} is in no person's filing list")
        for i in range(st.n_accs):
            if not acc_seen[i]:
                _broken(f"accumulator row {i} is in no person's list")
        for i in range(st.n_insts):
            _check_found(st, &st.t_inst, T_INST, <int32_t>i)
        for i in range(st.n_items):
            _check_found(st, &st.t_item, T_ITEM, <int32_t>i)
        for i in range(st.n_policies):
            _check_policy(&st.policies[i], i)
    finally:
        free(filing_seen)
        free(acc_seen)
    return 0

cdef int _check_benefit_money(BenefitFen* b) except -1:
    """Money is conserved, not hoped for: the parts sum to the whole and nothing is negative."""
    if not (b.medfee_sumamt == b.fulamt_ownpay_amt + b.overlmt_selfpay + b.preselfpay_amt + b.inscp_scp_amt
            and b.fund_pay_sumamt == b.hifp_pay + b.supplementary_fen + b.maf_pay
            and b.fund_pay_sumamt + b.psn_cash_pay == b.medfee_sumamt
            and 0 <= b.fund_pay_sumamt <= b.inscp_scp_amt
            and min(b.fulamt_ownpay_amt, b.overlmt_selfpay, b.preselfpay_amt, b.act_pay_dedc, b.hifp_pay,
                    b.crit_base_fen, b.supplementary_fen, b.maf_pay, b.psn_cash_pay) >= 0):
        raise InvariantError(f"benefit: money not conserved: {b[0]}")
    return 0


# ---------------------------------------------------------------- corruption, for the tests of the checks
cdef int _debug_corrupt(Index self, str what, object psn_no) except -1:
    """Break one invariant of the person's rows on purpose (debug builds only)."""
    cdef Store* st = &self.st
    cdef int32_t pi = _person_idx(self, psn_no)
    cdef Person* p
    cdef Acc* a
    if not YIDI_DEBUG:
        raise RuntimeError("_debug_corrupt exists only in debug builds (YIDI_DEBUG=1)")
    if pi < 0 or st.persons[pi].first_filing_idx < 0:
        raise ValueError("_debug_corrupt needs a filed person")
    p = &st.persons[pi]
    if what == "certno_table":
        tbl_remove(st, &st.t_cert, T_CERT, key_hash(st, T_CERT, pi), pi)
    elif what == "filing_cycle":
        st.filings[p.first_filing_idx].next_filing_idx = p.first_filing_idx
    elif what == "filing_person":
        st.filings[p.first_filing_idx].person_idx = (pi + 1) % <int32_t>st.n_persons
    elif what == "filing_unlinked":
        person_set_first_filing(st, pi, st.filings[p.first_filing_idx].next_filing_idx)
    elif what == "person_slot_extra":
        person_slot_extra(st, pi).first_filing_idx = -1
    elif what == "accumulator_negative":
        a = _acc_new(st, pi, 2026)
        a.value[ACC_CRIT_BASE_FEN] = -1
    elif what == "accumulator_year_twice":
        _acc_new(st, pi, 2026)
        _acc_new(st, pi, 2026)
    else:
        raise ValueError(f"unknown corruption {what!r}")
    return 0
