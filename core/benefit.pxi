# Benefit calculation (SPEC §5) and the per-person, per-year accumulators (§5.5).
# Integer fen only; every input is bounded (limits.pxi) so no int64 overflows.

from cpython.object cimport PyObject

cdef int64_t INT64_BIG = 0x7FFFFFFFFFFFFFFF


cdef Acc* _acc_find(Store* st, Person* p, int year) noexcept nogil:
    cdef int32_t ai = p.first_acc_idx
    while ai >= 0:
        if st.accs[ai].year == year:
            return &st.accs[ai]
        ai = st.accs[ai].next_acc_idx
    return NULL

cdef int64_t _NO_ACCUMULATORS[N_ACCUMULATORS]    # all zero: a year with nothing settled yet

cdef const int64_t* _year_values(Store* st, Person* p, int year) noexcept nogil:
    """The person's accumulators for the year, by ACC_* (zeros if nothing was settled that year)."""
    cdef Acc* a = _acc_find(st, p, year)
    if a == NULL:
        return &_NO_ACCUMULATORS[0]
    return &a.value[0]

cdef tuple _ACC_KEYS = ACCUMULATOR_KEYS

cdef dict _acc_dict(const int64_t* values):
    """{accumulator name: value} in ACCUMULATOR_KEYS order."""
    cdef dict d = {}
    cdef int k
    for k in range(N_ACCUMULATORS):
        d[_ACC_KEYS[k]] = values[k]
    return d

cdef dict _accumulators(Index self, object psn_no, object year_obj):
    cdef int year = _year_of(year_obj)
    cdef int32_t pi = _person_idx(self, psn_no)
    if pi < 0:
        return _acc_dict(_NO_ACCUMULATORS)
    return _acc_dict(_year_values(&self.st, &self.st.persons[pi], year))

cdef tuple _deltas_of(object deltas, object sign):
    """A dict of deltas by accumulator name (what tests and tools write) as the tuple ``_add_deltas`` takes.

    Deltas are what a settlement computed (SPEC §5.5) and sign is +1 to apply
    them, -1 to cancel them; nothing a caller sends can make either malformed,
    and a cancellation of exactly the recorded deltas cannot go below zero.
    So every refusal here and in ``_add_deltas`` is a bug: InvariantError, not a reason code.
    """
    cdef int64_t s = 0
    if not _int64_of(sign, &s) or (s != 1 and s != -1):
        raise InvariantError(f"apply_deltas: sign {_echo(sign)} is neither +1 (apply) nor -1 (cancel)")
    if type(deltas) is not dict:
        raise InvariantError(f"apply_deltas: deltas must be a dict, not {type(deltas).__name__}")
    for key in deltas:
        if key not in ACCUMULATOR_KEYS:
            raise InvariantError(f"apply_deltas: unknown accumulator {_echo(key)}")
    return tuple([deltas.get(key, 0) for key in ACCUMULATOR_KEYS])


cdef int32_t _add_deltas(Index self, object psn_no, int year, tuple deltas, int sign) except -2:
    """sign * deltas (a tuple in ACCUMULATOR_KEYS order: what events record) added to the person's year, all or
    nothing (a cancellation must subtract exactly the deltas its settlement added); the person's row."""
    cdef Store* st = &self.st
    cdef int32_t pi = _person_idx(self, psn_no)
    cdef int64_t next_value[N_ACCUMULATORS]
    cdef int64_t d
    cdef Acc* a
    cdef int k
    if pi < 0:
        raise YidiError("PERSON_NOT_FOUND", psn_no=psn_no)
    if len(deltas) != N_ACCUMULATORS or (sign != 1 and sign != -1):
        raise InvariantError(f"add_deltas: {len(deltas)} deltas, sign {sign}")
    a = _acc_find(st, &st.persons[pi], year)
    for k in range(N_ACCUMULATORS):
        v = deltas[k]
        if not _int64_of(v, &d) or not (-MAX_ACCUMULATOR_FEN <= d <= MAX_ACCUMULATOR_FEN):
            raise InvariantError(f"add_deltas: delta {_echo(v)} of {ACCUMULATOR_KEYS[k]} is not a bounded int")
        next_value[k] = (a.value[k] if a != NULL else 0) + sign * d
        if next_value[k] < 0 or next_value[k] > MAX_ACCUMULATOR_FEN:
            raise InvariantError(f"add_deltas: {ACCUMULATOR_KEYS[k]} would become {next_value[k]}")
    if a == NULL:
        a = _acc_new(st, pi, year)
    memcpy(a.value, next_value, sizeof(next_value))
    return pi


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

# ---------------------------------------------------------------- the amounts
# A fee line's parts (SPEC §5.1), in fen.
ctypedef struct LineFen:
    int64_t amount_fen
    int64_t fulamt_ownpay_amt     # 全自费: not in the catalogue, or class C
    int64_t overlmt_selfpay       # 超限价自费: above the price cap
    int64_t preselfpay_amt        # 先行自付: class B's self-paid share
    int64_t inscp_scp_amt         # in policy scope
    int item_class                # CLASS_*, -1 = not in the catalogue
    int32_t item_idx              # its catalogue row, -1 = not in the catalogue

