"""GB 11643-1999 resident identity numbers: the mod-11 check character.

An 18-character number is 6 digits of region, 8 of birth date (yyyymmdd),
3 of sequence (odd for men, even for women) and a check character computed
with ISO 7064 MOD 11-2 over the first 17 digits.
"""

from __future__ import annotations

import datetime

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# CHECK[sum % 11] is the check character.
CHECK = "10X98765432"


def weighted_sum(digits: str, start: int = 0) -> int:
    """Sum of digit * weight for ``digits`` placed at position ``start``."""
    return sum(int(c) * WEIGHTS[start + i] for i, c in enumerate(digits))


def check_char(first17: str) -> str:
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError(f"need 17 ASCII digits, got {first17!r}")
    return CHECK[weighted_sum(first17) % 11]


def is_valid(certno: str) -> bool:
    """True for a well-formed 18-character number with a valid birth date and check char."""
    if not isinstance(certno, str) or len(certno) != 18 or not certno.isascii():
        return False
    first17, last = certno[:17], certno[17]
    if not first17.isdigit() or not (last.isdigit() or last == "X"):
        return False
    try:
        datetime.date(int(certno[6:10]), int(certno[10:12]), int(certno[12:14]))
    except ValueError:
        return False
    return check_char(first17) == last
