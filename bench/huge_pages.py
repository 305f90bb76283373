"""Eligibility with the index in 4 KiB pages against the same index in huge pages, measured in one process.

    python bench/huge_pages.py --data-dir data/national

Loads the data set's image twice, moves one copy into huge pages
(``Index.use_huge_pages`` without a time limit), and runs cases drawn as
``bench/test_national_bench.py``'s ``eligibility_us_p50`` draws them (outpatient
cases of persons spread over the data set, 5,000 new ones each round, through
``Index.admission``) through the two copies, rounds alternating (each pair of
rounds the same cases), so that whatever else the machine is doing falls on
both alike.
Prints each copy's median and minimum µs per call, in wall and CPU time, and
the median of the paired ratios (huge ÷ 4 KiB).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core import Index  # noqa: E402
from bench.test_national_bench import WORKLOAD_PERSONS  # noqa: E402
from datagen.workload import DATE, Workload  # noqa: E402
from gateway.app import IMAGE_NAME, data_fingerprint, load_index  # noqa: E402
from gateway.config import Config  # noqa: E402

N_CASES = 5000


def per_call_us(index: Index, cases, clock) -> float:
    admission = index.admission
    begin = clock()
    for case in cases:
        admission(case.psn_no, case.fixmedins_code, False, DATE)
    return (clock() - begin) / len(cases) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    load_index(Config(data_dir=args.data_dir), args.data_dir)   # writes the image if there is none yet
    copies = {}
    for name in ("4 KiB", "huge"):
        copies[name] = Index()
        copies[name].load_image(os.path.join(args.data_dir, IMAGE_NAME), data_fingerprint(args.data_dir))
    begin = time.monotonic()
    moved = copies["huge"].use_huge_pages(60.0)
    print(f"{moved / 2**20:.0f} MiB moved to huge pages in {time.monotonic() - begin:.2f} s")
    with open(os.path.join(args.data_dir, "manifest.json")) as f:
        every = max(1, json.load(f)["persons"] // WORKLOAD_PERSONS)
    workload = Workload(args.data_dir, seed=11, persons=WORKLOAD_PERSONS, every=every)
    print("| clock | 4 KiB median / min µs | huge median / min µs | huge ÷ 4 KiB, median of pairs |")
    print("|---|---|---|---|")
    for clock in (time.perf_counter, time.thread_time):
        times = {name: [] for name in copies}
        for n in range(args.rounds + 1):   # the first pair warms up
            cases = [workload.outpatient() for _ in range(N_CASES)]
            for name in sorted(copies, reverse=n % 2 == 1):   # which goes first (its cases' objects cold), in turn
                times[name].append(per_call_us(copies[name], cases, clock))
        small, huge = times["4 KiB"][1:], times["huge"][1:]
        ratio = statistics.median(h / s for s, h in zip(small, huge, strict=True))
        print(f"| {'wall' if clock is time.perf_counter else 'CPU'} | {statistics.median(small):.3f} / {min(small):.3f} "
              f"| {statistics.median(huge):.3f} / {min(huge):.3f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
