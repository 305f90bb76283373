"""The short form of `make crash`: three SIGKILLs under load over mTLS (one of them while the restart replays the
ledger, with reversals racing their originals and snapshots asked for throughout), then every invariant
(tests/crash.py)."""
from __future__ import annotations

import json
import subprocess
import sys

from gateway_harness import ROOT


def test_three_sigkills_under_load_lose_and_double_nothing():
    run = subprocess.run([sys.executable, "tests/crash.py", "--crashes", "3", "--seed", "7"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, (json.dumps(result), run.stderr[-3000:])
    assert result["crashes"] == 3 and result["acknowledged"] > 0
    assert result["lost"] == result["duplicated"] == result["accumulator_mismatches"] == 0
    assert result["settlements_in_ledger"] == result["acknowledged"]
    assert result["integrity_ok"] is True and result["positions_ok"] is True and result["clearing_ok"] is True
    assert result["kills_during_startup"] == 1 and result["reversals"] > 0 and result["reversal_violations"] == 0