# One settlement's amounts (SPEC §5.1–§5.4), named as the national interface
# names them; all fen except pay_ratio_bp.
ctypedef struct BenefitFen:
    int64_t medfee_sumamt
    int64_t fulamt_ownpay_amt
    int64_t overlmt_selfpay
    int64_t preselfpay_amt
    int64_t inscp_scp_amt
    int64_t pay_ratio_bp
    int64_t act_pay_dedc
    int64_t hifp_pay
    int64_t crit_base_fen         # s of §5.3 step 4: this settlement's in-policy self-pay
    int64_t supplementary_fen     # the supplementary layer (core/money.py says where it is reported)
    int64_t maf_pay
    int64_t fund_pay_sumamt
    int64_t psn_cash_pay
    int64_t acct_pay              # personal account (SPEC §10.1)
    int64_t acct_mulaid_pay       # family accounts (共济)
    int64_t stay_deductible_fen   # inpatient: the stay's deductible D (§5.3 step 1, shared by its settlements: §10.3)
    int64_t first_of_stay         # inpatient: 1 when this is the stay's first settlement (the admission counts)

# The terms each step of SPEC §5 used, recorded by the step as it computes with them: an explanation
# (SPEC §10.7) is this written out, so the rules are stated once.
ctypedef struct Trace:
    int64_t base_ratio_bp         # §5.2: the level's ratio,
    int64_t retired_bonus_bp      # the retired bonus,
    int64_t reduction_bp          # the filing kind's reduction
    int64_t deductible_room_fen   # what this settlement's deductible could take (§5.3 steps 1–2, §5.4)
    int64_t basic_cap_fen         # the basic layer's annual cap and the room under it before
    int64_t basic_room_fen
    int64_t crit_cumulative_before_fen   # the supplementary layer's cumulative base before, its room
    int64_t crit_room_fen
    int64_t assist_base_fen       # medical assistance: its base and its room
    int64_t assist_room_fen
    bint assist_applies

cdef str _CLASS_LABEL = "ABC"


# ---------------------------------------------------------------- §5.1 lines
cdef void _price_item(Store* st, int32_t ci, int64_t unit_price_fen, int64_t qty_milli,
                      LineFen* out) noexcept nogil:
    """One line whose item ci (-1: not there) was looked up in the treatment province's catalogue (就医地目录)."""
    cdef CatalogItem* item
    cdef int64_t capped
    memset(out, 0, sizeof(LineFen))
    out.amount_fen = line_amount(unit_price_fen, qty_milli)
    out.item_idx = ci
    out.item_class = st.items[ci].item_class if ci >= 0 else -1
    if ci < 0 or out.item_class == CLASS_C:
        out.fulamt_ownpay_amt = out.amount_fen
        return
    item = &st.items[ci]
    capped = out.amount_fen
    if item.price_cap_fen > 0 and unit_price_fen > item.price_cap_fen:
        capped = line_amount(item.price_cap_fen, qty_milli)
        out.overlmt_selfpay = out.amount_fen - capped
    if item.item_class == CLASS_B:
        out.preselfpay_amt = bp(capped, item.selfpay_bp)
    out.inscp_scp_amt = capped - out.preselfpay_amt

cdef int _add_line(BenefitFen* b, LineFen* ln) except -1:
    """Sum a line into the bill, within MAX_BILL_FEN (which keeps every later product in int64)."""
    b.fulamt_ownpay_amt += ln.fulamt_ownpay_amt
    b.overlmt_selfpay += ln.overlmt_selfpay
    b.preselfpay_amt += ln.preselfpay_amt
    b.inscp_scp_amt += ln.inscp_scp_amt
    b.medfee_sumamt = b.fulamt_ownpay_amt + b.overlmt_selfpay + b.preselfpay_amt + b.inscp_scp_amt
    if b.medfee_sumamt > MAX_BILL_FEN:
        raise YidiError("INVALID_PRICE", what="本次结算费用总额", problem=f"超过上限 {MAX_BILL_FEN} 分")
    return 0

