# Benefit calculation (SPEC §5) and the per-person, per-year accumulators (§5.5).
# Integer fen only; every input is bounded (limits.pxi) so no int64 overflows.

cdef int64_t INT64_BIG = 0x7FFFFFFFFFFFFFFF


cdef Acc* _acc_find(Store* st, Person* p, int year) noexcept nogil:
    cdef int32_t ai = p.first_acc_idx
    while ai >= 0:
        if st.accs[ai].year == year:
            return &st.accs[ai]
        ai = st.accs[ai].next_acc_idx
    return NULL

cdef dict _accumulators(Index self, object psn_no, object year_obj):
    cdef int year = _year_of(year_obj)
    cdef int32_t pi = _person_idx(self, psn_no)
    cdef Acc* a = NULL
    cdef int k
    if pi >= 0:
        a = _acc_find(&self.st, &self.st.persons[pi], year)
    return {ACCUMULATOR_KEYS[k]: (a.value[k] if a != NULL else 0) for k in range(N_ACCUMULATORS)}

cdef int _next_values(Acc* a, object deltas, object sign, int64_t* out) except -1:
    """out = a's values + sign * deltas, each within 0..MAX_ACCUMULATOR_FEN.

    Deltas are what a settlement computed (SPEC §5.5) and sign is +1 to apply
    them, -1 to cancel them; nothing a caller sends can make either malformed,
    and a cancellation of exactly the recorded deltas cannot go below zero.
    So every refusal here is a bug: InvariantError, not a reason code.
    """
    cdef int64_t s = 0, d = 0
    cdef int k
    if not _int64_of(sign, &s) or (s != 1 and s != -1):
        raise InvariantError(f"apply_deltas: sign {_echo(sign)} is neither +1 (apply) nor -1 (cancel)")
    if type(deltas) is not dict:
        raise InvariantError(f"apply_deltas: deltas must be a dict, not {type(deltas).__name__}")
    for key in deltas:
        if key not in ACCUMULATOR_KEYS:
            raise InvariantError(f"apply_deltas: unknown accumulator {_echo(key)}")
    for k in range(N_ACCUMULATORS):
        v = deltas.get(ACCUMULATOR_KEYS[k], 0)
        if not _int64_of(v, &d) or not (-MAX_ACCUMULATOR_FEN <= d <= MAX_ACCUMULATOR_FEN):
            raise InvariantError(f"apply_deltas: delta {_echo(v)} of {ACCUMULATOR_KEYS[k]} is not a bounded int")
        out[k] = (a.value[k] if a != NULL else 0) + s * d
        if out[k] < 0 or out[k] > MAX_ACCUMULATOR_FEN:
            raise InvariantError(f"apply_deltas: {ACCUMULATOR_KEYS[k]} would become {out[k]}; "
                                 "a cancellation must subtract exactly the deltas its settlement added")
    return 0

cdef Acc* _acc_new(Store* st, int32_t pi, int year) except NULL:
    """A zeroed accumulator row for (person, year), linked at the head of the person's list."""
    cdef Acc* a
    st.accs = <Acc*>grow_array(st.accs, &st.cap_accs, st.n_accs + 1, sizeof(Acc))
    a = &st.accs[st.n_accs]
    memset(a, 0, sizeof(Acc))
    a.year = year
    a.next_acc_idx = st.persons[pi].first_acc_idx
    st.persons[pi].first_acc_idx = <int32_t>st.n_accs
    st.n_accs += 1
    return a

cdef int _apply_deltas(Index self, object psn_no, object year_obj, object deltas, object sign) except -1:
    """Add sign * deltas to the person's accumulators of the year, all or nothing."""
    cdef Store* st = &self.st
    cdef int year = _year_of(year_obj)
    cdef int32_t pi = _person_idx(self, psn_no)
    cdef int64_t next_value[N_ACCUMULATORS]
    cdef Acc* a
    if pi < 0:
        raise YidiError("PERSON_NOT_FOUND", f"人员编号 {_echo(psn_no)} 未登记", psn_no=psn_no)
    a = _acc_find(st, &st.persons[pi], year)
    _next_values(a, deltas, sign, next_value)
    if a == NULL:
        a = _acc_new(st, pi, year)
    memcpy(a.value, next_value, sizeof(next_value))
    return 0


