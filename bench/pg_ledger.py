"""The gateway's group-commit ledger on SQLite and on PostgreSQL: records/s and records per commit.

The same records (settlement-sized, ``ledger_throughput.make_records``) from
the same number of concurrent appenders through ``GroupCommitLedger``: one
writer thread, one transaction per group of groups, each appender answered
once its commit has returned.  SQLite in WAL with ``synchronous=FULL`` in a
temporary directory under ``--dir``; PostgreSQL 15 on a throwaway cluster
(gateway/pgcluster.py; fsync on, ``synchronous_commit = on``) on the same disk
unless ``--url`` names another.

    .venv/bin/python bench/pg_ledger.py [--records 20000] [--appenders 1,100,1000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import uvloop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.ledger_throughput import make_records, run  # noqa: E402
from gateway.pgcluster import Cluster  # noqa: E402
from gateway.store import open_store  # noqa: E402
from gateway.testing import seal_key  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--appenders", default="1,100,1000", help="concurrent appenders, comma-separated")
    parser.add_argument("--dir", default=".", help="where the SQLite file (and the throwaway cluster) go")
    parser.add_argument("--url", default="", help="a PostgreSQL server to use instead of a throwaway cluster")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    cluster = None
    if not args.url:
        os.environ["TMPDIR"] = os.path.abspath(args.dir)   # the cluster on the SQLite file's disk
        cluster = Cluster().start()
    results = []
    try:
        for appenders in (int(a) for a in args.appenders.split(",")):
            n = args.records if appenders > 1 else min(args.records, 2000)   # one at a time: fewer
            records = make_records(n, random_request_ids=True)
            for backend in ("sqlite", "postgresql"):
                with tempfile.TemporaryDirectory(dir=args.dir, prefix="pg-ledger-bench-") as d:
                    if backend == "sqlite":
                        target = os.path.join(d, "bench.sqlite")
                    else:
                        target = (cluster.create_database(f"bench_{appenders}") if cluster
                                  else args.url)
                    store = open_store(target, seal_key())
                    elapsed_s, ledger = uvloop.run(run(store, records, appenders))
                    store.close()
                result = {"backend": backend, "appenders": appenders, "records": n,
                          "records_per_s": round(n / elapsed_s), "commits": ledger.commits,
                          "records_per_commit": round(ledger.records / ledger.commits, 1)}
                results.append(result)
                print(f"{backend:10} appenders {appenders:5}: {result['records_per_s']:8,} records/s, "
                      f"{result['commits']:6} commits, {result['records_per_commit']:7.1f} records/commit", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
