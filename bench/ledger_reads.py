"""Reads of one record from a packed ledger: ``read``, ``chain_at`` and ``find_request``, wall and CPU µs a call.

    .venv/bin/python bench/ledger_reads.py [--settlements 10000] [--group 500] [--reads 500] [--postgresql]

The fixture's outpatient settlements (bench/ledger_append.py) appended in groups of ``--group``, then ``--reads``
random seqs read one at a time on the calling thread (the first 20 not counted: connections and prepared
statements warm).  SQLite in a temporary directory under ``--dir``; with ``--postgresql`` also a throwaway cluster on
the same disk, whose server shares the machine: its wall time is the round trips' as much as the reader's.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.ledger_append import make_settlements  # noqa: E402
from gateway.store import open_store  # noqa: E402
from gateway.testing import seal_key  # noqa: E402

WARM_READS = 20


def timed(call, seqs: list[int]) -> dict:
    for seq in seqs[:WARM_READS]:
        call(seq)
    wall, cpu = time.perf_counter(), time.thread_time()
    for seq in seqs:
        if call(seq) is None:
            raise AssertionError(f"record {seq} not found")
    n = len(seqs)
    return {"wall_us": round((time.perf_counter() - wall) / n * 1e6, 1),
            "cpu_us": round((time.thread_time() - cpu) / n * 1e6, 1)}


def measure(target: str, records: list, group: int, reads: int) -> dict[str, dict]:
    store = open_store(target, seal_key())
    try:
        for start in range(0, len(records), group):
            store.append(records[start:start + group])
        rng = random.Random(7)
        seqs = [rng.randrange(1, len(records) + 1) for _ in range(reads)]

        def find(seq: int):
            return store.find_request(records[seq - 1].caller, records[seq - 1].request_id)

        return {"read": timed(store.read, seqs), "chain_at": timed(store.chain_at, seqs), "find_request": timed(find, seqs)}
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settlements", type=int, default=10_000)
    parser.add_argument("--group", type=int, default=500)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--dir", default=".")
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args()
    records = make_settlements(args.settlements, 1_000_000)
    cluster = None
    if args.postgresql:
        from gateway.pgcluster import Cluster

        os.environ["TMPDIR"] = os.path.abspath(args.dir)
        cluster = Cluster().start()
    try:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="ledger-reads-") as d:
            targets = {"sqlite": os.path.join(d, "bench.sqlite")}
            if cluster is not None:
                targets["postgresql"] = cluster.create_database("bench_reads")
            for backend, target in targets.items():
                for call, figures in measure(target, records, args.group, args.reads).items():
                    print(json.dumps({"backend": backend, "call": call, "group": args.group, **figures}))
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
