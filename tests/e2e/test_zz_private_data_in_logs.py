"""Private data never reaches a log: every log this test session produced is scanned for ID numbers.

Runs last of tests/ (tests/conftest.py puts it there): by then every gateway the suite
started has written its operational log (``<ledger>.log``) and its audit log
(``<ledger>.audit.jsonl``) under pytest's base temporary directory. A national
ID number (18 characters: 17 digits and a digit or X) may appear there only
masked (``210102********1234``, gateway/security/privacy.py).
"""
from __future__ import annotations

import pathlib
import re

ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{16}[\dXx](?![0-9A-Za-z])")


def test_no_log_of_this_session_holds_an_unmasked_id_number(tmp_path_factory):
    base = pathlib.Path(tmp_path_factory.getbasetemp())
    logs = [p for p in base.rglob("*") if p.is_file() and (p.suffix == ".log" or p.name.endswith(".audit.jsonl"))]
    assert logs, "the suite wrote no gateway logs: nothing was scanned"
    found = {}
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        hits = ID_NUMBER.findall(text)
        if hits:
            found[str(path.relative_to(base))] = sorted(set(hits))[:3]
    assert not found, f"unmasked ID numbers in {len(found)} logs: {found}"
    audits = [p for p in logs if p.name.endswith(".audit.jsonl")]
    assert audits and any("*" * 8 in p.read_text(encoding="utf-8") for p in audits), \
        "no audit log recorded a masked certno: the scan would not notice masking was lost"
