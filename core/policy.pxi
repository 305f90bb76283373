# SPEC §3's policy row (the insured place's policy): its C struct and how a row of policies.jsonl becomes one.
# A fund layer's terms live here (and its rule in benefit.pxi, its amount in core/money.py).

from libc.stdint cimport uint8_t, int32_t, int64_t

ctypedef struct Policy:
    int64_t inpatient_deductible_fen[N_LEVELS]     # by institution level
    int64_t inpatient_ratio_bp[N_LEVELS]
    int64_t inpatient_retired_bonus_bp
    int64_t inpatient_annual_cap_fen
    int64_t inpatient_subsequent_deductible_bp     # -1 = absent
    int64_t outpatient_annual_deductible_fen
    int64_t outpatient_ratio_bp[N_LEVELS]
    int64_t outpatient_retired_bonus_bp
    int64_t outpatient_annual_cap_fen
    int64_t crit_threshold_fen                     # critical illness (大病保险)
    int64_t crit_up_to_fen[MAX_TIERS]              # -1 = null (open-ended, the last tier)
    int64_t crit_ratio_bp[MAX_TIERS]
    int64_t crit_annual_cap_fen
    int64_t assist_ratio_bp                        # medical assistance (医疗救助)
    int64_t assist_annual_cap_fen
    int64_t reduction_bp[N_FILING_KINDS]           # by KIND_*; long-term kinds stay 0
    int64_t high_cost_fen
    int32_t effective_from                         # yyyymmdd
    uint8_t crit_present
    uint8_t crit_n_tiers
    uint8_t assist_present


cdef dict _obj_field(dict row, str key, bint optional):
    v = row.get(key)
    if v is None:
        if optional:
            return None
        raise YidiError("INVALID_ARGUMENT", what=f"字段 {key}", problem="缺失（必填）", field=key)
    if type(v) is not dict:
        raise YidiError("INVALID_ARGUMENT", what=f"字段 {key}", problem="必须是对象", field=key)
    return v

cdef int _levels(dict d, str key, str path, int64_t hi, int64_t* out) except -1:
    """A {"1": x, "2": y, "3": z} map by institution level into out[1..N_LEVELS-1]."""
    cdef int lv
    m = _obj_field(d, key, False)
    out[0] = 0
    for lv in range(1, N_LEVELS):
        v = m.get(str(lv))
        if v is None:
            raise YidiError("INVALID_ARGUMENT", what=f"字段 {path}.{key}.{lv}", problem="缺失（必填）", field=key)
        out[lv] = _int_of(v, f"{path}.{key}.{lv}", 0, hi, "INVALID_ARGUMENT")
    return 0


