# The outpatient settle loop: a run of new outpatient settlements decided, applied and recorded in one call.
# Each item is settled exactly as Engine.perform and Gateway._record would settle
# it — core/settlement.py's decide_outpatient, _settle and apply_settled, core/funds.py's booking — into the
# same event, answer, archive changes and record, in the same order of effects.  Only the plain case is taken
# here: an item with a credential, a chronic-disease visit or a refund line, and any item that would be refused,
# is handed back untouched (the loop stops before it) for the Python path to decide, so a refusal is always
# the Python path's own, word for word.  Nothing of an item changes before all of its checks have passed.

from libc.stdio cimport snprintf

cdef extern from "Python.h":
    int PyObject_GenericSetAttr(object o, object name, object value) except -1

# The Python names it uses, looked up at the first call (core's Python modules import this one).
cdef bint _named = False
cdef object _OutpatientSettle, _YidiError, _ApplyFailed
cdef object _VisitFacts, _SettlementFacts, _Breakdown, _Settled, _encoder, _FORMAT
cdef int _ID_DIGITS
cdef object _ArchivedVisit, _ArchivedSettlement, _PutVisit, _PutSettlement, _Position, _Month, _astuple
cdef object _FILING_KIND_PB, _RISK_FLAG_VALUES, _OUTPATIENT, _SETTLED
cdef Blake2b _ON_SITE_STATE    # the on-site sample's keyed BLAKE2b-64 (ledger.pxi), its key block compressed once
cdef int64_t _ON_SITE_BP
cdef tuple _CLEARED_AT, _ACCOUNTS_AT
cdef int _MED_TYPE_UNSPECIFIED, _SETTLEMENT_STATUS_SETTLED, _VISIT_KIND_OUTPATIENT
cdef int _HIGH_COST, _SAME_DAY_REPEAT, _ON_SITE_CHECK, _SAME_DAY_REPEAT_FROM, _SAME_DAY_WINDOW_DAYS
cdef Py_ssize_t _N_TOTALS, _MONEY_AT, _FLAGS_AT, _FUND_AT


