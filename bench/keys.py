"""Idempotency keys at constant cost: settle several times the recent-key cache's capacity and show the cost per
settlement window by window.

    make bench-keys                                   (CAPACITY=10000 WINDOWS=6)
    python bench/keys.py --data-dir data/national --capacity 10000 --windows 6 --rpcs batch,outpatient

Starts a gateway on the data set with ``--idempotency-cache-keys CAPACITY``
(mTLS, a fresh ledger), then settles ``WINDOWS × CAPACITY`` fresh settlements
(each its own request id) through each RPC: SettleBatch of 500 in closed loop
(2 in flight) and unary OutpatientSettle (32 in flight).  The first window
fills the cache; every later one pushes a whole cache's worth of keys out of
it, and every new key is looked up in the ledger's index.  For each window of
CAPACITY settlements: the server's CPU µs per settlement (from /proc) and the
settlements per second; then the last window against the first, and against
the second (the first also warms the gateway).  Flat means a ratio near 1.

Only settlements answered with a result are counted; any refusal ends the run
with exit status 1 (bench/outcomes.py).  Prints a Markdown table; ``--json``
writes the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import loadgen, outcomes  # noqa: E402

IN_FLIGHT = {"batch": 2, "outpatient": 32}


async def settle_windows(target: str, kind: str, data_dir: str, capacity: int, windows: int, pid: int) -> list[dict]:
    """Settle windows × capacity through kind; per window (of settlements counted as answered): CPU and time."""
    import grpc

    from gateway._pb.yidi.v1 import settlement_pb2 as spb

    cases = loadgen._requests(kind, data_dir, 77, 2000)
    channels = {caller: loadgen.aio_channel(target, caller) for caller, _ in cases}
    read = spb.SettleBatchResponse.FromString if kind == "batch" else None
    methods = {caller: ch.unary_unary(loadgen.RPCS[kind], response_deserializer=read) for caller, ch in channels.items()}
    await asyncio.gather(*(ch.channel_ready() for ch in channels.values()))
    total = windows * capacity
    settled, sent = 0, 0
    refusals: dict[str, int] = {}
    marks = [(0, time.perf_counter(), loadgen._cpu_seconds(pid))]   # (settled, wall s, server CPU s)

    async def worker() -> None:
        nonlocal settled, sent
        while sent < total:
            i = sent
            caller, make = cases[i % len(cases)]
            sent += loadgen.BATCH_ITEMS if kind == "batch" else 1
            try:
                answer = await methods[caller](make(i), timeout=60)
            except grpc.aio.AioRpcError as err:
                reason = outcomes.call_refusal(err)
                refusals[reason] = refusals.get(reason, 0) + 1
                continue
            done, refused = outcomes.batch_tally(answer.outcomes) if read else (1, {})
            for reason, n in refused.items():
                refusals[reason] = refusals.get(reason, 0) + n
            settled += done
            while settled >= len(marks) * capacity and len(marks) <= windows:
                marks.append((settled, time.perf_counter(), loadgen._cpu_seconds(pid)))

    try:
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT[kind])))
    finally:
        for channel in channels.values():
            await channel.close()
    outcomes.require_expected(f"{kind} keys", refusals)
    rows = []
    for w, (before, after) in enumerate(zip(marks, marks[1:], strict=False), start=1):
        n = after[0] - before[0]
        rows.append({"rpc": kind, "window": w, "settlements": n, "keys_seen_end": after[0],
                     "server_cpu_us_per_settlement": round((after[2] - before[2]) / n * 1e6, 1),
                     "settlements_per_s": round(n / (after[1] - before[1]))})
    return rows


def summary(rows: list[dict], capacity: int) -> dict:
    first, second, last = rows[0], rows[min(1, len(rows) - 1)], rows[-1]
    cpu = "server_cpu_us_per_settlement"
    return {"rpc": first["rpc"], "capacity": capacity, "keys_seen": last["keys_seen_end"],
            "times_capacity": round(last["keys_seen_end"] / capacity, 1),
            "first_cpu_us": first[cpu], "second_cpu_us": second[cpu], "last_cpu_us": last[cpu],
            "last_vs_first": round(last[cpu] / first[cpu], 2), "last_vs_second": round(last[cpu] / second[cpu], 2)}


def table(rows: list[dict], summaries: list[dict]) -> str:
    out = ["| rpc | window | keys seen at its end | server CPU µs/settlement | settlements/s |", "|---|---|---|---|---|"]
    out += [f"| {r['rpc']} | {r['window']} | {r['keys_seen_end']:,} | {r['server_cpu_us_per_settlement']} "
            f"| {r['settlements_per_s']:,} |" for r in rows]
    out += ["", "| rpc | capacity | keys seen | × capacity | µs first / second / last window | last ÷ first | last ÷ second |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {s['rpc']} | {s['capacity']:,} | {s['keys_seen']:,} | {s['times_capacity']} | {s['first_cpu_us']} / "
            f"{s['second_cpu_us']} / {s['last_cpu_us']} | {s['last_vs_first']} | {s['last_vs_second']} |" for s in summaries]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--capacity", type=int, default=10_000, help="the gateway's --idempotency-cache-keys")
    p.add_argument("--windows", type=int, default=6, help="settle this many times the capacity (at least 5)")
    p.add_argument("--rpcs", default="batch,outpatient")
    p.add_argument("--json", default="")
    args = p.parse_args()
    if args.windows < 2 or ("batch" in args.rpcs and args.capacity < 2 * loadgen.BATCH_ITEMS):
        raise SystemExit(f"--windows must be at least 2 and --capacity at least {2 * loadgen.BATCH_ITEMS} "
                         "(a window holds whole batches)")
    rows, summaries = [], []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.data_dir))) as tmp:
        try:
            for kind in args.rpcs.split(","):
                proc, target = loadgen.start_gateway(args.data_dir, tempfile.mkdtemp(dir=tmp),
                                                     "--idempotency-cache-keys", str(args.capacity))
                try:
                    import uvloop

                    got = uvloop.run(settle_windows(target, kind, args.data_dir, args.capacity, args.windows, proc.pid))
                finally:
                    proc.terminate()
                    proc.wait(60)
                rows += got
                summaries.append(summary(got, args.capacity))
                print(table(got, summaries[-1:]), file=sys.stderr)
        except outcomes.UnexpectedRefusals as err:
            raise SystemExit(f"keys: {err}") from None
    print(table(rows, summaries))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"windows": rows, "summaries": summaries}, f, indent=1)


if __name__ == "__main__":
    main()
