"""Personal data out of logs and messages: resident ID numbers, names and card numbers are masked.

* ``mask_certno("210102195806140724")`` → ``"210102********0724"`` (first 6, last 4);
* ``mask_text(s)`` masks every GB 11643-shaped number (17 digits and a digit
  or X, not inside a longer run of letters or digits) in free text;
* ``mask_name("赵丽华")`` → ``"赵**"``, ``mask_card("A00009001")`` → ``"A0*****01"``;
* ``MaskingFilter`` applies ``mask_text`` to every log record of the
  gateway's handlers (its message and its fields), as a last line of defence: code logs reason codes and
  ids, never request contents, and core messages never contain a certno or
  a name.
"""
from __future__ import annotations

import logging
import re

# A GB 11643 resident ID number: 6-digit region, 8-digit birth date, 3-digit sequence, check digit or X; one
# run into letters (a caller's "P210102…" request id) is masked too.
CERTNO_SHAPE = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)")


def mask_certno(certno: str) -> str:
    """Show the first 6 and last 4 characters only."""
    return certno[:6] + "*" * max(0, len(certno) - 10) + certno[-4:] if len(certno) > 10 else "*" * len(certno)


def mask_name(name: str) -> str:
    return name[:1] + "*" * min(len(name) - 1, 8) if name else ""


def mask_card(card_no: str) -> str:
    if len(card_no) <= 4:
        return "*" * len(card_no)
    return card_no[:2] + "*" * min(len(card_no) - 4, 16) + card_no[-2:]


def mask_text(text: str) -> str:
    """Every ID-number-shaped run of characters in text, masked."""
    if len(text) < 18:
        return text
    return CERTNO_SHAPE.sub(lambda m: m.group(1) + "********" + m.group(2)[-4:], text)


class MaskingFilter(logging.Filter):
    """Masks ID numbers in a record's final message (its args are merged in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked is not message and masked != message:
            record.msg, record.args = masked, None
        fields = getattr(record, "fields", None)   # gateway/operations/logs.py: a line's fields (request_id, ...)
        if fields:
            record.fields = {k: mask_text(v) if isinstance(v, str) else v for k, v in fields.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True