cdef int _settle_names() except -1:
    global _named, _OutpatientSettle, _YidiError, _ApplyFailed
    global _VisitFacts, _SettlementFacts, _Breakdown, _Settled, _encoder, _FORMAT, _ID_DIGITS
    global _ArchivedVisit, _ArchivedSettlement, _PutVisit, _PutSettlement, _Position, _Month, _astuple
    global _ON_SITE_BP, _FILING_KIND_PB, _RISK_FLAG_VALUES, _OUTPATIENT, _SETTLED, _CLEARED_AT, _ACCOUNTS_AT
    global _MED_TYPE_UNSPECIFIED, _SETTLEMENT_STATUS_SETTLED, _VISIT_KIND_OUTPATIENT
    global _HIGH_COST, _SAME_DAY_REPEAT, _ON_SITE_CHECK, _SAME_DAY_REPEAT_FROM, _SAME_DAY_WINDOW_DAYS
    global _N_TOTALS, _MONEY_AT, _FLAGS_AT, _FUND_AT
    from core import events, funds, settlement
    from core.archive import ArchivedSettlement, ArchivedVisit, PutSettlement, PutVisit
    from core.commands import OutpatientSettle
    from core.engine import ApplyFailed
    from core.errors import YidiError
    from core.money import ACCOUNTS, CLEARED_KEYS
    from core.visits import OUTPATIENT, SETTLED
    from core._wire_numbers import MED_TYPE_UNSPECIFIED, SETTLEMENT_STATUS_SETTLED, VISIT_KIND_OUTPATIENT
    _OutpatientSettle, _YidiError, _ApplyFailed = OutpatientSettle, YidiError, ApplyFailed
    _VisitFacts, _SettlementFacts, _Breakdown, _Settled = (events.VisitFacts, events.SettlementFacts,
                                                           events.Breakdown, events.Settled)
    _encoder, _FORMAT, _ID_DIGITS = events._ENCODER, events.FORMAT_MSGPACK, events.ID_DIGITS
    _ArchivedVisit, _ArchivedSettlement, _PutVisit, _PutSettlement = (ArchivedVisit, ArchivedSettlement, PutVisit,
                                                                      PutSettlement)
    _Position, _Month, _astuple = funds.Position, funds.Month, msgspec.structs.astuple
    key = funds.ON_SITE_CHECK_KEY
    if not 1 <= len(key) <= 64:
        raise InvariantError("the on-site sample's key must be 1 to 64 bytes")
    _b2_init(&_ON_SITE_STATE, 8, <const uint8_t*><const char*>key, len(key))
    _ON_SITE_BP = funds.ON_SITE_CHECK_BP
    _FILING_KIND_PB, _RISK_FLAG_VALUES = settlement._FILING_KIND_PB, funds.RISK_FLAG_VALUES
    _OUTPATIENT, _SETTLED = OUTPATIENT, SETTLED
    _CLEARED_AT = tuple([BREAKDOWN_KEYS.index(k) for k in CLEARED_KEYS[:-1]])   # money.cleared, by position
    _ACCOUNTS_AT = tuple([BREAKDOWN_KEYS.index(k) for k in ACCOUNTS])
    _MED_TYPE_UNSPECIFIED, _SETTLEMENT_STATUS_SETTLED = MED_TYPE_UNSPECIFIED, SETTLEMENT_STATUS_SETTLED
    _VISIT_KIND_OUTPATIENT = VISIT_KIND_OUTPATIENT
    _HIGH_COST, _SAME_DAY_REPEAT, _ON_SITE_CHECK = funds.HIGH_COST, funds.SAME_DAY_REPEAT, funds.ON_SITE_CHECK
    _SAME_DAY_REPEAT_FROM, _SAME_DAY_WINDOW_DAYS = funds.SAME_DAY_REPEAT_FROM, funds.SAME_DAY_WINDOW_DAYS
    _N_TOTALS, _MONEY_AT, _FLAGS_AT, _FUND_AT = funds.N_TOTALS, funds._MONEY, funds._FLAGS, funds._FUND
    _named = True
    return 0


def plain_outpatient(command):
    """True for an outpatient settlement this loop settles itself: no credential, not a chronic-disease visit, no
    refund line (a settlement that would be refused is also handed back, when the loop meets its refusal)."""
    if not _named:
        _settle_names()
    if type(command) is not _OutpatientSettle:
        return False
    if command.credential is not None or command.med_type or command.dise_codg:
        return False
    for line in command.lines:
        if line.init_feedetl_sn:
            return False
    return True


def settle_outpatients(engine, str caller, list items, int64_t first_seq, bint authorize, admit, make_record):
    """Settle ``items`` — (OutpatientSettle, request digest) pairs, each new to the ledger and each
    ``plain_outpatient`` — in order as records ``first_seq``, ``first_seq + 1`` ...; the records (made by
    ``make_record(**fields)``, gateway/store/parts.Record) of the items settled.

    With ``authorize``, each item is first authorized by OutpatientSettle's rule (SPEC §9, core/access.py: the
    caller is the province of the item's institution), here; then ``admit(command)`` is called (the partition,
    the caller's deadline).  The loop stops before an item not authorized or that ``admit`` refuses, before any
    item that would be refused (or whose decision raised anything else), and returns the records so far: the
    caller decides that item on its own path, which meets the same refusal or error, then calls again with the
    rest.  A failure once an item is being applied or recorded raises ``core.engine.ApplyFailed`` (memory may
    differ from the ledger: the caller stops)."""
    cdef Py_ssize_t i
    cdef int64_t seq
    cdef Index index = engine.index
    cdef uint32_t province = _province_called(caller) if authorize else 0
    if not _named:
        _settle_names()
    slots = _slots_of(make_record)
    records = []
    for i in range(len(items)):
        command, digest = items[i]
        seq = first_seq + i
        if authorize and not _treats_in(index, command.fixmedins_code, province):
            return records   # the access rule's own refusal, on the caller's path
        try:
            admit(command)
            event, reply = _decide_outpatient(engine, command, seq)
        except Exception:   # a refusal, or a read that failed: nothing changed; the caller's path meets it again
            return records
        try:
            changes = _apply_outpatient(engine, event, seq)
            values = ("settled", caller, command.request_id, digest, event.settlement.setl_id,
                      _FORMAT + _encoder.encode(event), reply, seq, changes)
            records.append(_made(make_record, slots, values) if slots is not None
                           else make_record(**dict(zip(_RECORD_FIELDS, values))))
        except Exception as exc:
            raise _ApplyFailed(event) from exc
    return records