cdef class Bill:
    """One settlement's amounts (SPEC §5) in C: the totals, each line's parts, the policy used.

    The engine reads what it records from here (``breakdown``, ``deltas``)
    and the answer is written from here as protobuf bytes
    (``settlement_response``, wire.pxi), with no Python object per line.
    """
    cdef BenefitFen b
    cdef Trace trace
    cdef LineFen* lines
    cdef Py_ssize_t n
    cdef int64_t acc_before_values[N_ACCUMULATORS]   # the person's year accumulators the bill started from
    cdef Policy policy            # the policy row in force, with a chronic disease's terms swapped in (§10.2)
    cdef int64_t policy_row
    cdef str chronic_entry        # the chronic block's entry used ("" for none, "default" or the disease code)
    cdef readonly int policy_effective_from
    cdef readonly int year
    cdef readonly bint high_cost
    cdef readonly bint inpatient
    cdef int insutype

    @property
    def acc_before(self) -> tuple:
        """The person's year accumulators before this settlement, in ACCUMULATOR_KEYS order (SPEC §10.7)."""
        return tuple([self.acc_before_values[k] for k in range(N_ACCUMULATORS)])

    @property
    def stay_deductible_fen(self) -> int:
        """Inpatient: the stay's deductible D, decided at its first settlement (SPEC §10.3)."""
        return self.b.stay_deductible_fen
    cdef readonly str person_name       # what the answer shows, read while the rows were at hand
    cdef readonly str institution_name

    @property
    def insutype_code(self) -> str:
        return INSUTYPES[self.insutype]

    def __dealloc__(self):
        free(self.lines)

    @property
    def breakdown(self) -> tuple:
        """The amounts in the order of core/money.py's BREAKDOWN (events.Breakdown, common.proto's Breakdown)."""
        cdef int64_t out[N_BREAKDOWN]
        _breakdown_into(&self.b, self.insutype, out)
        return tuple([out[k] for k in range(N_BREAKDOWN)])

    @property
    def acct_payable(self) -> int:
        """SPEC §10.1: the in-policy personal share an account may pay (never 全自费 or 超限价 amounts)."""
        return self.b.inscp_scp_amt + self.b.preselfpay_amt - self.b.fund_pay_sumamt

    def set_accounts(self, int64_t acct_pay, int64_t acct_mulaid_pay):
        """The accounts' payments (decided by the engine from the balances): psn_cash_pay is what is left."""
        if acct_pay < 0 or acct_mulaid_pay < 0 or acct_pay + acct_mulaid_pay > self.acct_payable:
            raise InvariantError(f"accounts pay {acct_pay} + {acct_mulaid_pay} of {self.acct_payable} payable")
        self.b.acct_pay = acct_pay
        self.b.acct_mulaid_pay = acct_mulaid_pay
        self.b.psn_cash_pay = self.b.medfee_sumamt - self.b.fund_pay_sumamt - acct_pay - acct_mulaid_pay

    @property
    def deltas(self) -> tuple:
        """What this settlement adds to the year's accumulators (SPEC §5.5), in ACCUMULATOR_KEYS order."""
        cdef int64_t d[N_ACCUMULATORS]
        _deltas_into(&self.b, self.inpatient, d)
        return tuple([d[k] for k in range(N_ACCUMULATORS)])

    def line_results(self) -> list:
        """Per line: (chrgitm_lv, amount_fen, fulamt_ownpay_amt, overlmt_selfpay, preselfpay_amt, inscp_scp_amt)."""
        cdef LineFen* ln
        out = []
        for i in range(self.n):
            ln = &self.lines[i]
            out.append((_CLASS_LABEL[ln.item_class] if ln.item_class >= 0 else "", ln.amount_fen,
                        ln.fulamt_ownpay_amt, ln.overlmt_selfpay, ln.preselfpay_amt, ln.inscp_scp_amt))
        return out

    def settlement_response(self, *, str setl_id, str mdtrt_id, str psn_no, str psn_name, str fixmedins_code,
                            str fixmedins_name, str insuplc_admdvs, str mdtrtarea_admdvs, int visit_kind,
                            int insutype, str filing_id, int filing_kind, int setl_date, int status, lines,
                            risk_flags=(), int clearing_month=0, int64_t balc=0, int med_type=0,
                            str dise_codg="", bint mid_setl_flag=False):
        """A SettlementResponse (settlement.proto) holding this bill, its Settlement's fields named as in the
        contract (enums as their values); ``lines`` the settled FeeLines, in order; ``risk_flags`` RiskFlag
        values; ``balc`` the person's own account balance after."""
        cdef PbBuf s, part, outer
        cdef LineFen* ln
        cdef int64_t amounts[N_BREAKDOWN]
        cdef Py_ssize_t i = 0, k
        cdef char lv[1]
        memset(&s, 0, sizeof(PbBuf)); memset(&part, 0, sizeof(PbBuf)); memset(&outer, 0, sizeof(PbBuf))
        try:
            pb_str(&s, Settlement_setl_id, setl_id)
            pb_str(&s, Settlement_mdtrt_id, mdtrt_id)
            pb_str(&s, Settlement_psn_no, psn_no)
            pb_str(&s, Settlement_psn_name, psn_name)
            pb_str(&s, Settlement_fixmedins_code, fixmedins_code)
            pb_str(&s, Settlement_fixmedins_name, fixmedins_name)
            pb_str(&s, Settlement_insuplc_admdvs, insuplc_admdvs)
            pb_str(&s, Settlement_mdtrtarea_admdvs, mdtrtarea_admdvs)
            pb_int(&s, Settlement_visit_kind, visit_kind)
            pb_int(&s, Settlement_insutype, insutype)
            pb_str(&s, Settlement_filing_id, filing_id)
            pb_int(&s, Settlement_filing_kind, filing_kind)
            pb_int(&s, Settlement_setl_date, setl_date)
            pb_int(&s, Settlement_policy_effective_from, self.policy_effective_from)
            _breakdown_into(&self.b, self.insutype, amounts)
            for k in range(N_BREAKDOWN):                          # Breakdown: each amount by its field number
                if _BREAKDOWN_FIELD[k]:
                    pb_int(&part, _BREAKDOWN_FIELD[k], amounts[k])
            pb_message(&s, Settlement_breakdown, &part)
            for line in lines:                                    # LineResult, one per line
                ln = &self.lines[i]
                part.len = 0
                pb_str(&part, LineResult_feedetl_sn, line.feedetl_sn)
                pb_str(&part, LineResult_code, line.code)
                if ln.item_class >= 0:
                    lv[0] = b"ABC"[ln.item_class]
                    pb_bytes(&part, LineResult_chrgitm_lv, lv, 1)
                pb_int(&part, LineResult_det_item_fee_sumamt, ln.amount_fen)
                pb_int(&part, LineResult_fulamt_ownpay_amt, ln.fulamt_ownpay_amt)
                pb_int(&part, LineResult_overlmt_selfpay, ln.overlmt_selfpay)
                pb_int(&part, LineResult_preselfpay_amt, ln.preselfpay_amt)
                pb_int(&part, LineResult_inscp_scp_amt, ln.inscp_scp_amt)
                pb_message(&s, Settlement_lines, &part)
                i += 1
            pb_int(&s, Settlement_status, status)
            if risk_flags:                                        # repeated RiskFlag, packed
                part.len = 0
                for value in risk_flags:
                    pb_raw_varint(&part, <uint64_t>value)
                pb_message(&s, Settlement_risk_flags, &part)
            pb_int(&s, Settlement_clearing_month, clearing_month)
            pb_int(&s, Settlement_balc, balc)
            pb_int(&s, Settlement_med_type, med_type)
            pb_str(&s, Settlement_dise_codg, dise_codg)
            pb_int(&s, Settlement_mid_setl_flag, mid_setl_flag)
            pb_message(&outer, SettlementResponse_settlement, &s)
            return pb_bytes_of(&outer)
        finally:
            pb_free(&s); pb_free(&part); pb_free(&outer)


