# Every bound of the core, in one place (TIGER_STYLE: put a limit on everything).
#
# The money bounds are chosen so that no int64 expression on the benefit path
# can overflow: a line amount is at most MAX_UNIT_PRICE_FEN * MAX_QTY_MILLI
# = 10**18 < 2**63, a bill is at most MAX_BILL_FEN, and bp() is computed in a
# split form that never multiplies more than (x // 10000) * 10000.

from libc.stdint cimport int64_t

# YIDI_DEBUG: 1 in debug builds (setup.py defines the C macro when the
# environment has YIDI_DEBUG=1), else 0.  A C constant rather than Cython's
# deprecated compile-time IF: `if YIDI_DEBUG:` compiles to `if (0)` in a
# release build, and the C compiler drops the debug-only code.
cdef extern from *:
    """
    #ifndef YIDI_DEBUG
    #define YIDI_DEBUG 0
    #endif
    """
    const bint YIDI_DEBUG

# identifiers (psn_no, certno, card_no, fixmedins_code, catalogue code, filing_id):
# printable ASCII without space, 1..MAX_ID_LEN characters
cdef enum:
    MAX_ID_LEN = 40
    MAX_NAME_BYTES = 600          # UTF-8 bytes of a person / institution / item name
    MAX_CARD_VERSION_LEN = 16
    MAX_CARD_VERSIONS = 250       # distinct card_version strings (interned in a uint8)
    MAX_LINES = 1000              # fee lines per settlement
    MAX_FILING_CODES = 64         # fixmedins_codes per filing
    MAX_TIERS = 8                 # critical-illness tiers
    MAX_MULAID = 8                # family accounts that may pay for one person (mulaid_psn_nos)
    MAX_CHRONIC = 32              # chronic disease codes of one person or institution
    N_LEVELS = 4                  # institution levels 1..3; arrays by level leave slot 0 unused
    N_FILING_KINDS = 6            # KIND_* (index.pxi)
    MAX_TEMPORARY_FILING_DAYS = 366   # inclusive length of a temporary filing
    MIN_DATE = 19000101
    MAX_DATE = 21001231
    N_YEARS = MAX_DATE // 10000 - MIN_DATE // 10000 + 1   # calendar years an accumulator can belong to
    BP_ONE = 10000
    MAX_REDUCTION_REFERRAL_BP = 1000     # national limit: referral / emergency at most 10 points lower
    MAX_REDUCTION_OTHER_TEMP_BP = 2000   # national limit: other temporary at most 20 points lower
    PROGRESS_EVERY_ROWS = 100000
    MAX_ROWS = 200000000          # rows per table (int32 indexes, with room to spare)
    MAX_RECENT_KEYS = 268435456   # idempotency keys a KeyTable holds (2**28: int32 slots at most half full)
    KEY_HASH_BYTES = 16           # the 128-bit hash naming an idempotency key in a KeyTable
    MAX_KEY_DIGEST_BYTES = 32     # a request digest a KeyTable keeps (the ledger's records hold 16..32)

cdef int64_t MAX_UNIT_PRICE_FEN = 10000000000        # 10**10 fen = 1 亿元 per unit
cdef int64_t MAX_QTY_MILLI = 100000000               # 10**8 thousandths = 100 000 units
cdef int64_t MAX_BILL_FEN = 100000000000000          # 10**14 fen per settlement
cdef int64_t MAX_POLICY_FEN = 100000000000000        # any policy amount (deductible, cap, threshold)
cdef int64_t MAX_ACCUMULATOR_FEN = 4000000000000000000   # an accumulator never goes past this
cdef unsigned long long MAX_ARENA_BYTES = 4294967295ULL  # uint32 offsets

LIMITS = {
    "MAX_ID_LEN": MAX_ID_LEN,
    "MAX_NAME_BYTES": MAX_NAME_BYTES,
    "MAX_CARD_VERSION_LEN": MAX_CARD_VERSION_LEN,
    "MAX_LINES": MAX_LINES,
    "MAX_FILING_CODES": MAX_FILING_CODES,
    "MAX_TIERS": MAX_TIERS,
    "MAX_MULAID": MAX_MULAID,
    "MAX_CHRONIC": MAX_CHRONIC,
    "MAX_TEMPORARY_FILING_DAYS": MAX_TEMPORARY_FILING_DAYS,
    "MIN_DATE": MIN_DATE,
    "MAX_DATE": MAX_DATE,
    "MAX_UNIT_PRICE_FEN": MAX_UNIT_PRICE_FEN,
    "MAX_QTY_MILLI": MAX_QTY_MILLI,
    "MAX_BILL_FEN": MAX_BILL_FEN,
    "MAX_POLICY_FEN": MAX_POLICY_FEN,
    "MAX_ROWS": MAX_ROWS,
    "MAX_RECENT_KEYS": MAX_RECENT_KEYS,
}

# The policy directory: one slot per (pooling region // 100, insutype); region codes have 6 digits.
cdef enum:
    N_INSUTYPES = 2
    POLICY_SLOTS = 10000 * N_INSUTYPES
