"""Reconciliation (对账, SPEC §8) of one institution with 100,000 settlements, over real gRPC.

    python bench/reconcile.py --data-dir data/national [--settlements 100000]

Builds a ledger directly through the engine and the store (as bench/restart.py
does): outpatient settlements at the one institution with the most filed
persons who may use it, dated over three weeks, 1% cancelled, each record
with its reconciliation row written in the same transaction; then starts
the real gateway on it and times, as the institution's treatment province:

* ReconcileTotals over the whole range (count, medfee, fund, cash);
* ReconcileDetail streaming the province's 100,000 (setl_id, fund, cancelled)
  items in messages of 20,000, with a handful of planted differences.

It also measures what the projection costs to write: inserting its rows
keyed by a 63-bit hash of the institution code against keyed by the code
itself (same rows, same transaction size, on the same disk).

Writes bench/results/reconcile.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from the repo root or elsewhere

from core import Index, events  # noqa: E402
from core.archive import MemoryArchive  # noqa: E402
from core import commands as cmd  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.errors import YidiError  # noqa: E402
from datagen.workload import Workload  # noqa: E402
from gateway.store.rows import institution_key  # noqa: E402
from gateway.store import snapshot  # noqa: E402
from gateway.cli.funds import detail_stream  # noqa: E402
from gateway.transport.convert import encode_reply  # noqa: E402
from gateway.store import Record, SqliteStore  # noqa: E402
from gateway.testing import seal_key, start_gateway  # noqa: E402

COMMIT_RECORDS = 5000
DAYS = [20261101 + d for d in range(21)]


def busiest_institution(workload: Workload) -> tuple[str, list[str]]:
    """The outpatient institution most filed persons may use, and those persons."""
    users: dict[str, list[str]] = {}
    for psn_no, _insured, codes in workload.outpatient_cases:
        for code in codes:
            users.setdefault(code, []).append(psn_no)
    code = max(users, key=lambda c: len(users[c]))
    return code, users[code]


def build(data_dir: str, n: int, ledger: str) -> tuple[str, list[tuple[str, int, bool]], dict]:
    index = Index()
    index.load_dir(data_dir)
    engine = Engine(index, MemoryArchive())   # the cancellations below look their settlements up
    workload = Workload(data_dir, seed=11, persons=400_000)
    code, persons = busiest_institution(workload)
    province = code_province = index.get_institution(code)["admdvs"][:2] + "0000"
    rng = random.Random(11)
    store = SqliteStore(ledger, seal_key())
    books: list[tuple[str, int, bool]] = []
    batch: list[Record] = []
    seq = 0
    start = time.monotonic()
    while len(books) < n:
        case = workload.outpatient()
        request_id = f"bench-{seq}"
        command = cmd.OutpatientSettle(request_id=request_id, person=cmd.PersonId(psn_no=rng.choice(persons)),
                                       fixmedins_code=code, setl_date=rng.choice(DAYS), lines=case.lines)
        try:
            decision = engine.decide(command, seq + 1)
        except YidiError:
            continue
        seq += 1
        changes = engine.apply(decision.event, seq)
        batch.append(Record(decision.event.kind, province, request_id, seq.to_bytes(16, "big"), decision.event.key,
                            events.encode(decision.event), encode_reply(decision.result), seq, tuple(changes)))
        s = decision.event.settlement
        books.append((s.setl_id, s.breakdown.fund_pay_sumamt, False))
        if len(batch) == COMMIT_RECORDS:
            store.append(batch)
            batch = []
    store.append(batch)
    built_s = time.monotonic() - start
    cancelled = set(rng.sample(range(len(books)), len(books) // 100))
    batch = []
    for i in sorted(cancelled):
        seq += 1
        decision = engine.decide(cmd.CancelSettlement(request_id=f"bench-c{i}", setl_id=books[i][0],
                                                      cancel_date=DAYS[-1]), seq)
        changes = engine.apply(decision.event, seq)
        batch.append(Record(decision.event.kind, province, f"bench-c{i}", seq.to_bytes(16, "big"), decision.event.key,
                            events.encode(decision.event), encode_reply(decision.result), seq, tuple(changes)))
        books[i] = (books[i][0], books[i][1], True)
    store.append(batch)
    store.pragma("wal_checkpoint(TRUNCATE)")
    blob = snapshot.seal(seq, snapshot.encode(seq, data_dir, engine.export_state()), store.chain_at(seq), store.key)
    store.close()
    snapshot.Snapshots(ledger + ".snapshots").write(blob, seq)
    return code, books, {"institution": code, "province": code_province, "records": seq, "build_s": round(built_s, 1)}


def time_reconciliation(data_dir: str, ledger: str, code: str, books, province: str) -> dict:
    from gateway._pb.yidi.v1 import funds_pb2 as fdpb

    gw = start_gateway(data_dir, ledger, timeout=600)
    try:
        client = gw.client(province)
        span = fdpb.ReconcileRange(fixmedins_code=code, date_from=DAYS[0], date_to=DAYS[-1])
        start = time.monotonic()
        totals = client(client.funds.ReconcileTotals, fdpb.ReconcileTotalsRequest(range=span))
        totals_s = time.monotonic() - start
        items = [fdpb.ReconcileItem(setl_id=s, fund_pay_sumamt=f, cancelled=c) for s, f, c in sorted(books)]
        planted = 5
        for i in range(planted):   # the province's books differ in a handful of amounts
            items[i * 997].fund_pay_sumamt += 1
        start = time.monotonic()
        detail = client(client.funds.ReconcileDetail, detail_stream(span, items))
        detail_s = time.monotonic() - start
        assert detail.amount_differs == planted and detail.platform_items == len(books), detail
        with open(f"/proc/{gw.proc.pid}/status") as f:
            rss = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS:"))
        return {"settlements": len(books), "platform_count": totals.platform.count, "totals_s": round(totals_s, 3),
                "detail_s": round(detail_s, 3), "detail_differences": detail.amount_differs,
                "gateway_rss_mib_after": rss // 2**20}
    finally:
        gw.stop()


def insert_cost(workdir: str, rows: int = 300_000, institutions: int = 30_000) -> dict:
    """Rows/s inserting the projection keyed by the institution's 63-bit hash vs by its text code."""
    rng = random.Random(5)
    codes = [f"H{rng.randrange(11, 66)}{rng.randrange(10**10):010d}" for _ in range(institutions)]
    data = [(rng.choice(codes), rng.choice(DAYS), 10**6 + i, 310, 1000, 700, 300, 0, 0) for i in range(rows)]
    out = {}
    for variant, key_type in (("int63", "INTEGER"), ("text", "TEXT")):
        path = os.path.join(workdir, f"insert-{variant}.sqlite")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"CREATE TABLE recon (inst {key_type} NOT NULL, setl_date INTEGER, setl_no INTEGER, insutype "
                     "INTEGER, medfee INTEGER, fund INTEGER, cash INTEGER, flags INTEGER, cancelled INTEGER, "
                     "PRIMARY KEY (inst, setl_date, setl_no)) WITHOUT ROWID")
        start = time.monotonic()
        for k in range(0, rows, 1000):   # one transaction per 1000 rows, as a busy group commit
            batch = data[k:k + 1000]
            if variant == "int63":
                batch = [(institution_key(r[0]), *r[1:]) for r in batch]
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO recon VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
            conn.execute("COMMIT")
        out[f"{variant}_rows_per_s"] = int(rows / (time.monotonic() - start))
        out[f"{variant}_bytes"] = os.path.getsize(path)
        conn.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--settlements", type=int, default=100_000)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "reconcile.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT) as workdir:
        ledger = os.path.join(workdir, "ledger.sqlite")
        code, books, built = build(args.data_dir, args.settlements, ledger)
        print(f"built {built['records']:,} records at {code} in {built['build_s']} s", file=sys.stderr)
        timed = time_reconciliation(args.data_dir, ledger, code, books, built["province"])
        inserts = insert_cost(workdir)
    result = {"data_dir": args.data_dir, **built, **timed, **inserts}
    print("| settlements | ReconcileTotals | ReconcileDetail (streamed) | projection insert: int63 key | text key |")
    print("|---|---|---|---|---|")
    print(f"| {timed['settlements']:,} | {timed['totals_s'] * 1000:.0f} ms | {timed['detail_s']:.2f} s | "
          f"{inserts['int63_rows_per_s']:,} rows/s | {inserts['text_rows_per_s']:,} rows/s |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