# Each amount's field number in the contract's Breakdown, by its name in core/money.py; 0, and not written, for
# one the contract lacks (a test build's made-up layer: tests/core/test_money.py keeps the real declaration and the
# contract equal).  Declared in field-number order, so written in it.
cdef int _BREAKDOWN_FIELD[N_BREAKDOWN]

cdef int _number_the_breakdown() except -1:
    for k, name in enumerate(BREAKDOWN_KEYS):
        _BREAKDOWN_FIELD[k] = _wire_numbers.Breakdown.get(name, 0)
    return 0

_number_the_breakdown()


cdef void _breakdown_into(BenefitFen* b, int insutype, int64_t* out) noexcept nogil:
    """The national breakdown of a bill, at the positions core/money.py declares; each layer's payment in the
    field it is reported as for the person's insutype (the supplementary layer: hifmi_pay or hifob_pay)."""
    memset(out, 0, N_BREAKDOWN * sizeof(int64_t))
    out[BD_MEDFEE_SUMAMT] = b.medfee_sumamt
    out[BD_FULAMT_OWNPAY_AMT] = b.fulamt_ownpay_amt
    out[BD_OVERLMT_SELFPAY] = b.overlmt_selfpay
    out[BD_PRESELFPAY_AMT] = b.preselfpay_amt
    out[BD_INSCP_SCP_AMT] = b.inscp_scp_amt
    out[BD_ACT_PAY_DEDC] = b.act_pay_dedc
    out[BD_PAY_RATIO_BP] = b.pay_ratio_bp
    out[LAYER_BASIC] = b.hifp_pay
    out[LAYER_SUPPLEMENTARY_390 if insutype == INSUTYPE_390 else LAYER_SUPPLEMENTARY_310] = b.supplementary_fen
    out[LAYER_ASSISTANCE] = b.maf_pay
    out[BD_FUND_PAY_SUMAMT] = b.fund_pay_sumamt
    out[BD_PSN_CASH_PAY] = b.psn_cash_pay
    out[BD_ACCT_PAY] = b.acct_pay
    out[BD_ACCT_MULAID_PAY] = b.acct_mulaid_pay


cdef void _deltas_into(BenefitFen* b, bint inpatient, int64_t* d) noexcept nogil:
    memset(d, 0, N_ACCUMULATORS * sizeof(int64_t))
    if inpatient:
        d[ACC_INPATIENT_FUND_PAID_FEN] = b.hifp_pay
        d[ACC_INPATIENT_ADMISSIONS] = b.first_of_stay
        d[ACC_CRIT_BASE_FEN] = b.crit_base_fen
        d[ACC_CRIT_PAID_FEN] = b.supplementary_fen
    else:
        d[ACC_OUTPATIENT_FUND_PAID_FEN] = b.hifp_pay
        d[ACC_OUTPATIENT_DEDUCTIBLE_USED_FEN] = b.act_pay_dedc
    d[ACC_ASSIST_PAID_FEN] = b.maf_pay


ctypedef struct LineIn:
    const char* code
    Py_ssize_t code_n
    int64_t unit_price_fen
    int64_t qty_milli
    uint64_t hash
    uint64_t slot                 # where the catalogue table's probe for the code stands


cdef extern from *:
    """
    #include <structmember.h>

    /* The type of fee line read last (events.FeeLine) when it keeps code, unit_price_fen and qty_milli in
       object slots that the generic attribute look-up reads: their offsets, so a bill reads a line's fields
       in place instead of by three look-ups by name. */
    static PyObject* yidi_line_type = NULL;
    static Py_ssize_t yidi_line_off[3];

    static int yidi_learn_line_type(PyTypeObject* tp) {
        static const char* const names[3] = {"code", "unit_price_fen", "qty_milli"};
        Py_ssize_t off[3];
        PyObject* d;
        int k, slot;
        if (tp->tp_getattro != PyObject_GenericGetAttr) return 0;
        for (k = 0; k < 3; k++) {
            d = PyObject_GetAttrString((PyObject*)tp, names[k]);
            if (d == NULL) { PyErr_Clear(); return 0; }
            slot = Py_IS_TYPE(d, &PyMemberDescr_Type) && ((PyMemberDescrObject*)d)->d_member->type == T_OBJECT_EX
                   && PyType_IsSubtype(tp, ((PyMemberDescrObject*)d)->d_common.d_type);
            if (slot) off[k] = ((PyMemberDescrObject*)d)->d_member->offset;
            Py_DECREF(d);
            if (!slot) return 0;
        }
        Py_INCREF(tp);
        Py_XSETREF(yidi_line_type, (PyObject*)tp);
        memcpy(yidi_line_off, off, sizeof(off));
        return 1;
    }

    /* A line's three fields, borrowed from it (the caller holds the line), if its type is learned (or can be)
       and all three are set; else 0 (read them by name). */
    static int yidi_line_fields(PyObject* line, PyObject** out) {
        int k;
        if ((PyObject*)Py_TYPE(line) != yidi_line_type && !yidi_learn_line_type(Py_TYPE(line))) return 0;
        for (k = 0; k < 3; k++) {
            out[k] = *(PyObject**)((char*)line + yidi_line_off[k]);
            if (out[k] == NULL) return 0;
        }
        return 1;
    }

    /* Start reading a bill's line objects (a list or tuple), then what each refers to and the characters of
       its code (after a str header, most often in the next cache line). */
    static void yidi_touch_lines(PyObject* seq) {
        PyObject** items = PySequence_Fast_ITEMS(seq);
        Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq);
        PyObject *value, *code;
        int k;
        for (i = 0; i < n; i++) YIDI_TOUCH(items[i]);
        for (i = 0; i < n; i++) {
            if ((PyObject*)Py_TYPE(items[i]) != yidi_line_type) continue;
            for (k = 0; k < 3; k++) {
                value = *(PyObject**)((char*)items[i] + yidi_line_off[k]);
                if (value != NULL) YIDI_TOUCH(value);
            }
            code = *(PyObject**)((char*)items[i] + yidi_line_off[0]);
            if (code != NULL && PyUnicode_CheckExact(code) && PyUnicode_IS_COMPACT_ASCII(code)
                    && PyUnicode_GET_LENGTH(code) > 0) {
                YIDI_TOUCH((const char*)PyUnicode_DATA(code) + PyUnicode_GET_LENGTH(code) - 1);
            }
        }
    }
    """
    bint yidi_line_fields(object line, PyObject** out)
    void yidi_touch_lines(object seq)


