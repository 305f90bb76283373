"""bench/keys.py and bench/soak.py end to end on a small data set: they run, count, and write their figures.

Timings are not asserted (the machine is shared): keys.py must settle every window of the cache's capacity
with no refusal, soak.py must read the collector's figures per generation and pass a limit no pause reaches.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from datagen import generate

    out = str(tmp_path_factory.mktemp("soakkeys") / "data")
    generate(out, persons=2000, seed=2026)
    return out


def test_keys_settles_every_window_past_the_capacity(data, tmp_path):
    out = tmp_path / "keys.json"
    run = subprocess.run([sys.executable, "bench/keys.py", "--data-dir", data, "--capacity", "1000", "--windows", "5",
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    for rpc in ("batch", "outpatient"):
        windows = [w for w in figures["windows"] if w["rpc"] == rpc]
        assert [w["window"] for w in windows] == [1, 2, 3, 4, 5]
        assert all(w["settlements"] >= 1000 and w["server_cpu_us_per_settlement"] > 0 for w in windows)
        assert windows[-1]["keys_seen_end"] >= 5 * 1000
    assert {s["rpc"] for s in figures["summaries"]} == {"batch", "outpatient"}
    assert all(s["times_capacity"] >= 5 for s in figures["summaries"])


def test_soak_reads_the_collector_per_generation(data, tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, "bench/soak.py", "--data-dir", data, "--seconds", "4", "--limit-ms", "500",
                          "--processes", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert [g["generation"] for g in figures["generations"]] == [0, 1, 2]
    assert figures["generations"][0]["collections"] >= 1 and figures["settlements"] > 0
    assert all(g["pauses_over_limit"] == 0 for g in figures["generations"])
    assert "| generation | collections under load |" in run.stdout
