"""The core's bounds and field checks, for Python callers.

Every number lives in ``limits.pxi`` and every check in ``validate.pxi``
(the Cython core), where the loader, eligibility and benefit use them too;
this module only re-exports them, so a rule and its message exist once.
"""
from __future__ import annotations

from . import _core
from ._core import (check_date, check_id, check_line, check_line_count, check_year, is_calendar_date,
                    line_amount_fen)
from .errors import YidiError

LIMITS: dict[str, int] = dict(_core.LIMITS)

MIN_DATE = LIMITS["MIN_DATE"]
MAX_DATE = LIMITS["MAX_DATE"]
MAX_ID_LEN = LIMITS["MAX_ID_LEN"]
MAX_UNIT_PRICE_FEN = LIMITS["MAX_UNIT_PRICE_FEN"]
MAX_QTY_MILLI = LIMITS["MAX_QTY_MILLI"]
MAX_LINES_PER_VISIT = LIMITS["MAX_LINES"]

# Rows one listing answers: (the default, when a request asks for 0; the most it may ask for).
PAGE_ROWS = (100, 1000)        # institutions, admitted patients, problem reports
FLAGGED_ROWS = (1000, 10_000)  # risk-flagged settlements (a short row each)


def page_limit(n: int, rows: tuple[int, int], field: str) -> int:
    """How many rows a listing answers: ``n``, the default for 0; INVALID_ARGUMENT past the most it may."""
    default, most = rows
    if not 0 <= n <= most:
        raise YidiError("INVALID_ARGUMENT", what=f"每页条数 {field} {n}", problem=f"须为 1–{most}（0 为默认 {default}）",
                        field=field)
    return n or default

__all__ = ["LIMITS", "MIN_DATE", "MAX_DATE", "MAX_ID_LEN", "MAX_UNIT_PRICE_FEN", "MAX_QTY_MILLI",
           "MAX_LINES_PER_VISIT", "is_calendar_date", "check_date", "check_year", "check_id", "check_line",
           "check_line_count", "line_amount_fen", "PAGE_ROWS", "FLAGGED_ROWS", "page_limit"]