cdef int _price_lines(Store* st, uint32_t province, object lines, Bill bill) except -1:
    """§5.1 for every line, summed into the bill.  ``lines``: a list or tuple of (code, price, qty) tuples or
    events.FeeLine.

    In passes, so that the memory reads of a bill's lines overlap instead of waiting one after another (a
    bill's items are scattered over a catalogue of ~180,000, and its line objects over the heap): start
    reading every line object and its fields; read and check every line; take each code's candidate row from
    the hash table and start reading it; start reading each candidate's code in the arena; then compare the
    codes (tbl_verify: the same answer as tbl_find) and price.
    """
    cdef Py_ssize_t i = 0, n = len(lines)
    cdef LineIn* inp
    cdef int32_t* idx
    cdef Table* t = &st.t_item
    bill.n = n
    bill.lines = <LineFen*>malloc(max(1, n) * (sizeof(LineFen) + sizeof(LineIn) + sizeof(int32_t)))
    if bill.lines == NULL:
        raise MemoryError()
    inp = <LineIn*>(bill.lines + n)
    idx = <int32_t*>(inp + n)
    yidi_touch_lines(lines)
    for line in lines:
        _line_in(line, &inp[i])
        inp[i].hash = item_hash(inp[i].code, inp[i].code_n, province)
        inp[i].slot = inp[i].hash & t.mask
        i += 1
    for i in range(n):
        idx[i] = tbl_candidate(t, inp[i].hash, &inp[i].slot) if t.slots != NULL else -1
        if idx[i] >= 0:
            YIDI_TOUCH(&st.items[idx[i]])
    for i in range(n):
        if idx[i] >= 0:                     # the code may cross a cache line: its first and last bytes
            YIDI_TOUCH(key_bytes(st, T_ITEM, idx[i]))
            YIDI_TOUCH(key_bytes(st, T_ITEM, idx[i]) + st.items[idx[i]].code_len - 1)
    for i in range(n):
        idx[i] = tbl_verify(st, t, T_ITEM, inp[i].hash, inp[i].slot, idx[i], inp[i].code, inp[i].code_n, province)
        _price_item(st, idx[i], inp[i].unit_price_fen, inp[i].qty_milli, &bill.lines[i])
        _add_line(&bill.b, &bill.lines[i])
    return 0


cdef int _line_in(object line, LineIn* out) except -1:
    cdef PyObject* fields[3]
    if type(line) is tuple or type(line) is list:
        if len(line) != 3:
            # the engine builds these tuples from lines check_line has passed: a bad shape is its bug
            raise InvariantError("benefit: a fee line must be a (code, unit_price_fen, qty_milli) tuple")
        code, price_o, qty_o = line
    elif yidi_line_fields(line, fields):
        code, price_o, qty_o = <object>fields[0], <object>fields[1], <object>fields[2]
    else:
        try:
            code, price_o, qty_o = line.code, line.unit_price_fen, line.qty_milli
        except AttributeError:
            raise InvariantError("benefit: a fee line must be a (code, unit_price_fen, qty_milli) tuple "
                                 "or an events.FeeLine") from None
    out.code = _line_code_of(code, None, &out.code_n)
    out.unit_price_fen = _unit_price_fen_of(price_o, None, code)
    out.qty_milli = _qty_milli_of(qty_o, None, code)
    return 0


# ---------------------------------------------------------------- §5.2 ratio
cdef int64_t _ratio_bp(Policy* pol, int level, bint retired, int kind, bint inpatient, Trace* t) noexcept nogil:
    if inpatient:
        t.base_ratio_bp = pol.inpatient_ratio_bp[level]
        t.retired_bonus_bp = pol.inpatient_retired_bonus_bp if retired else 0
    else:
        t.base_ratio_bp = pol.outpatient_ratio_bp[level]
        t.retired_bonus_bp = pol.outpatient_retired_bonus_bp if retired else 0
    t.reduction_bp = pol.reduction_bp[kind]
    return imin(BP_ONE, imax(0, t.base_ratio_bp + t.retired_bonus_bp - t.reduction_bp))


# ---------------------------------------------------------------- §5.3 inpatient, step by step
cdef int64_t _deductible_fen(Policy* pol, int level, const int64_t* acc) noexcept nogil:
    """Step 1: D, reduced for a later admission of the year when the policy says so."""
    cdef int64_t d = pol.inpatient_deductible_fen[level]
    if acc[ACC_INPATIENT_ADMISSIONS] >= 1 and pol.inpatient_subsequent_deductible_bp >= 0:
        d = bp(d, pol.inpatient_subsequent_deductible_bp)
    return d

