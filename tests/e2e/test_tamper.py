"""Issue 13: every damage to the ledger's files found from outside is detected, and nothing is served silently.

Runs ``tests/tamper.py`` (``make tamper``) whole: 32 cases, each on its own copy of a ledger made over real
gRPC and mTLS, each checked by verify-ledger, at start-up and by asking every kept question again.
"""
from __future__ import annotations

import json
import subprocess
import sys

from gateway_harness import ROOT


def test_every_damage_is_caught_where_expected_and_nothing_is_served_silently():
    run = subprocess.run([sys.executable, "tests/tamper.py"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    lines = run.stdout.strip().splitlines()
    assert lines, run.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["served_silently"] == 0, [o for o in result["outcomes"] if o.get("served") or
                                             o["where"] == "not detected"]
    assert result["caught_elsewhere_than_expected"] == [], result["outcomes"]
    assert result["missed_by_verify_ledger"] == [], result["outcomes"]
    assert result["cases"] == 32 and result["detected_at_start"] + result["detected_after_start"] == 32
    assert run.returncode == 0, run.stderr[-3000:]