# What the loop gives each record, by field name (gateway/store/parts.Record's), in the order of its values.
_RECORD_FIELDS = ("kind", "caller", "request_id", "digest", "key", "body", "response", "seq", "changes")
# A slotted dataclass's fields as (name, where in a record's values or -1, default), by class: made once.
cdef dict _SLOTS = {}


cdef object _slots_of(cls):
    """How ``_made`` fills a ``cls``: (name, where in a record's values or -1, default) per field, when it is a
    slotted dataclass whose fields the loop gives or have a default (gateway/store/parts.Record); else None, and
    the loop calls ``cls(**fields)``."""
    if cls in _SLOTS:
        return _SLOTS[cls]
    import dataclasses
    slots = None
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__ \
            and cls.__new__ is object.__new__ and not hasattr(cls, "__post_init__"):
        slots = tuple([(f.name, _RECORD_FIELDS.index(f.name) if f.name in _RECORD_FIELDS else -1, f.default)
                       for f in dataclasses.fields(cls)])
        given = [at for _, at, _ in slots if at >= 0]
        if len(given) != len(_RECORD_FIELDS) or any(at < 0 and d is dataclasses.MISSING for _, at, d in slots):
            slots = None
    _SLOTS[cls] = slots
    return slots


cdef object _made(cls, tuple slots, tuple values):
    """cls(**fields) of a slotted dataclass, each slot set directly (a frozen dataclass's __init__ sets each field
    through object.__setattr__ from Python: ~1 µs a record)."""
    obj = cls.__new__(cls)
    for name, at, default in slots:
        PyObject_GenericSetAttr(obj, name, values[at] if at >= 0 else default)
    return obj


cdef str _ledger_id(char prefix, int64_t seq):
    """events.visit_id ("M") or settlement_id ("S"): the prefix and the seq zero-padded to ID_DIGITS."""
    cdef char buf[40]
    cdef int n = snprintf(buf, sizeof(buf), "%c%0*lld", prefix, _ID_DIGITS, <long long>seq)
    return buf[:n].decode("ascii")


cdef uint32_t _province_called(str caller) except? 0:
    """The province code a caller is (as access.py names provinces: province_code's six digits), or 0 for a caller
    that is no province (national, the gateway): no institution is in province 0."""
    if len(caller) != 6 or not (caller.isascii() and caller.isdigit()) or caller[0] == "0":
        return 0
    return <uint32_t>int(caller)


cdef bint _treats_in(Index index, code, uint32_t province) except -1:
    """The institution ``code`` is known and in ``province``: Owners.institution_province(code) == the caller."""
    cdef int32_t ii = _inst_idx(index, code)
    return ii >= 0 and province != 0 and province_of(index.st.insts[ii].admdvs) == province


