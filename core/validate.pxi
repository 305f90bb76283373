# One validation path for the fields of requests and reference rows:
# identifiers, dates, years, names and fee lines (SPEC §3, §5.1, §6).  The
# loader, eligibility and benefit call the cdef functions; Python (core/limits.py,
# the engine, the gateway) calls the `def` faces at the end of this file, so a
# rule and its message exist once.
#
# Each check raises YidiError(reason, message).  A message echoes at most
# MAX_ID_LEN characters of the value it refuses and never a name (names are
# personal data and unbounded in what they may contain).  Messages are built
# only on the way out, so a check that passes allocates nothing.

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    bint PyUnicode_IS_ASCII(object o)


# ---------------------------------------------------------------- small pieces
cdef str _echo(object v):
    """At most MAX_ID_LEN characters of a refused value, for a message."""
    s = v if type(v) is str else repr(v)
    return s[:MAX_ID_LEN]

cdef inline bint _int64_of(object v, int64_t* out):
    """v as an int64 if it is exactly an int (not a bool) that fits; no exception either way."""
    cdef int overflow = 0
    if type(v) is not int:
        return False
    out[0] = PyLong_AsLongLongAndOverflow(v, &overflow)
    return overflow == 0

cdef dict _field_meta(object field):
    return {} if field is None else {"field": field}

cdef const char* _str_of(object v, str key, Py_ssize_t* n) except NULL:
    """The UTF-8 bytes of a str field (borrowed from v); INVALID_ARGUMENT if v is not text."""
    if type(v) is not str:
        raise YidiError("INVALID_ARGUMENT", f"字段 {key} 必须是字符串", field=key)
    try:
        return PyUnicode_AsUTF8AndSize(v, n)
    except UnicodeEncodeError:      # a lone surrogate: not text that UTF-8 can carry
        raise YidiError("INVALID_ARGUMENT", f"字段 {key} 含有无效的字符", field=key) from None


# ---------------------------------------------------------------- identifiers
cdef const char* _id_of(object v, object what, str reason, object field, Py_ssize_t* n) except NULL:
    """An identifier: 1..MAX_ID_LEN printable ASCII characters without spaces.

    Returns its bytes (borrowed from v).  `what` names it in the message;
    None means "字段 <field>" (the loader's rows).
    """
    cdef const char* p
    if type(v) is str and PyUnicode_IS_ASCII(v):
        p = PyUnicode_AsUTF8AndSize(v, n)     # an ASCII str hands out its own buffer
        if id_ok(p, n[0]):
            return p
    if what is None:
        what = f"字段 {field}"
    raise YidiError(reason, f"{what}「{_echo(v)}」格式不正确：应为 1–{MAX_ID_LEN} 位字母或数字。",
                    **_field_meta(field))


# ---------------------------------------------------------------- dates
cdef int64_t _date_of(object v, object what, object field) except -1:
    """A yyyymmdd int that is a real calendar date in MIN_DATE..MAX_DATE."""
    cdef int64_t d = 0
    if _int64_of(v, &d) and date_ok(d):
        return d
    if what is None:
        what = f"字段 {field}"
    raise YidiError("INVALID_DATE", f"{what} {_echo(v)} 不是有效日期，应为 yyyymmdd 格式，范围 {MIN_DATE}–{MAX_DATE}。",
                    **_field_meta(field))

cdef int _year_of(object v) except -1:
    """A calendar year inside the supported date range (accumulators are per year)."""
    cdef int64_t y = 0
    if _int64_of(v, &y) and MIN_DATE // 10000 <= y <= MAX_DATE // 10000:
        return <int>y
    raise YidiError("INVALID_DATE", f"年度 {_echo(v)} 无效，应在 {MIN_DATE // 10000}–{MAX_DATE // 10000} 之间。")


# ---------------------------------------------------------------- names
cdef inline bint name_ok(const char* p, Py_ssize_t n) noexcept nogil:
    """UTF-8 text without control characters (Unicode Cc: C0, DEL and C1).

    A NUL, a newline or an escape in a name breaks the files, logs and
    screens it is copied to, and no real name needs one.
    """
    cdef Py_ssize_t i
    cdef uint8_t c
    for i in range(n):
        c = <uint8_t>p[i]
        if c < 0x20 or c == 0x7F:
            return False
        if c == 0xC2 and i + 1 < n and 0x80 <= <uint8_t>p[i + 1] <= 0x9F:   # U+0080..U+009F
            return False
    return True

cdef int _name_fault(object v, bint required, const char** p, Py_ssize_t* n):
    """0 if v is a name: text of at most MAX_NAME_BYTES UTF-8 bytes (at least one if required)
    without control characters, with p, n set to its bytes; else 1 (not text, or its length) or 2
    (a control character)."""
    if type(v) is not str:
        return 1
    try:
        p[0] = PyUnicode_AsUTF8AndSize(v, n)
    except UnicodeEncodeError:      # a lone surrogate
        return 1
    if n[0] > MAX_NAME_BYTES or (required and n[0] < 1):
        return 1
    return 0 if name_ok(p[0], n[0]) else 2

cdef str _name_message(int fault, object what, bint required):
    if fault == 2:
        return f"{what}不能含有换行、制表符、NUL 等控制字符。"
    return f"{what}须为{'1–' if required else '不超过 '}{MAX_NAME_BYTES} 字节的文字。"

cdef const char* _name_of(object v, object what, bint required, object field, Py_ssize_t* n) except NULL:
    """A name's bytes (borrowed from v), or INVALID_ARGUMENT; `what` None means "字段 <field>"."""
    cdef const char* p = NULL
    cdef int fault = _name_fault(v, required, &p, n)
    if fault:
        raise YidiError("INVALID_ARGUMENT", _name_message(fault, f"字段 {field}" if what is None else what, required),
                        **_field_meta(field))
    return p