cdef int64_t _tiers_pay(Policy* pol, int64_t before, int64_t after) noexcept nogil:
    """Critical-illness payment for the cumulative base moving from before to after."""
    cdef int64_t ex_b = imax(0, before - pol.crit_threshold_fen)
    cdef int64_t ex_a = imax(0, after - pol.crit_threshold_fen)
    cdef int64_t lo = 0, hi, ov, pay = 0
    cdef int i
    for i in range(pol.crit_n_tiers):
        hi = pol.crit_up_to_fen[i] if pol.crit_up_to_fen[i] >= 0 else INT64_BIG
        ov = imin(ex_a, hi) - imax(ex_b, lo)
        if ov > 0:
            pay += bp(ov, pol.crit_ratio_bp[i])
        lo = hi
    return pay

cdef dict _benefit(Index self, object psn_no, object fixmedins_code, object filing_kind, bint inpatient,
                   object date_obj, object lines):
    cdef Store* st = &self.st
    cdef int64_t date = _date_of(date_obj, "结算日期", None)
    cdef int32_t pi, ii, ci
    cdef int64_t pol_i, price, qty, amount, capped, fulamt, overlmt, presp, inscp
    cdef int64_t t_ful = 0, t_over = 0, t_pre = 0, t_in = 0, medfee
    cdef int64_t ratio, D, dedc, hifp, s = 0, supp = 0, maf = 0, fund
    cdef int64_t zero[N_ACCUMULATORS]
    cdef int64_t* acc
    cdef int kind, level, cls
    cdef uint32_t prov
    cdef Py_ssize_t cn
    cdef const char* cp
    cdef Person* p
    cdef Institution* it
    cdef Policy* pol
    cdef CatalogItem* item
    cdef Acc* a

    pi = _person_idx(self, psn_no)
    if pi < 0:
        raise YidiError("PERSON_NOT_FOUND", f"人员编号 {psn_no} 未登记", psn_no=psn_no)
    ii = _inst_idx(self, fixmedins_code)
    if ii < 0:
        raise YidiError("INSTITUTION_UNKNOWN", f"定点医药机构编码 {fixmedins_code} 不在跨省直接结算机构库中",
                        fixmedins_code=fixmedins_code)
    if type(filing_kind) is not str or filing_kind not in FILING_KINDS:
        raise YidiError("INVALID_ENUM", f"备案类型 {filing_kind!r} 无效，应为 {'、'.join(FILING_KINDS)} 之一")
    kind = FILING_KINDS.index(filing_kind)
    if type(lines) is not list and type(lines) is not tuple:
        raise InvariantError(f"benefit: lines must be a list of fee lines, not {type(lines).__name__}")
    _line_count_ok(len(lines), "一次结算")
    p = &st.persons[pi]
    it = &st.insts[ii]
    level = it.level
    pol_i = _policy_idx(self, p.insuplc_admdvs, p.insutype, date)
    if pol_i < 0:
        raise YidiError(
            "POLICY_MISSING",
            f"参保地统筹区 {_region_label(self, pooling_of(p.insuplc_admdvs))} 险种 {INSUTYPES[p.insutype]} "
            f"在 {_date_zh(date)} 没有生效的待遇政策，暂不能结算；请联系国家平台运维核实参保地政策数据。",
            psn_no=psn_no)
    pol = &st.policies[pol_i]
    prov = province_of(it.admdvs)

    # 5.1 lines, looked up in the treatment province's catalogue
    line_results = []
    for ln in lines:
        if (type(ln) is not tuple and type(ln) is not list) or len(ln) != 3:
            # the engine builds these tuples from lines check_line has passed: a bad shape is its bug
            raise InvariantError("benefit: a fee line must be a (code, unit_price_fen, qty_milli) tuple")
        code, price_o, qty_o = ln
        cp = _line_code_of(code, None, &cn)
        price = _unit_price_fen_of(price_o, None, code)
        qty = _qty_milli_of(qty_o, None, code)
        amount = line_amount(price, qty)
        fulamt = overlmt = presp = inscp = 0
        ci = tbl_find(st, &st.t_item, T_ITEM, item_hash(cp, cn, prov), cp, cn, prov)
        if ci < 0 or st.items[ci].item_class == CLASS_C:
            fulamt = amount
            lv = "" if ci < 0 else "C"
        else:
            item = &st.items[ci]
            capped = amount
            if item.price_cap_fen > 0 and price > item.price_cap_fen:
                capped = line_amount(item.price_cap_fen, qty)
                overlmt = amount - capped
            if item.item_class == CLASS_A:
                inscp = capped
                lv = "A"
            else:
                presp = bp(capped, item.selfpay_bp)
                inscp = capped - presp
                lv = "B"
        t_ful += fulamt; t_over += overlmt; t_pre += presp; t_in += inscp
        if t_ful + t_over + t_pre + t_in > MAX_BILL_FEN:
            raise YidiError("INVALID_PRICE", f"本次结算费用总额超过上限 {MAX_BILL_FEN} 分")
        line_results.append({"code": code, "amount_fen": amount, "fulamt_ownpay_amt": fulamt,
                             "overlmt_selfpay": overlmt, "preselfpay_amt": presp, "inscp_scp_amt": inscp,
                             "chrgitm_lv": lv})
    medfee = t_ful + t_over + t_pre + t_in
    inscp = t_in

    # 5.2 ratio
    if inpatient:
        ratio = pol.inpatient_ratio_bp[level] + (pol.inpatient_retired_bonus_bp if p.person_type == PTYPE_RETIRED else 0)
    else:
        ratio = pol.outpatient_ratio_bp[level] + (pol.outpatient_retired_bonus_bp if p.person_type == PTYPE_RETIRED else 0)
    ratio = imin(BP_ONE, imax(0, ratio - pol.reduction_bp[kind]))

    a = _acc_find(st, p, <int>(date // 10000))
    memset(zero, 0, sizeof(zero))
    if a != NULL:
        acc = &a.value[0]
    else:
        acc = &zero[0]
    if inpatient:
        # 5.3 steps 1-4
        D = pol.inpatient_deductible_fen[level]
        if acc[ACC_INPATIENT_ADMISSIONS] >= 1 and pol.inpatient_subsequent_deductible_bp >= 0:
            D = bp(D, pol.inpatient_subsequent_deductible_bp)
        dedc = imin(inscp, D)
        hifp = imin(bp(inscp - dedc, ratio), imax(0, pol.inpatient_annual_cap_fen - acc[ACC_INPATIENT_FUND_PAID_FEN]))
        s = inscp - hifp
        if pol.crit_present:
            supp = imin(_tiers_pay(pol, acc[ACC_CRIT_BASE_FEN], acc[ACC_CRIT_BASE_FEN] + s),
                        imax(0, pol.crit_annual_cap_fen - acc[ACC_CRIT_PAID_FEN]))
    else:
        # 5.4
        dedc = imin(inscp, imax(0, pol.outpatient_annual_deductible_fen - acc[ACC_OUTPATIENT_DEDUCTIBLE_USED_FEN]))
        hifp = imin(bp(inscp - dedc, ratio), imax(0, pol.outpatient_annual_cap_fen - acc[ACC_OUTPATIENT_FUND_PAID_FEN]))
    # 5.3 step 5, medical assistance
    if p.assistance and pol.assist_present:
        maf = imin(bp(inscp - hifp - supp, pol.assist_ratio_bp), imax(0, pol.assist_annual_cap_fen - acc[ACC_ASSIST_PAID_FEN]))
    fund = hifp + supp + maf
    if inpatient:
        deltas = {"inpatient_fund_paid_fen": hifp, "inpatient_admissions": 1, "crit_base_fen": s,
                  "crit_paid_fen": supp, "assist_paid_fen": maf, "outpatient_fund_paid_fen": 0,
                  "outpatient_deductible_used_fen": 0}
    else:
        deltas = {"inpatient_fund_paid_fen": 0, "inpatient_admissions": 0, "crit_base_fen": 0,
                  "crit_paid_fen": 0, "assist_paid_fen": maf, "outpatient_fund_paid_fen": hifp,
                  "outpatient_deductible_used_fen": dedc}
    return {
        "medfee_sumamt": medfee,
        "fulamt_ownpay_amt": t_ful,
        "overlmt_selfpay": t_over,
        "preselfpay_amt": t_pre,
        "inscp_scp_amt": inscp,
        "act_pay_dedc": dedc,
        "pay_ratio_bp": ratio,
        "hifp_pay": hifp,
        "hifmi_pay": supp if p.insutype == INSUTYPE_390 else 0,
        "hifob_pay": supp if p.insutype == INSUTYPE_310 else 0,
        "maf_pay": maf,
        "fund_pay_sumamt": fund,
        "psn_cash_pay": medfee - fund,
        "policy_effective_from": pol.effective_from,
        "high_cost": medfee > pol.high_cost_fen,
        "year": date // 10000,
        "line_results": line_results,
        "deltas": deltas,
    }
