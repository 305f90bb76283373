"""Group-commit ledger throughput: records/s and records per commit.

50k appends of ~300-byte bodies from 1000 concurrent appenders on a real
SQLite file (WAL, synchronous=FULL), on uvloop and on the default loop.

    .venv/bin/python bench/ledger_throughput.py [--records 50000] [--appenders 1000]

The database goes into a temporary directory under --dir (default: the
current directory, so it lands on the same disk as a real deployment and not
on a tmpfs where fsync is free).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import tempfile
import time

import uvloop

from gateway.store import GroupCommitLedger, Record, SqliteStore
from gateway.testing import seal_key

BODY_BYTES = 300


def make_records(n: int, *, random_request_ids: bool = False, seed: int = 20240601) -> list[Record]:
    """Records in append order: keys (setl_id) ascend, as the gateway assigns them.

    With random_request_ids the idempotency keys are seeded random 128-bit
    hex strings, as clients generate them (UUIDs): every insert then lands
    on a random leaf of the UNIQUE (caller, request_id) index.
    """
    rng = random.Random(seed)
    pad = "x" * BODY_BYTES
    records = []
    for i in range(n):
        body = (f'{{"setl_id":"S{i:010d}","amount_fen":{i * 13},"pad":"' + pad)[:BODY_BYTES - 2].encode() + b'"}'
        records.append(
            Record(
                kind="settle",
                caller="210000",
                request_id=f"{rng.getrandbits(128):032x}" if random_request_ids else f"req-{i:010d}",
                digest=hashlib.blake2b(body, digest_size=16).digest(),
                key=f"S{i:010d}",
                body=body,
                response=b"\x0a\x0b" + f"S{i:010d}".encode() + b"\x10" * 40,
            )
        )
    return records


async def run(store, records: list[Record], appenders: int) -> tuple[float, GroupCommitLedger]:
    """``records`` through a group-commit ledger on ``store`` from ``appenders`` concurrent appenders: the
    seconds it took, and the ledger (its commit counts)."""
    ledger = GroupCommitLedger(store)
    ledger.start()
    # All appenders take the next record from one iterator, so the global
    # append order is the order of `records`, as in the gateway.
    shared = iter(records)

    async def appender() -> None:
        for r in shared:
            await ledger.append(r)

    t0 = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(appenders)))
    elapsed_s = time.perf_counter() - t0
    await ledger.close()
    return elapsed_s, ledger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--appenders", type=int, default=1000)
    ap.add_argument("--dir", default=".")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    n = args.records
    print(f"{n} appends, {args.appenders} concurrent appenders, body {BODY_BYTES} bytes, seed {args.seed}")
    for ids in ("sequential", "random"):
        records = make_records(n, random_request_ids=ids == "random", seed=args.seed)
        for name, runner in (("uvloop", uvloop.run), ("asyncio", asyncio.run)):
            with tempfile.TemporaryDirectory(dir=args.dir, prefix="ledger-bench-") as d:
                path = os.path.join(d, "bench.sqlite")
                elapsed_s, ledger = runner(run(SqliteStore(path, seal_key()), records, args.appenders))
            print(
                f"request_ids {ids:10s} {name:8s} {n / elapsed_s:9,.0f} records/s  {elapsed_s * 1000:6.0f} ms  "
                f"commits {ledger.commits:5d}  records/commit {ledger.records / ledger.commits:7.1f}  "
                f"max batch {ledger.max_batch_seen}"
            )


if __name__ == "__main__":
    main()