cdef inline int64_t _basic_fund_fen(BenefitFen* b, int64_t annual_cap_fen, int64_t paid_fen, Trace* t) noexcept nogil:
    """Step 3 (and §5.4): the ratio of what is past the deductible, within the year's cap room."""
    t.basic_cap_fen = annual_cap_fen
    t.basic_room_fen = imax(0, annual_cap_fen - paid_fen)
    return imin(bp(b.inscp_scp_amt - b.act_pay_dedc, b.pay_ratio_bp), t.basic_room_fen)

cdef int64_t _tiers_pay(Policy* pol, int64_t before, int64_t after) noexcept nogil:
    """Step 4's tiers: pay for the cumulative base moving from before to after."""
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

cdef int64_t _supplementary_fen(Policy* pol, int64_t s_fen, const int64_t* acc, Trace* t) noexcept nogil:
    """Step 4: critical illness on the year's in-policy self-pay, within its annual cap room."""
    if not pol.crit_present:
        return 0
    t.crit_cumulative_before_fen = acc[ACC_CRIT_BASE_FEN]
    t.crit_room_fen = imax(0, pol.crit_annual_cap_fen - acc[ACC_CRIT_PAID_FEN])
    return imin(_tiers_pay(pol, t.crit_cumulative_before_fen, t.crit_cumulative_before_fen + s_fen), t.crit_room_fen)

cdef void _settle_inpatient(Policy* pol, int level, const int64_t* acc, BenefitFen* b,
                            int64_t stay_deductible_fen, int64_t applied_fen, Trace* t) noexcept nogil:
    """§5.3 steps 1–4; a stay settled in parts (§10.3) shares its D: ``stay_deductible_fen`` (-1: this is the first
    settlement, decide D now) less what its earlier settlements applied."""
    b.first_of_stay = 1 if stay_deductible_fen < 0 else 0
    b.stay_deductible_fen = _deductible_fen(pol, level, acc) if stay_deductible_fen < 0 else stay_deductible_fen
    t.deductible_room_fen = imax(0, b.stay_deductible_fen - applied_fen)
    b.act_pay_dedc = imin(b.inscp_scp_amt, t.deductible_room_fen)                          # steps 1, 2
    b.hifp_pay = _basic_fund_fen(b, pol.inpatient_annual_cap_fen, acc[ACC_INPATIENT_FUND_PAID_FEN], t)   # step 3
    b.crit_base_fen = b.inscp_scp_amt - b.hifp_pay                                         # step 4
    b.supplementary_fen = _supplementary_fen(pol, b.crit_base_fen, acc, t)


# ---------------------------------------------------------------- §5.4 outpatient
cdef void _settle_outpatient(Policy* pol, const int64_t* acc, BenefitFen* b, Trace* t) noexcept nogil:
    """The year's deductible room instead of a per-visit deductible; no supplementary layer."""
    t.deductible_room_fen = imax(0, pol.outpatient_annual_deductible_fen - acc[ACC_OUTPATIENT_DEDUCTIBLE_USED_FEN])
    b.act_pay_dedc = imin(b.inscp_scp_amt, t.deductible_room_fen)
    b.hifp_pay = _basic_fund_fen(b, pol.outpatient_annual_cap_fen, acc[ACC_OUTPATIENT_FUND_PAID_FEN], t)


# ---------------------------------------------------------------- §5.3 steps 5 and 6, both kinds
cdef int64_t _assistance_fen(Person* p, Policy* pol, const int64_t* acc, BenefitFen* b, Trace* t) noexcept nogil:
    """Step 5: medical assistance on what the funds left of the in-policy amount."""
    t.assist_applies = p.assistance and pol.assist_present
    if not t.assist_applies:
        return 0
    t.assist_base_fen = b.inscp_scp_amt - b.hifp_pay - b.supplementary_fen
    t.assist_room_fen = imax(0, pol.assist_annual_cap_fen - acc[ACC_ASSIST_PAID_FEN])
    return imin(bp(t.assist_base_fen, pol.assist_ratio_bp), t.assist_room_fen)

cdef void _totals(BenefitFen* b) noexcept nogil:
    """Step 6."""
    b.fund_pay_sumamt = b.hifp_pay + b.supplementary_fen + b.maf_pay
    b.psn_cash_pay = b.medfee_sumamt - b.fund_pay_sumamt


# ---------------------------------------------------------------- inputs and the answer
cdef int32_t _benefit_person(Index self, object psn_no) except -2:
    cdef int32_t pi = _person_idx(self, psn_no)
    if pi < 0:
        raise YidiError("PERSON_NOT_FOUND", psn_no=psn_no)
    return pi

cdef int32_t _benefit_institution(Index self, object fixmedins_code) except -2:
    cdef int32_t ii = _inst_idx(self, fixmedins_code)
    if ii < 0:
        raise YidiError("INSTITUTION_UNKNOWN", fixmedins_code=fixmedins_code)
    return ii

cdef int _filing_kind_of(object filing_kind) except -1:
    if type(filing_kind) is not str or filing_kind not in FILING_KINDS:
        raise YidiError("INVALID_ENUM", what=f"备案类型 {_echo(filing_kind)}", problem=f"无效，应为：{'、'.join(FILING_KINDS)}")
    return FILING_KINDS.index(filing_kind)

cdef int _lines_shape_ok(object lines) except -1:
    if type(lines) is not list and type(lines) is not tuple:
        raise InvariantError(f"benefit: lines must be a list of fee lines, not {type(lines).__name__}")
    return _line_count_ok(len(lines), "一次结算")