cdef int _put_policy(Index self, dict row) except -1:
    cdef Policy pol
    cdef Store* st = &self.st
    cdef int64_t prev_up
    cdef int i
    memset(&pol, 0, sizeof(Policy))
    adm = _admdvs_field(row, "admdvs")
    if adm % 100 != 0:
        raise YidiError("INVALID_CODE", what=f"政策所属统筹区 {row['admdvs']}", problem="须以 00 结尾", field="admdvs")
    insutype = _enum_field(row, "insutype", INSUTYPES)
    pol.effective_from = <int32_t>_date_field(row, "effective_from")
    R = "INVALID_ARGUMENT"
    ip = _obj_field(row, "inpatient", False)
    _levels(ip, "deductible_fen", "inpatient", MAX_POLICY_FEN, pol.inpatient_deductible_fen)
    _levels(ip, "ratio_bp", "inpatient", BP_ONE, pol.inpatient_ratio_bp)
    pol.inpatient_retired_bonus_bp = _int_field(ip, "retired_bonus_bp", 0, BP_ONE, R)
    pol.inpatient_annual_cap_fen = _int_field(ip, "annual_cap_fen", 0, MAX_POLICY_FEN, R)
    pol.inpatient_subsequent_deductible_bp = -1
    if ip.get("subsequent_deductible_bp") is not None:
        pol.inpatient_subsequent_deductible_bp = _int_field(ip, "subsequent_deductible_bp", 0, BP_ONE, R)
    op = _obj_field(row, "outpatient", False)
    pol.outpatient_annual_deductible_fen = _int_field(op, "annual_deductible_fen", 0, MAX_POLICY_FEN, R)
    _levels(op, "ratio_bp", "outpatient", BP_ONE, pol.outpatient_ratio_bp)
    pol.outpatient_retired_bonus_bp = _int_field(op, "retired_bonus_bp", 0, BP_ONE, R)
    pol.outpatient_annual_cap_fen = _int_field(op, "annual_cap_fen", 0, MAX_POLICY_FEN, R)
    ci = _obj_field(row, "critical_illness", True)
    if ci is not None:
        pol.crit_present = 1
        pol.crit_threshold_fen = _int_field(ci, "threshold_fen", 0, MAX_POLICY_FEN, R)
        pol.crit_annual_cap_fen = _int_field(ci, "annual_cap_fen", 0, MAX_POLICY_FEN, R)
        tiers = _field(ci, "tiers")
        if type(tiers) is not list or not (1 <= len(tiers) <= MAX_TIERS):
            raise YidiError(R, what="critical_illness.tiers", problem=f"须为 1–{MAX_TIERS} 档的数组", field="tiers")
        prev_up = 0
        for i in range(len(tiers)):
            t = tiers[i]
            if type(t) is not dict:
                raise YidiError(R, what="critical_illness.tiers", problem="的每一档须为对象", field="tiers")
            pol.crit_ratio_bp[i] = _int_field(t, "ratio_bp", 0, BP_ONE, R)
            up = t.get("up_to_fen")
            if i == len(tiers) - 1:
                if up is not None:
                    raise YidiError(R, what="critical_illness.tiers", problem="最后一档的 up_to_fen 须为 null", field="tiers")
                pol.crit_up_to_fen[i] = -1
            else:
                if up is None:
                    raise YidiError(R, what="critical_illness.tiers", problem="只有最后一档的 up_to_fen 可以为 null", field="tiers")
                pol.crit_up_to_fen[i] = _int_of(up, "up_to_fen", 0, MAX_POLICY_FEN, R)
                if pol.crit_up_to_fen[i] <= prev_up:
                    raise YidiError(R, what="critical_illness.tiers", problem="的 up_to_fen 须严格递增（且大于 0）", field="tiers")
                prev_up = pol.crit_up_to_fen[i]
        pol.crit_n_tiers = len(tiers)
    asst = _obj_field(row, "assistance", True)
    if asst is not None:
        pol.assist_present = 1
        pol.assist_ratio_bp = _int_field(asst, "ratio_bp", 0, BP_ONE, R)
        pol.assist_annual_cap_fen = _int_field(asst, "annual_cap_fen", 0, MAX_POLICY_FEN, R)
    red = _obj_field(row, "reduction_bp", False)
    pol.reduction_bp[KIND_REFERRAL] = _int_field(red, "referral", 0, MAX_REDUCTION_REFERRAL_BP, R)
    pol.reduction_bp[KIND_EMERGENCY] = _int_field(red, "emergency", 0, MAX_REDUCTION_REFERRAL_BP, R)
    pol.reduction_bp[KIND_OTHER_TEMPORARY] = _int_field(red, "other_temporary", 0, MAX_REDUCTION_OTHER_TEMP_BP, R)
    pol.high_cost_fen = _int_field(row, "high_cost_fen", 0, MAX_POLICY_FEN, R)
    key = (adm, insutype)
    versions = self._policies.setdefault(key, [])
    for eff, _ in versions:
        if eff == pol.effective_from:
            raise YidiError(R, what=f"统筹区 {row['admdvs']} 险种 {row['insutype']} 生效日期 {eff} 的政策",
                            problem="重复", field="effective_from")
    chronic = _chronic_block(row)
    st.policies = <Policy*>grow_array(st.policies, &st.cap_policies, st.n_policies + 1, sizeof(Policy))
    st.policies[st.n_policies] = pol
    if chronic is not None:
        self._chronic[st.n_policies] = chronic
    versions.append((pol.effective_from, st.n_policies))
    versions.sort()
    st.n_policies += 1
    return 0


cdef dict _chronic_block(dict row):
    """SPEC §10.2: the optional ``chronic`` block, {code | "default": (deductible, ratio 1..3, bonus, cap)}."""
    cdef int64_t ratio[N_LEVELS]
    cdef Py_ssize_t n
    R = "INVALID_ARGUMENT"
    block = _obj_field(row, "chronic", True)
    if block is None:
        return None
    if type(block.get("default")) is not dict:
        raise YidiError(R, what="chronic", problem="须有 default（未单列病种的待遇）", field="chronic")
    out = {}
    for code, entry in block.items():
        if code != "default":
            _id_of(code, "慢特病病种编码", R, "chronic", &n)
        if type(entry) is not dict:
            raise YidiError(R, what=f"chronic.{code}", problem="必须是对象", field="chronic")
        _levels(entry, "ratio_bp", f"chronic.{code}", BP_ONE, ratio)
        out[code] = (_int_field(entry, "annual_deductible_fen", 0, MAX_POLICY_FEN, R), ratio[1], ratio[2], ratio[3],
                     _int_field(entry, "retired_bonus_bp", 0, BP_ONE, R),
                     _int_field(entry, "annual_cap_fen", 0, MAX_POLICY_FEN, R))
    return out


