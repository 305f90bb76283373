"""asyncpg against psycopg 3: group commits of settlement-sized records on a real PostgreSQL.

Each group is one transaction, as the ledger's writer makes it: the records
(a settlement's size: a 240-byte event, a 400-byte answer, checksum and chain
value) and one idempotency row per record, then COMMIT; the time is taken
when COMMIT has returned (fsync on, ``synchronous_commit = on``).  Both
drivers insert the same rows the same two ways: ``executemany`` (psycopg 3
pipelines it; asyncpg sends one prepared statement many times) and COPY.
asyncpg runs on an event loop of its own in the writer thread (what the
ledger's writer would have to do); psycopg 3 is called synchronously there.

    .venv/bin/python bench/pg_drivers.py [--groups 1,100,500] [--seconds 3] [--json out.json]

Starts its own cluster (gateway/pgcluster.py) unless ``--url`` names one.
Prints one line per (driver, method, group size): records/s and commit
latency p50/p99 in ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import asyncpg
import psycopg

from gateway.pgcluster import Cluster

SCHEMA = """
DROP TABLE IF EXISTS b_records, b_requests;
CREATE TABLE b_records (seq BIGINT PRIMARY KEY, kind TEXT NOT NULL, caller TEXT NOT NULL, request_id TEXT NOT NULL,
    digest BYTEA NOT NULL, key TEXT NOT NULL, body BYTEA NOT NULL, response BYTEA NOT NULL,
    checksum BYTEA NOT NULL, chain BYTEA NOT NULL);
CREATE TABLE b_requests (caller TEXT NOT NULL, request_id TEXT NOT NULL, h BIGINT NOT NULL, seq BIGINT NOT NULL,
    tag BYTEA NOT NULL, PRIMARY KEY (caller, request_id));
"""
RECORD_COLUMNS = ("seq", "kind", "caller", "request_id", "digest", "key", "body", "response", "checksum", "chain")
REQUEST_COLUMNS = ("caller", "request_id", "h", "seq", "tag")
INSERT_RECORD = "INSERT INTO b_records VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
INSERT_REQUEST = "INSERT INTO b_requests VALUES (%s, %s, %s, %s, %s)"


def rows(first: int, n: int) -> tuple[list[tuple], list[tuple]]:
    """n settlement-sized records from seq ``first`` on, and their idempotency rows."""
    records, requests = [], []
    for seq in range(first, first + n):
        rid = f"req-{seq:012d}"
        records.append((seq, "settle", "210000", rid, os.urandom(16), f"S{seq:015d}", os.urandom(240),
                        os.urandom(400), os.urandom(16), os.urandom(32)))
        requests.append(("210000", rid, seq * 7919 % (1 << 62), seq, os.urandom(16)))
    return records, requests


class Psycopg:
    name = "psycopg 3"

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=False)

    def commit(self, records, requests, copy: bool) -> None:
        with self.conn.cursor() as cur:
            if copy:
                with cur.copy(f"COPY b_records ({', '.join(RECORD_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["int8", "text", "text", "text", "bytea", "text", "bytea", "bytea", "bytea",
                                  "bytea"])
                    for row in records:
                        cp.write_row(row)
                with cur.copy(f"COPY b_requests ({', '.join(REQUEST_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "text", "int8", "int8", "bytea"])
                    for row in requests:
                        cp.write_row(row)
            else:
                cur.executemany(INSERT_RECORD, records)
                cur.executemany(INSERT_REQUEST, requests)
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


class Asyncpg:
    name = "asyncpg"

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(url))

    async def _commit(self, records, requests, copy: bool) -> None:
        async with self.conn.transaction():
            if copy:
                await self.conn.copy_records_to_table("b_records", records=records, columns=RECORD_COLUMNS)
                await self.conn.copy_records_to_table("b_requests", records=requests, columns=REQUEST_COLUMNS)
            else:
                await self.conn.executemany(INSERT_RECORD.replace("%s", "$%d") % tuple(range(1, 11)), records)
                await self.conn.executemany(INSERT_REQUEST.replace("%s", "$%d") % tuple(range(1, 6)), requests)

    def commit(self, records, requests, copy: bool) -> None:
        self.loop.run_until_complete(self._commit(records, requests, copy))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def measure(driver, group: int, copy: bool, seconds: float, first: int) -> tuple[dict, int]:
    latencies, records_done = [], 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        records, requests = rows(first, group)   # made outside the timed commit
        t0 = time.perf_counter()
        driver.commit(records, requests, copy)
        latencies.append(time.perf_counter() - t0)
        first += group
        records_done += group
    total = sum(latencies)
    latencies.sort()
    return {"driver": driver.name, "method": "copy" if copy else "executemany", "group": group,
            "commits": len(latencies), "records_per_s": round(records_done / total),
            "commit_ms_p50": round(statistics.median(latencies) * 1000, 2),
            "commit_ms_p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2)}, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="a PostgreSQL database to use (default: a throwaway cluster)")
    parser.add_argument("--groups", default="1,100,500", help="records per transaction, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="per (driver, method, group size)")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    cluster = None if args.url else Cluster().start()
    url = args.url or cluster.create_database("bench")
    results = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        first = 1
        for group in (int(g) for g in args.groups.split(",")):
            for copy in (False, True):
                for make in (Psycopg, Asyncpg):   # alternated, so neither always runs on a warmer server
                    driver = make(url)
                    try:
                        result, first = measure(driver, group, copy, args.seconds, first)
                    finally:
                        driver.close()
                    results.append(result)
                    print(f"{result['driver']:9} {result['method']:11} group {group:4}: "
                          f"{result['records_per_s']:8,} records/s, commit p50 {result['commit_ms_p50']:7.2f} ms, "
                          f"p99 {result['commit_ms_p99']:7.2f} ms ({result['commits']} commits)", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"postgresql": "fsync on, synchronous_commit on", "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