cdef Policy* _policy_in_force(Index self, Person* p, int64_t date, object psn_no) except NULL:
    cdef int64_t pol_i = _policy_idx(self, p.insuplc_admdvs, p.insutype, date)
    if pol_i < 0:
        raise YidiError("POLICY_MISSING", region=_region_label(self, pooling_of(p.insuplc_admdvs)),
                        insutype=INSUTYPES[p.insutype], on=_date_zh(date), benefit="", settle="结算", psn_no=psn_no)
    return &self.st.policies[pol_i]

cdef dict _benefit_answer(Bill bill, object lines):
    """The dict form of a bill (Index.benefit), for callers that want names."""
    answer = dict(zip(BREAKDOWN_KEYS, bill.breakdown))
    answer["policy_effective_from"] = bill.policy_effective_from
    answer["high_cost"] = bill.high_cost
    answer["year"] = bill.year
    answer["line_results"] = [
        {"code": (line[0] if type(line) is tuple or type(line) is list else line.code), "amount_fen": r[1],
         "fulamt_ownpay_amt": r[2], "overlmt_selfpay": r[3], "preselfpay_amt": r[4], "inscp_scp_amt": r[5],
         "chrgitm_lv": r[0]}
        for line, r in zip(lines, bill.line_results())]
    answer["deltas"] = dict(zip(ACCUMULATOR_KEYS, bill.deltas))
    return answer



# ---------------------------------------------------------------- SPEC §5, in order
cdef int _chronic_policy(Index self, Policy* pol, Person* p, int64_t date, object chronic, Policy* out,
                         int64_t* acc, Bill bill) except -1:
    """SPEC §10.2: ``out`` = the policy with its outpatient terms replaced by the disease's chronic entry (or the
    default), ``acc`` with the outpatient accumulators replaced by the disease's; check 12 (POLICY_MISSING)."""
    code, deductible_used, fund_paid = chronic
    entries = self._chronic.get(<int64_t>(pol - self.st.policies))
    if entries is None:
        raise YidiError("POLICY_MISSING", region=_region_label(self, pooling_of(p.insuplc_admdvs)),
                        insutype=INSUTYPES[p.insutype], on=_date_zh(date), benefit="门诊慢特病",
                        settle=f"按门诊慢特病「{code}」结算（可按普通门诊结算）")
    entry = entries.get(code) or entries["default"]
    bill.chronic_entry = code if code in entries else "default"
    out[0] = pol[0]
    out.outpatient_annual_deductible_fen = entry[0]
    out.outpatient_ratio_bp[1], out.outpatient_ratio_bp[2], out.outpatient_ratio_bp[3] = entry[1], entry[2], entry[3]
    out.outpatient_retired_bonus_bp = entry[4]
    out.outpatient_annual_cap_fen = entry[5]
    acc[ACC_OUTPATIENT_DEDUCTIBLE_USED_FEN] = deductible_used
    acc[ACC_OUTPATIENT_FUND_PAID_FEN] = fund_paid
    return 0


