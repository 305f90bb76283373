"""The core's bounds and field checks, for Python callers.

Every number lives in ``limits.pxi`` and every check in ``validate.pxi``
(the Cython core), where the loader, eligibility and benefit use them too;
this module only re-exports them, so a rule and its message exist once.
"""
from __future__ import annotations

from . import _core
from ._core import (check_date, check_id, check_line, check_line_count, check_year, is_calendar_date,
                    line_amount_fen)

LIMITS: dict[str, int] = dict(_core.LIMITS)

MIN_DATE = LIMITS["MIN_DATE"]
MAX_DATE = LIMITS["MAX_DATE"]
MAX_ID_LEN = LIMITS["MAX_ID_LEN"]
MAX_UNIT_PRICE_FEN = LIMITS["MAX_UNIT_PRICE_FEN"]
MAX_QTY_MILLI = LIMITS["MAX_QTY_MILLI"]
MAX_LINES_PER_VISIT = LIMITS["MAX_LINES"]

__all__ = ["LIMITS", "MIN_DATE", "MAX_DATE", "MAX_ID_LEN", "MAX_UNIT_PRICE_FEN", "MAX_QTY_MILLI",
           "MAX_LINES_PER_VISIT", "is_calendar_date", "check_date", "check_year", "check_id", "check_line",
           "check_line_count", "line_amount_fen"]

