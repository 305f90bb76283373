"""The ledger writer's cost per settlement: ``store.append`` alone, with settlement records, in µs of CPU.

    .venv/bin/python bench/ledger_append.py [--groups 100,500] [--settlements 20000] [--rounds 3] [--postgresql]

The records are real: the outpatient settlements of ``tests/gateway/data/ledger-v5.db`` (written by a gateway
on the SPEC fixture), each given a new settlement number and request id and the archive change a settlement
makes (its reconciliation row), so every append writes what a settlement writes: the record, its idempotency
key and its ``recon`` row, in one transaction per group.  Measured on the calling thread (the writer thread
in the gateway): wall time and the thread's CPU time per settlement, min and median of ``--rounds`` rounds,
rounds of each group size interleaved.  SQLite in a temporary directory under ``--dir`` (WAL,
``synchronous=FULL``); with ``--postgresql`` also a throwaway PostgreSQL cluster on the same disk.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time

import msgspec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core import events  # noqa: E402
from core.archive import ArchivedSettlement, PutSettlement  # noqa: E402
from gateway.store import Record, open_store  # noqa: E402
from gateway.testing import seal_key  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "gateway", "data", "ledger-v5.db")


def settlement_templates() -> list[tuple]:
    """(kind, caller, digest, body event, response) of the fixture's outpatient settlements."""
    conn = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT kind, caller, digest, body, response FROM records WHERE kind = 'settled'"
                            " ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [(kind, caller, digest, events.decode(body), response) for kind, caller, digest, body, response in rows
            if events.decode(body).visit is not None]


def make_settlements(n: int, first_setl: int) -> list[Record]:
    """n settlement records numbered from first_setl, each with its archive change."""
    templates = settlement_templates()
    out = []
    for i in range(n):
        kind, caller, digest, event, response = templates[i % len(templates)]
        setl_id = f"S{first_setl + i:015d}"
        facts = msgspec.structs.replace(event.settlement, setl_id=setl_id)
        event = msgspec.structs.replace(event, settlement=facts)
        out.append(Record(kind, caller, f"bench-{first_setl + i}", digest, setl_id, events.encode(event), response,
                          changes=(PutSettlement(ArchivedSettlement(facts, first_setl + i)),)))
    return out


def one_round(target: str, records: list[Record], group: int) -> dict:
    store = open_store(target, seal_key())
    try:
        wall = cpu = 0.0
        for start in range(0, len(records), group):
            batch = records[start:start + group]
            w0, c0 = time.perf_counter(), time.thread_time()
            store.append(batch)
            cpu += time.thread_time() - c0
            wall += time.perf_counter() - w0
    finally:
        store.close()
    n = len(records)
    return {"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="100,500")
    parser.add_argument("--settlements", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=".")
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    records = make_settlements(args.settlements, 1_000_000)
    body_bytes = sum(len(r.body) + len(r.response) for r in records) / len(records)
    print(f"{args.settlements} settlements ({body_bytes:.0f} bytes of body and response each), groups {groups}, "
          f"{args.rounds} rounds", file=sys.stderr)
    cluster = None
    backends = ["sqlite"]
    if args.postgresql:
        from gateway.pgcluster import Cluster

        os.environ["TMPDIR"] = os.path.abspath(args.dir)
        cluster = Cluster().start()
        backends.append("postgresql")
    samples: dict[tuple[str, int], list[dict]] = {}
    try:
        for n in range(args.rounds):
            for backend in backends:
                for group in groups:
                    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ledger-append-") as d:
                        target = (os.path.join(d, "bench.sqlite") if backend == "sqlite"
                                  else cluster.create_database(f"bench_{n}_{group}"))
                        samples.setdefault((backend, group), []).append(one_round(target, records, group))
    finally:
        if cluster is not None:
            cluster.stop()
    results = []
    for (backend, group), rounds in samples.items():
        wall, cpu = sorted(r["wall_us"] for r in rounds), sorted(r["cpu_us"] for r in rounds)
        result = {"backend": backend, "group": group, "settlements": args.settlements, "rounds": len(rounds),
                  "wall_us_min": round(wall[0], 1), "wall_us_median": round(statistics.median(wall), 1),
                  "cpu_us_min": round(cpu[0], 1), "cpu_us_median": round(statistics.median(cpu), 1),
                  "settlements_per_s_median": round(1e6 / statistics.median(wall))}
        results.append(result)
        print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