# ---------------------------------------------------------------- fee lines (SPEC §5.1)
cdef inline int64_t line_amount(int64_t unit_price_fen, int64_t qty_milli) noexcept nogil:
    """SPEC §5.1 line amount, (unit_price_fen * qty_milli + 500) // 1000, rounded half up.

    The one implementation (the capped amount is the same rule at the cap
    price).  Exact for 0 <= unit_price_fen <= MAX_UNIT_PRICE_FEN and
    0 <= qty_milli <= MAX_QTY_MILLI: the product stays below 2**63.
    """
    return (unit_price_fen * qty_milli + 500) // 1000

cdef str _line_label(object sn, object code):
    """How a message names a line: by its feedetl_sn when there is one, else by its item code."""
    return f"明细 {sn}" if sn is not None else f"项目 {code}"

cdef const char* _line_code_of(object code, object sn, Py_ssize_t* n) except NULL:
    """A fee line's item code (an identifier; INVALID_CODE), named in a message by the line's sn if any."""
    cdef const char* p
    if type(code) is str and PyUnicode_IS_ASCII(code):
        p = PyUnicode_AsUTF8AndSize(code, n)
        if id_ok(p, n[0]):
            return p
    return _id_of(code, f"明细 {sn} 的项目编码" if sn is not None else "费用明细的项目编码", "INVALID_CODE", "code", n)

cdef int64_t _unit_price_fen_of(object v, object sn, object code) except -1:
    cdef int64_t price = 0
    if _int64_of(v, &price) and 0 <= price <= MAX_UNIT_PRICE_FEN:
        return price
    raise YidiError("INVALID_PRICE",
                    f"{_line_label(sn, code)} 的单价 {_echo(v)} 分不合理：应在 0 到 {MAX_UNIT_PRICE_FEN} 分之间。",
                    field="unit_price_fen")

cdef int64_t _qty_milli_of(object v, object sn, object code) except -1:
    cdef int64_t qty = 0
    if _int64_of(v, &qty) and 0 < qty <= MAX_QTY_MILLI:
        return qty
    raise YidiError("INVALID_QUANTITY",
                    f"{_line_label(sn, code)} 的数量 {_echo(v)}（千分之一单位）不合理：应大于 0 且不超过 {MAX_QTY_MILLI}。",
                    field="qty_milli")

cdef int _line_count_ok(Py_ssize_t n, object what) except -1:
    if n > MAX_LINES:
        raise YidiError("TOO_MANY_LINES", f"{what}的费用明细不能超过 {MAX_LINES} 条，本次 {n} 条。", field="lines")
    return 0


# ---------------------------------------------------------------- the Python faces
def check_id(value, str what, str reason="INVALID_ARGUMENT", field=None):
    """Identifiers: 1..MAX_ID_LEN printable ASCII characters without spaces; else YidiError(reason).
    `field`: the request field, named in the refusal's metadata (BadRequest)."""
    cdef Py_ssize_t n
    _id_of(value, what, reason, field, &n)

def is_calendar_date(yyyymmdd):
    """A yyyymmdd int that is a real calendar date inside MIN_DATE..MAX_DATE."""
    cdef int64_t d = 0
    return _int64_of(yyyymmdd, &d) and date_ok(d)

def check_date(yyyymmdd, str what, field=None):
    """INVALID_DATE unless is_calendar_date(yyyymmdd); `what` names the date for the clerk, `field` the
    request field (the refusal's metadata)."""
    _date_of(yyyymmdd, what, field)

def check_year(year):
    """INVALID_DATE unless year is an int inside the years of MIN_DATE..MAX_DATE."""
    _year_of(year)

def check_line(sn, code, name, unit_price_fen, qty_milli, fee_date):
    """One fee line's fields (SPEC §5.1): feedetl_sn, item code, item name, price ≥ 0,
    quantity > 0 (thousandths), all within bounds; fee_date 0 (or None) means undated."""
    cdef Py_ssize_t n
    cdef const char* p
    cdef int fault
    _id_of(sn, "费用明细流水号", "INVALID_ARGUMENT", "feedetl_sn", &n)
    _line_code_of(code, sn, &n)
    fault = _name_fault(name, False, &p, &n)
    if fault:
        raise YidiError("INVALID_ARGUMENT", _name_message(fault, f"明细 {sn} 的项目名称", False), field="name")
    _unit_price_fen_of(unit_price_fen, sn, code)
    _qty_milli_of(qty_milli, sn, code)
    if fee_date:
        _date_of(fee_date, f"明细 {sn} 的费用日期", "fee_date")

def check_line_count(Py_ssize_t n, str what):
    """TOO_MANY_LINES if n fee lines are more than one settlement or visit may carry (MAX_LINES).
    `what` names the visit, e.g. "一次住院"."""
    _line_count_ok(n, what)

def line_amount_fen(unit_price_fen, qty_milli):
    """SPEC §5.1 line amount in fen, (unit_price_fen * qty_milli + 500) // 1000.

    For values check_line has passed (a quantity refunded to 0 gives 0);
    anything else is a caller's bug: InvariantError.
    """
    cdef int64_t price = 0, qty = 0
    if not (_int64_of(unit_price_fen, &price) and 0 <= price <= MAX_UNIT_PRICE_FEN
            and _int64_of(qty_milli, &qty) and 0 <= qty <= MAX_QTY_MILLI):
        raise InvariantError(f"line_amount_fen({_echo(unit_price_fen)}, {_echo(qty_milli)}): "
                             "not a checked fee line (run check_line first)")
    return line_amount(price, qty)
