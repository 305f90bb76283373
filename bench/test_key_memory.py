"""bench/key_memory.py runs and reports the recent-key cache's memory: no timing is asserted (the machine is shared).

The bound on resident bytes per key (200) is far above the C table's ~72-80 and far below the ~400 of the
OrderedDict of tuples it replaced; memory freed during the fill may be reused, so the figure can only come out low.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_key_memory_reports_bytes_per_key_and_collection_times():
    run = subprocess.run([sys.executable, "bench/key_memory.py", "--keys", "50000"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout)
    assert figures["keys"] == 50_000
    assert figures["resident_bytes_per_key"] < 200
    assert figures["full_collection_ms_empty"] >= 0 and figures["full_collection_ms_filled"] >= 0
