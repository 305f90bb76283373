"""A burst far beyond the gateway's capacity: are the calls over it refused quickly, and do the admitted keep
their latency?  The same burst with overload control on and off.

    python bench/overload.py                         (4,000 calls at once against --max-concurrent-rpcs 100)
    python bench/overload.py --calls 4000 --limit 100 --waits 500,50 --json bench/results/overload.json

Starts a gateway on the SPEC fixture (mTLS, a fresh ledger) for each row:
with the limits on (``--max-concurrent-rpcs LIMIT`` and each
``--max-queue-wait-ms`` of ``--waits``, 500 being the gateway's default) and
with them off (``--max-concurrent-rpcs 0 --max-queue-wait-ms 0``: every call
queued and served, as before the intake existed).  Client processes
(spawned, each with its own TLS connection, already handshaken) first measure
the unloaded latency (a few calls at a time), then send their share of the
burst together at one instant, issuing calls in slices of ``SLICE`` so that
answers are read while the rest go out.  Each call is a fresh
OutpatientSettle (its own request_id), timed from the moment the client
issues it to its answer.  Prints a Markdown table; ``--json`` writes the
figures.  Every answer is OK or OVERLOADED with RetryInfo, counted apart;
any other answer ends the run with exit status 1 (bench/outcomes.py).
The clients share this machine's cores with the gateway, so their own
sending time is part of every latency here (docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import loadgen, outcomes  # noqa: E402

METHOD = "/yidi.v1.SettlementService/OutpatientSettle"
CALLER = "460000"        # 海南: the treatment province of the institution below
SLICE = 50               # calls issued per turn of a client's event loop
BASELINE_CALLS, BASELINE_CONCURRENCY = 200, 4


def _request(request_id: str) -> bytes:
    from datagen.spec_fixture import PERSONS
    from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

    return spb.OutpatientSettleRequest(
        request_id=request_id, psn_no=PERSONS["in_service"]["psn_no"], fixmedins_code="H46010000003",
        setl_date=20260311, lines=[pb.FeeLine(feedetl_sn="1", code="XA01", unit_price_fen=1250, qty_milli=1000),
                                   pb.FeeLine(feedetl_sn="2", code="XB02", unit_price_fen=3000, qty_milli=2000)],
    ).SerializeToString()


def outcome(err) -> tuple[str, bool]:
    """(OVERLOADED or CODE/REASON, whether a RetryInfo came with it) of a failed call."""
    from google.rpc import error_details_pb2

    from gateway.transport.status import detail_of, error_info

    info = error_info(err)
    reason = info.reason if info is not None else "-"
    if reason == "OVERLOADED" and err.code().name == "RESOURCE_EXHAUSTED":
        return "OVERLOADED", detail_of(err, error_details_pb2.RetryInfo) is not None
    return f"{err.code().name}/{reason}", False


async def _client(target: str, n: int, tag: str, ready, go) -> dict:
    import asyncio

    import grpc

    channel = loadgen.aio_channel(target, CALLER)
    call = channel.unary_unary(METHOD)

    async def timed(raw: bytes, into: list) -> None:
        start = time.perf_counter()
        try:
            await call(raw, timeout=60)
            into.append(("OK", time.perf_counter() - start, False, time.time()))
        except grpc.aio.AioRpcError as err:
            latency = time.perf_counter() - start
            kind, retry = outcome(err)
            into.append((kind, latency, retry, time.time()))

    try:
        await channel.channel_ready()
        unloaded: list = []
        for i in range(0, BASELINE_CALLS, BASELINE_CONCURRENCY):
            await asyncio.gather(*(timed(_request(f"base-{tag}-{j}"), unloaded)
                                   for j in range(i, i + BASELINE_CONCURRENCY)))
        burst = [_request(f"burst-{tag}-{i}") for i in range(n)]
        ready.put(tag)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        began = time.time()
        results: list = []
        tasks = []
        for i in range(0, n, SLICE):
            tasks += [asyncio.ensure_future(timed(raw, results)) for raw in burst[i:i + SLICE]]
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return {"began": began, "results": results,
                "baseline": [latency for kind, latency, _, _ in unloaded if kind == "OK"]}
    finally:
        await channel.close()


def _client_process(target: str, n: int, tag: str, ready, go, out) -> None:
    import asyncio

    import uvloop

    uvloop.install()
    out.put(asyncio.run(_client(target, n, tag, ready, go)))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


def burst(calls: int, limit: int, wait_ms: float, processes: int, on: bool, workdir: str) -> dict:
    """One gateway, one burst; the figures."""
    from datagen.spec_fixture import write_spec_dataset

    data = os.path.join(workdir, "data")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        write_spec_dataset(data)
    limits = (["--max-concurrent-rpcs", str(limit), "--max-queue-wait-ms", str(wait_ms)] if on
              else ["--max-concurrent-rpcs", "0", "--max-queue-wait-ms", "0"])
    proc, target = loadgen.start_gateway(data, tempfile.mkdtemp(dir=workdir), *limits)
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    shares = [calls // processes + (1 if i < calls % processes else 0) for i in range(processes)]
    workers = [ctx.Process(target=_client_process, args=(target, share, f"{int(on)}{i}", ready, go, out))
               for i, share in enumerate(shares)]
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=300)
        cpu_before = loadgen._cpu_seconds(proc.pid)
        go.set()
        parts = [out.get(timeout=600) for _ in workers]
        cpu = loadgen._cpu_seconds(proc.pid) - cpu_before
    finally:
        for worker in workers:
            worker.join(30)
        proc.terminate()
        proc.wait(60)
    results = [r for part in parts for r in part["results"]]
    began = min(part["began"] for part in parts)
    by_kind: dict[str, list[float]] = {}
    for kind, latency, _, _ in results:
        by_kind.setdefault(kind, []).append(latency)
    admitted, refused = by_kind.get("OK", []), by_kind.get("OVERLOADED", [])
    baseline = [x for part in parts for x in part["baseline"]]
    return {
        "limits": "on" if on else "off", "calls": calls, "limit": limit if on else None,
        "max_queue_wait_ms": wait_ms if on else None, "processes": processes,
        "admitted": len(admitted), "overloaded": len(refused),
        "overloaded_with_retry_info": sum(1 for kind, _, retry, _ in results if kind == "OVERLOADED" and retry),
        "other": {k: len(v) for k, v in by_kind.items() if k not in ("OK", "OVERLOADED")},
        "baseline_p50_ms": _percentile(baseline, 0.5), "baseline_p99_ms": _percentile(baseline, 0.99),
        "admitted_p50_ms": _percentile(admitted, 0.5), "admitted_p99_ms": _percentile(admitted, 0.99),
        "refused_p50_ms": _percentile(refused, 0.5), "refused_p99_ms": _percentile(refused, 0.99),
        "refused_max_ms": _percentile(refused, 1.0),
        "refused_within_50ms": round(sum(1 for x in refused if x <= 0.05) / len(refused), 3) if refused else None,
        "drain_s": round(max(done for _, _, _, done in results) - began, 2),
        "server_cpu_s": round(cpu, 2), "server_cpu_us_per_call": round(cpu / calls * 1e6),
    }


def table(rows: list[dict]) -> str:
    out = ["| limits | in flight, queue wait | calls | admitted | OVERLOADED (RetryInfo) | other | unloaded p50/p99 ms "
           "| admitted p50/p99 ms | refused p50/p99/max ms | refused ≤ 50 ms | burst drained | server CPU µs/call |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        within = "" if r["refused_within_50ms"] is None else f"{r['refused_within_50ms'] * 100:.0f}%"
        limits = f"{r['limit']}, {r['max_queue_wait_ms']:g} ms" if r["limit"] else "—"
        out.append(
            f"| {r['limits']} | {limits} | {r['calls']:,} | {r['admitted']:,} | {r['overloaded']:,} "
            f"({r['overloaded_with_retry_info']:,}) | {sum(r['other'].values()) or ''} "
            f"| {r['baseline_p50_ms']} / {r['baseline_p99_ms']} | {r['admitted_p50_ms']} / {r['admitted_p99_ms']} "
            f"| {r['refused_p50_ms']} / {r['refused_p99_ms']} / {r['refused_max_ms']} "
            f"| {within} "
            f"| {r['drain_s']} s | {r['server_cpu_us_per_call']} |")
    return "\n".join(out)


def run(calls: int = 4000, limit: int = 100, waits: tuple[float, ...] = (500, 50), processes: int = 4,
        workdir: str | None = None) -> list[dict]:
    """One row per queue-wait limit with the limits on, then one with them off."""
    with tempfile.TemporaryDirectory(dir=workdir) as work:
        rows = [burst(calls, limit, wait_ms, processes, True, work) for wait_ms in waits]
        rows.append(burst(calls, limit, 0, processes, False, work))
    for row in rows:   # OK and OVERLOADED are the answers a burst may get; anything else fails the run
        outcomes.require_expected(f"overload, limits {row['limits']}", row["other"])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=4000)
    p.add_argument("--limit", type=int, default=100, help="--max-concurrent-rpcs with the limits on")
    p.add_argument("--waits", default="500,50", help="--max-queue-wait-ms of each row with the limits on")
    p.add_argument("--processes", type=int, default=4, help="client processes sharing the burst")
    p.add_argument("--json", default="", help="write the figures here")
    args = p.parse_args()
    try:
        rows = run(args.calls, args.limit, tuple(float(w) for w in args.waits.split(",")), args.processes)
    except outcomes.UnexpectedRefusals as err:
        raise SystemExit(f"overload: {err}") from None
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
