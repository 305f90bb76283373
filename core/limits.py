"""Checks of request fields against the bounds in ``limits.pxi``.

The numbers live in one place, the Cython core's ``limits.pxi``; this module
reads them from the compiled core and holds the checks that the lifecycle
engine runs before it changes anything.
"""
from __future__ import annotations

from . import _core
from .errors import YidiError

LIMITS: dict[str, int] = dict(_core.LIMITS)

MIN_DATE = LIMITS["MIN_DATE"]
MAX_DATE = LIMITS["MAX_DATE"]
MAX_ID_LEN = LIMITS["MAX_ID_LEN"]
MAX_UNIT_PRICE_FEN = LIMITS["MAX_UNIT_PRICE_FEN"]
MAX_QTY_MILLI = LIMITS["MAX_QTY_MILLI"]
MAX_LINES_PER_VISIT = LIMITS["MAX_LINES"]

_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_calendar_date(yyyymmdd: int) -> bool:
    """A real calendar date inside the supported range."""
    if not MIN_DATE <= yyyymmdd <= MAX_DATE:
        return False
    year, month, day = yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month - 1]:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return not (month == 2 and day == 29 and not leap)


def check_date(yyyymmdd: int, what: str) -> None:
    if not is_calendar_date(yyyymmdd):
        raise YidiError(
            "INVALID_DATE",
            f"{what} {yyyymmdd} 不是有效日期，应为 yyyymmdd 格式，范围 {MIN_DATE}–{MAX_DATE}。",
        )


def check_id(value: str, what: str, reason: str = "INVALID_ARGUMENT") -> None:
    """Identifiers: 1..MAX_ID_LEN printable ASCII characters without spaces."""
    if not value or len(value) > MAX_ID_LEN or not value.isascii() or not value.isprintable() or " " in value:
        raise YidiError(reason, f"{what}「{value[:MAX_ID_LEN]}」格式不正确：应为 1–{MAX_ID_LEN} 位字母或数字。")


def check_line(sn: str, code: str, unit_price_fen: int, qty_milli: int, fee_date: int) -> None:
    """One fee line's fields (SPEC §5.1): price ≥ 0, quantity > 0, within bounds."""
    check_id(sn, "费用明细流水号")
    check_id(code, f"明细 {sn} 的项目编码", "INVALID_CODE")
    if not 0 <= unit_price_fen <= MAX_UNIT_PRICE_FEN:
        raise YidiError(
            "INVALID_PRICE", f"明细 {sn} 的单价 {unit_price_fen} 分不合理：应在 0 到 {MAX_UNIT_PRICE_FEN} 分之间。"
        )
    if not 0 < qty_milli <= MAX_QTY_MILLI:
        raise YidiError(
            "INVALID_QUANTITY", f"明细 {sn} 的数量 {qty_milli}（千分之一单位）不合理：应大于 0 且不超过 {MAX_QTY_MILLI}。"
        )
    if fee_date:
        check_date(fee_date, f"明细 {sn} 的费用日期")
