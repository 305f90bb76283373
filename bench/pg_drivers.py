"""asyncpg against psycopg 3: group commits of settlement-sized records on a real PostgreSQL.

Each group is one transaction, as the ledger's writer makes it: the records
(a settlement's size: a 240-byte event, a 400-byte answer, checksum and chain
value) and one idempotency row per record, then COMMIT; the time is taken
when COMMIT has returned (fsync on, ``synchronous_commit = on``).  Both
drivers insert the same rows the same two ways: ``executemany`` (psycopg 3
pipelines it; asyncpg sends one prepared statement many times) and COPY.
asyncpg runs on an event loop of its own in the writer thread (what the
ledger's writer would have to do); psycopg 3 is called synchronously there.

    .venv/bin/python bench/pg_drivers.py [--groups 1,100,500] [--rounds 5] [--seconds 1.5] [--json out.json]

Starts its own cluster (gateway/pgcluster.py) unless ``--url`` names one.
The two drivers take turns, round after round (a shared machine's busy
moment then hits both).  Prints one line per (driver, method, group size):
records/s (the median of the rounds) and commit latency p50/p99 in ms over
every commit; then each driver's point read of one idempotency key, the
read the gateway makes for a request id not in memory.
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
FIND_REQUEST = "SELECT h, seq, tag FROM b_requests WHERE caller = %s AND request_id = %s"
LOOKUPS = 2000


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

    def lookup(self, caller: str, request_id: str):
        return self.conn.execute(FIND_REQUEST, (caller, request_id)).fetchone()

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

    def lookup(self, caller: str, request_id: str):
        return self.loop.run_until_complete(self.conn.fetchrow(FIND_REQUEST.replace("%s", "$1", 1).replace("%s", "$2"),
                                                               caller, request_id))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def measure(driver, group: int, copy: bool, seconds: float, first: int) -> tuple[list[float], int]:
    """Commit latencies (s) of groups of ``group`` rows for ``seconds``; the next free seq."""
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        records, requests = rows(first, group)   # made outside the timed commit
        t0 = time.perf_counter()
        driver.commit(records, requests, copy)
        latencies.append(time.perf_counter() - t0)
        first += group
    return latencies, first


def lookups(driver, last: int) -> dict:
    """The idempotency index's point read (a key not in memory), one at a time: p50/p99 in ms."""
    latencies = []
    for i in range(LOOKUPS):
        t0 = time.perf_counter()
        driver.lookup("210000", f"req-{(i * 7919) % last + 1:012d}")
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    return {"driver": driver.name, "method": "lookup", "group": 1, "commits": 0,
            "lookup_ms_p50": round(latencies[len(latencies) // 2] * 1000, 3),
            "lookup_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 3)}


def summary(name: str, method: str, group: int, rounds: list[list[float]]) -> dict:
    """Records/s: the median of the rounds' (records / time in commits); latency over every commit of every round."""
    pooled = sorted(x for r in rounds for x in r)
    return {"driver": name, "method": method, "group": group, "commits": len(pooled),
            "records_per_s": round(statistics.median(group * len(r) / sum(r) for r in rounds)),
            "commit_ms_p50": round(statistics.median(pooled) * 1000, 2),
            "commit_ms_p99": round(pooled[min(len(pooled) - 1, int(len(pooled) * 0.99))] * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="a PostgreSQL database to use (default: a throwaway cluster)")
    parser.add_argument("--groups", default="1,100,500", help="records per transaction, comma-separated")
    parser.add_argument("--seconds", type=float, default=1.5, help="per (driver, method, group size) and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; records/s is their median")
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
            for method in ("executemany", "copy"):
                timed: dict[str, list[list[float]]] = {}
                for _ in range(args.rounds):   # interleaved rounds: a busy moment of a shared machine hits both
                    for make in (Psycopg, Asyncpg):
                        driver = make(url)
                        try:
                            latencies, first = measure(driver, group, method == "copy", args.seconds, first)
                        finally:
                            driver.close()
                        timed.setdefault(make.name, []).append(latencies)
                for name, rounds in timed.items():
                    result = summary(name, method, group, rounds)
                    results.append(result)
                    print(f"{name:9} {method:11} group {group:4}: {result['records_per_s']:8,} records/s, commit "
                          f"p50 {result['commit_ms_p50']:7.2f} ms, p99 {result['commit_ms_p99']:7.2f} ms "
                          f"({result['commits']} commits)", flush=True)
        for make in (Psycopg, Asyncpg):
            driver = make(url)
            try:
                result = lookups(driver, first - 1)
            finally:
                driver.close()
            results.append(result)
            print(f"{driver.name:9} lookup by (caller, request_id): p50 {result['lookup_ms_p50']:.3f} ms, "
                  f"p99 {result['lookup_ms_p99']:.3f} ms ({LOOKUPS} reads)", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"postgresql": "fsync on, synchronous_commit on", "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
