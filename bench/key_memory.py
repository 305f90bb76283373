"""Memory and collector time of the recent idempotency-key cache, filled.

    python bench/key_memory.py --keys 1000000

Fills ``gateway.store.idempotency.Keys`` (over a fresh SQLite ledger) with
KEYS durable keys through ``remember``, as start-up replay and every settlement
do (the request id a fresh string, the digest 16 fresh bytes, as decoded from
a request), and prints one JSON line: the resident memory the filled cache
added, per key (from /proc/self/statm), and how long a full collection
(``gc.collect()``, the fastest of three) takes before and after: the
collector visits every entry of a dict it tracks, even where the entry's
tuples are no longer tracked themselves.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES


def full_collection_ms() -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    args = p.parse_args()
    from gateway.store import SqliteStore
    from gateway.store.idempotency import Keys
    from gateway.testing import seal_key

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(os.path.join(tmp, "ledger.sqlite"), seal_key())
        empty_ms = full_collection_ms()
        before = resident_bytes()
        keys = Keys(store, args.keys)
        for n in range(args.keys):
            keys.remember("440000", f"lg77-{n}-{n % 500}", n.to_bytes(16, "little"), n + 1)
        added = resident_bytes() - before
        filled_ms = full_collection_ms()
        print(json.dumps({"keys": len(keys), "resident_bytes_per_key": round(added / args.keys, 1),
                          "resident_mib": round(added / 2**20, 1),
                          "full_collection_ms_empty": round(empty_ms, 1),
                          "full_collection_ms_filled": round(filled_ms, 1)}))
        store.close()


if __name__ == "__main__":
    main()