cdef tuple _decide_outpatient(engine, command, int64_t seq):
    """decide_outpatient and _settle (core/settlement.py) for a plain item: (the Settled event, the answer's
    bytes); a refusal raises as there, before anything changes."""
    index, funds, accounts = engine.index, engine.funds, engine.accounts
    person, card, lines = command.person, command.card, command.lines
    setl_date = command.setl_date
    acct_pay = mulaid_pay = 0
    cdef int flags
    cdef Py_ssize_t i
    psn_no = engine.filings.psn_no_of(person.psn_no, person.certno)
    check_date(setl_date, "结算日期", field="setl_date")
    elig = index.admission(psn_no, command.fixmedins_code, False, setl_date,
                           card.card_no if card is not None else None, card.card_version if card is not None else None)
    check_line_count(len(lines), "一次门诊")
    seen = set()
    for line in lines:   # lines.check_fields of a line that refunds nothing (a refusal is the Python path's)
        check_line(line.feedetl_sn, line.code, line.name, line.unit_price_fen, line.qty_milli, line.fee_date)
        if line.feedetl_sn in seen:
            raise _YidiError("FEE_LINE_CONFLICT", feedetl_sn=line.feedetl_sn, problem="在本次结算中重复出现")
        seen.add(line.feedetl_sn)
    if not lines:
        raise _YidiError("NO_FEE_LINES")
    code = command.fixmedins_code
    mdtrt_id, setl_id = _ledger_id(b"M", seq), _ledger_id(b"S", seq)
    facts = _VisitFacts(
        mdtrt_id=mdtrt_id, psn_no=psn_no, fixmedins_code=code, visit_kind=_OUTPATIENT, adm_date=setl_date,
        filing_id=elig.filing_id, filing_kind=elig.filing_kind, insuplc_admdvs=elig.insuplc_admdvs,
        mdtrtarea_admdvs=elig.mdtrtarea_admdvs, fixmedins_level=elig.fixmedins_level)
    bill = index.bill(psn_no, code, facts.filing_kind, False, setl_date, lines, None, None)
    flags = _outpatient_flags(funds, bill.high_cost, setl_id, psn_no, setl_date)
    month = funds.booking_month(setl_date)
    draws = ()
    if command.acct_used_flag or command.acct_mulaid_flag:
        draws, acct_pay, mulaid_pay = accounts.draws(psn_no, bill.acct_payable, command.acct_used_flag,
                                                     command.acct_mulaid_flag)
        bill.set_accounts(acct_pay, mulaid_pay)
    risk_flags = () if not flags else tuple([v for i, v in enumerate(_RISK_FLAG_VALUES) if flags >> i & 1])
    reply = bill.settlement_response(
        setl_id=setl_id, mdtrt_id=mdtrt_id, psn_no=psn_no, psn_name=bill.person_name, fixmedins_code=code,
        fixmedins_name=bill.institution_name, insuplc_admdvs=facts.insuplc_admdvs,
        mdtrtarea_admdvs=facts.mdtrtarea_admdvs, visit_kind=_VISIT_KIND_OUTPATIENT, insutype=int(bill.insutype_code),
        filing_id=facts.filing_id, filing_kind=_FILING_KIND_PB[facts.filing_kind], setl_date=setl_date,
        status=_SETTLEMENT_STATUS_SETTLED, lines=lines, risk_flags=risk_flags, clearing_month=month,
        balc=accounts.balance(psn_no) - acct_pay, med_type=_MED_TYPE_UNSPECIFIED, dise_codg="", mid_setl_flag=False)
    settlement = _SettlementFacts(
        setl_id=setl_id, mdtrt_id=mdtrt_id, psn_no=psn_no, fixmedins_code=code,
        insuplc_admdvs=facts.insuplc_admdvs, mdtrtarea_admdvs=facts.mdtrtarea_admdvs, visit_kind=_OUTPATIENT,
        insutype=bill.insutype_code, setl_date=setl_date, year=bill.year, breakdown=_Breakdown(*bill.breakdown),
        deltas=bill.deltas, risk_flags=flags, acct_draws=draws, dise_codg="", mid_setl_flag=False,
        stay_deductible_fen=-1, stay_mids=(), acc_before=bill.acc_before, chronic_before=())
    return _Settled(settlement=settlement, visit=facts, lines=lines, clearing_month=month), reply


cdef int _outpatient_flags(funds, bint high_cost, str setl_id, str psn_no, setl_date) except -1:
    """Funds.settlement_flags of an outpatient settlement (SPEC §7)."""
    cdef int flags = _HIGH_COST if high_cost else 0
    seen = funds.same_day_count(psn_no, setl_date)
    if seen is not None and seen + 1 >= _SAME_DAY_REPEAT_FROM:
        flags |= _SAME_DAY_REPEAT
    if _on_site(setl_id):
        flags |= _ON_SITE_CHECK
    return flags