cdef Bill _bill(Index self, object psn_no, object fixmedins_code, object filing_kind, bint inpatient,
                object date_obj, object lines, object chronic=None, object stay=None, object acc_override=None):
    """One settlement's amounts, line results and accumulator deltas; changes nothing."""
    cdef Store* st = &self.st
    cdef int64_t date = _date_of(date_obj, "结算日期", None)
    cdef Person* p
    cdef Institution* it
    _warm_person_institution(st, psn_no, fixmedins_code)
    p = &st.persons[_benefit_person(self, psn_no)]
    if p.first_acc_idx >= 0:
        YIDI_TOUCH(&st.accs[p.first_acc_idx])
    it = &st.insts[_benefit_institution(self, fixmedins_code)]
    cdef int kind = _filing_kind_of(filing_kind)
    cdef Policy* pol
    cdef Bill bill = Bill.__new__(Bill)
    cdef BenefitFen* b = &bill.b
    cdef Trace* t = &bill.trace
    cdef const int64_t* acc
    cdef Policy chronic_pol
    cdef int64_t chronic_acc[N_ACCUMULATORS]
    cdef int64_t stay_d = -1, applied = 0
    cdef int k
    _lines_shape_ok(lines)
    pol = _policy_in_force(self, p, date, psn_no)
    if acc_override is not None:   # an explanation (SPEC §10.7): the accumulators as they stood then
        if len(acc_override) != N_ACCUMULATORS:
            raise InvariantError(f"bill: {len(acc_override)} accumulators")
        for k in range(N_ACCUMULATORS):
            bill.acc_before_values[k] = acc_override[k]
    else:
        memcpy(bill.acc_before_values, _year_values(st, p, <int>(date // 10000)), sizeof(chronic_acc))
    memcpy(chronic_acc, bill.acc_before_values, sizeof(chronic_acc))
    bill.policy_row = <int64_t>(pol - st.policies)
    bill.chronic_entry = ""
    if chronic is not None and not inpatient:
        _chronic_policy(self, pol, p, date, chronic, &chronic_pol, chronic_acc, bill)
        pol = &chronic_pol
    bill.policy = pol[0]
    memset(b, 0, sizeof(BenefitFen))
    memset(t, 0, sizeof(Trace))
    _price_lines(st, province_of(it.admdvs), lines, bill)                                     # 5.1
    b.pay_ratio_bp = _ratio_bp(pol, it.level, p.person_type == PTYPE_RETIRED, kind, inpatient, t)  # 5.2
    acc = &chronic_acc[0]
    if inpatient:
        if stay is not None:
            stay_d, applied = stay
        _settle_inpatient(pol, it.level, acc, b, stay_d, applied, t)                            # 5.3 steps 1-4
    else:
        _settle_outpatient(pol, acc, b, t)                                                      # 5.4
    b.maf_pay = _assistance_fen(p, pol, acc, b, t)                                              # 5.3 step 5
    _totals(b)                                                                                  # 5.3 step 6
    if YIDI_DEBUG:
        _check_benefit_money(b)
    bill.policy_effective_from = pol.effective_from
    bill.year = <int>(date // 10000)
    bill.high_cost = b.medfee_sumamt > pol.high_cost_fen
    bill.inpatient = inpatient
    bill.insutype = p.insutype
    bill.person_name = arena_str(st, p.name_off, p.name_len)
    bill.institution_name = arena_str(st, it.name_off, it.name_len)
    return bill


cdef dict _benefit(Index self, object psn_no, object fixmedins_code, object filing_kind, bint inpatient,
                   object date_obj, object lines, object chronic=None):
    return _benefit_answer(_bill(self, psn_no, fixmedins_code, filing_kind, inpatient, date_obj, lines, chronic),
                           lines)


# ---------------------------------------------------------------- SPEC §10.7 the explanation of a settlement
cdef dict _explain(Index self, object psn_no, object fixmedins_code, object filing_kind, bint inpatient, object date_obj,
                   object lines, object chronic, object stay, tuple acc_before, tuple accounts):
    """Everything a province needs to recompute a settlement to the fen, written out from the one computation
    (``_bill`` from the recorded inputs, with the recorded account payments): per line its catalogue terms and
    the four parts of §5.1, the policy row and the terms each step used (``Trace``), each fund layer's base,
    ratio, cap room before and amount, and the accumulators before; ``breakdown`` and ``deltas`` are this
    computation's results, which the caller compares with the recorded ones."""
    cdef Store* st = &self.st
    cdef Bill bill = _bill(self, psn_no, fixmedins_code, filing_kind, inpatient, date_obj, lines, chronic, stay,
                           acc_before)
    cdef Trace* t = &bill.trace
    cdef Policy* pol = &bill.policy
    cdef BenefitFen* b = &bill.b
    cdef LineFen* ln
    cdef Person* p = &st.persons[_benefit_person(self, psn_no)]
    cdef Institution* it = &st.insts[_benefit_institution(self, fixmedins_code)]
    bill.set_accounts(*accounts)
    out_lines = []
    for i in range(len(lines)):
        line, ln = lines[i], &bill.lines[i]
        out_lines.append({
            "feedetl_sn": line.feedetl_sn, "code": line.code, "unit_price_fen": line.unit_price_fen,
            "qty_milli": line.qty_milli, "chrgitm_lv": _CLASS_LABEL[ln.item_class] if ln.item_class >= 0 else "",
            "selfpay_bp": st.items[ln.item_idx].selfpay_bp if ln.item_idx >= 0 else 0,
            "price_cap_fen": st.items[ln.item_idx].price_cap_fen if ln.item_idx >= 0 else 0,
            "amount_fen": ln.amount_fen, "fulamt_ownpay_amt": ln.fulamt_ownpay_amt,
            "overlmt_selfpay": ln.overlmt_selfpay, "preselfpay_amt": ln.preselfpay_amt,
            "inscp_scp_amt": ln.inscp_scp_amt})
    layers = [{"layer": "basic", "base_fen": b.inscp_scp_amt - b.act_pay_dedc, "ratio_bp": b.pay_ratio_bp,
               "cap_fen": t.basic_cap_fen, "room_before_fen": t.basic_room_fen, "paid_fen": b.hifp_pay}]
    if inpatient and pol.crit_present:
        tiers, lo = [], 0
        for k in range(pol.crit_n_tiers):
            tiers.append({"from_fen": lo, "up_to_fen": pol.crit_up_to_fen[k], "ratio_bp": pol.crit_ratio_bp[k]})
            lo = pol.crit_up_to_fen[k]
        layers.append({"layer": "critical_illness", "base_fen": b.crit_base_fen,
                       "cumulative_before_fen": t.crit_cumulative_before_fen, "threshold_fen": pol.crit_threshold_fen,
                       "tiers": tiers, "cap_fen": pol.crit_annual_cap_fen, "room_before_fen": t.crit_room_fen,
                       "paid_fen": b.supplementary_fen})
    if t.assist_applies:
        layers.append({"layer": "assistance", "base_fen": t.assist_base_fen, "ratio_bp": pol.assist_ratio_bp,
                       "cap_fen": pol.assist_annual_cap_fen, "room_before_fen": t.assist_room_fen,
                       "paid_fen": b.maf_pay})
    return {
        "policy_admdvs": f"{pooling_of(p.insuplc_admdvs)}", "insutype": INSUTYPES[p.insutype],
        "policy_effective_from": pol.effective_from, "policy_row": bill.policy_row,
        "catalog_province": f"{province_of(it.admdvs)}", "chronic_entry": bill.chronic_entry,
        "fixmedins_level": it.level, "retired": p.person_type == PTYPE_RETIRED,
        "filing_kind": FILING_KINDS[_filing_kind_of(filing_kind)],
        "base_ratio_bp": t.base_ratio_bp, "retired_bonus_bp": t.retired_bonus_bp, "reduction_bp": t.reduction_bp,
        "deductible_fen": t.deductible_room_fen, "lines": out_lines, "layers": layers,
        "accumulators_before": bill.acc_before, "breakdown": bill.breakdown, "deltas": bill.deltas,
    }