def on_site_sample(str setl_id not None):
    """core.funds.on_site_check as the settle loop takes it (what tests compare)."""
    if not _named:
        _settle_names()
    return _on_site(setl_id)


cdef bint _on_site(str setl_id) except -1:
    """funds.on_site_check: the id's UTF-8 bytes hashed where they are, from a copy of the keyed state."""
    cdef Blake2b state = _ON_SITE_STATE
    cdef uint8_t digest[8]
    cdef uint64_t value = 0
    cdef Py_ssize_t n, i
    cdef const char* p = PyUnicode_AsUTF8AndSize(setl_id, &n)
    if n == 0:   # the keyed state takes at least one byte (ledger.pxi's _b2_init); no setl_id is empty
        raise InvariantError("the on-site sample of an empty setl_id")
    _b2_update(&state, <const uint8_t*>p, n)
    _b2_final(&state, digest)
    for i in range(8):   # int.from_bytes(digest, "big")
        value = (value << 8) | digest[i]
    return value % 10000 < _ON_SITE_BP


cdef tuple _apply_outpatient(engine, event, int64_t seq):
    """apply_settled and _book (core/settlement.py) and Engine.apply of an outpatient Settled: the archive changes."""
    s = event.settlement
    engine.index.add_deltas(s.psn_no, s.year, s.deltas, 1)
    accounts = engine.accounts
    for psn_no, amount_fen in s.acct_draws:
        accounts.add(psn_no, -amount_fen)
    changes = [_PutVisit(_ArchivedVisit(event.visit, _SETTLED, s.setl_id)),
               _PutSettlement(_ArchivedSettlement(s, seq, lines=event.lines))]
    funds = engine.funds
    _book_settled(funds, s, event.clearing_month)
    funds.count_outpatient(s.psn_no, s.setl_date, 1)
    engine.archive.record(changes, seq)
    if YIDI_DEBUG:
        engine.check_applied(event, changes)
    return tuple(changes)


cdef int _book_settled(funds, s, month) except -1:
    """Funds.book(booking_of(s), month, +1) (core/funds.py): the insured province's position and the month's
    aggregates, per province pair and per institution."""
    cdef Py_ssize_t k
    if month in funds.closed:
        raise InvariantError(f"booking into the closed clearing month {month}")
    insured, treatment = province_code(s.insuplc_admdvs), province_code(s.mdtrtarea_admdvs)
    bd = _astuple(s.breakdown)
    accounts_fen = 0
    for k in _ACCOUNTS_AT:
        accounts_fen += bd[k]
    money = tuple([bd[k] for k in _CLEARED_AT]) + (accounts_fen,)   # money.cleared
    position = funds.positions.get(insured)
    if position is None:
        position = funds.positions[insured] = _Position(insured)
    position.drawn_fen += money[_FUND_AT]
    state = funds.months.get(month)
    if state is None:
        state = funds.months[month] = _Month(month)
    _add_booking(state.pairs, insured + treatment, money, s.risk_flags)
    _add_booking(state.institutions, treatment + s.fixmedins_code, money, s.risk_flags)
    return 0


cdef int _add_booking(dict rows, str key, tuple money, int flags) except -1:
    """funds._add with sign +1: a settlement's count, flags and money added to an aggregate row (a new tuple of
    ints, untracked as core.untracked leaves it, so the month's dict is not tracked again)."""
    cdef Py_ssize_t i
    old = rows.get(key)
    row = list(old) if old is not None else [0] * _N_TOTALS
    row[0] += 1
    for i in range(len(money)):
        row[_MONEY_AT + i] += money[i]
    if flags:
        for i in range(len(_RISK_FLAG_VALUES)):
            if flags >> i & 1:
                row[_FLAGS_AT + i] += 1
    new = tuple(row)
    PyObject_GC_UnTrack(<void*>new)
    rows[key] = new
    return 0
