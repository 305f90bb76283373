"""Load generator: gRPC clients against one gateway, settlements measured against an empty call.

    python bench/loadgen.py --data-dir data/national --seconds 10 --processes 2 --concurrency 32
    python bench/loadgen.py --target 127.0.0.1:50051 --server-pid PID ...      (a gateway already running)
    python bench/loadgen.py --open-loop 500,1000,2000 ...                        (fixed offered rates)
    python bench/loadgen.py --rpcs ping,batch,stream --concurrency 2 ...         (500 settlements a call)

Without --target it starts the gateway itself (on a fresh ledger beside the
data set) so it can read the server's CPU time from /proc.  Every run
measures, against the same server, the empty RPC (DiagnosticsService/Ping,
same stack: identity, limits, authorization) first and then each settlement
RPC, and reports each one's throughput as a ratio to the empty call's.
``--rpcs`` names them: ``ping``, ``outpatient`` (unary), ``batch`` (a
SettleBatch of 500) and ``stream`` (the same 500 items as one SettleStream,
every outcome read before the call counts as done).

Closed loop: each process keeps ``concurrency`` calls in flight (maximum
throughput).  Open loop: calls are sent at a fixed rate and latency is
measured from the *intended* send time, so a server that falls behind shows
its queueing instead of hiding it (coordinated omission).

Client processes are spawned (never forked: gRPC must not be forked), each
with its own channel, event loop (uvloop) and pre-drawn realistic cases
(datagen.workload); requests are sent as bytes.  Output: a Markdown table
on stdout and, with --json, the figures.

Only successful answers are counted (bench/outcomes.py): a refused call, and
each item a SettleBatch refused, is counted beside the rate by reason, and a
refusal the run did not expect (none in closed loop; OVERLOADED only with
--expect OVERLOADED) ends it with exit status 1 instead of a rate.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import outcomes  # noqa: E402

RPCS = {
    "ping": "/yidi.v1.DiagnosticsService/Ping",
    "outpatient": "/yidi.v1.SettlementService/OutpatientSettle",
    "batch": "/yidi.v1.SettlementService/SettleBatch",
    "stream": "/yidi.v1.SettlementService/SettleStream",
}
BATCHED = ("batch", "stream")
BATCH_ITEMS = 500   # settlements per SettleBatch call, and per SettleStream call (one stream of that many items)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------- clients
def _requests(kind: str, data_dir: str, seed: int, n: int, partitions: int = 0):
    """(caller, request bytes factory) for an RPC kind; a factory makes a new request per call.  ``partitions``:
    a batch's items are all of one partition's insured (bench/partitions.py routes it to that partition's owner)."""
    if kind == "ping":
        from gateway._pb.yidi.v1 import diagnostics_pb2 as dpb

        raw = dpb.PingRequest().SerializeToString()
        return [("460000", lambda i: raw)]
    from datagen.workload import Workload
    from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

    workload = Workload(data_dir, seed=seed, persons=100_000)
    if kind in BATCHED:
        return _batches(workload, seed, n // 10, stream=kind == "stream", partitions=partitions)
    out = []
    for _ in range(n):
        case = workload.outpatient()
        template = spb.OutpatientSettleRequest(
            psn_no=case.psn_no, fixmedins_code=case.fixmedins_code, setl_date=workload.date,
            lines=[pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen,
                              qty_milli=x.qty_milli) for x in case.lines])

        def make(i: int, template=template) -> bytes:
            template.request_id = f"lg{seed}-{i}"
            return template.SerializeToString()
        make.insured_province = case.insured_province   # for a client that routes by partition (bench/partitions.py)
        out.append((case.treatment_province, make))
    return out


def _batches(workload, seed: int, n: int, stream: bool = False, partitions: int = 0):
    """SettleBatch calls of BATCH_ITEMS outpatient settlements, each at one treatment province's institutions (and
    of one partition's insured, given ``partitions``); for SettleStream, the same items as the messages of one
    stream."""
    from core.partition import PartitionMap
    from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

    pmap = PartitionMap(partitions or 1)
    by_province: dict[tuple[str, int], list] = {}
    while sum(len(v) for v in by_province.values()) < n * BATCH_ITEMS // 4:
        case = workload.outpatient()
        by_province.setdefault((case.treatment_province, pmap.of_province(case.insured_province)), []).append(case)
    provinces = [p for p, cases in by_province.items() if len(cases) >= 20]
    out = []
    for k in range(n):
        province = provinces[k % len(provinces)]
        cases = by_province[province]
        items = [spb.SettleItem(outpatient=spb.OutpatientSettleRequest(
            psn_no=c.psn_no, fixmedins_code=c.fixmedins_code, setl_date=workload.date,
            lines=[pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen,
                              qty_milli=x.qty_milli) for x in c.lines]))
            for c in (cases[(k * 7 + j) % len(cases)] for j in range(BATCH_ITEMS))]
        batch = spb.SettleBatchRequest(items=items)

        def make(i: int, batch=batch) -> bytes | list[bytes]:
            for j, item in enumerate(batch.items):
                item.outpatient.request_id = f"lg{seed}-{i}-{j}"
            return [item.SerializeToString() for item in batch.items] if stream else batch.SerializeToString()
        make.insured_province = cases[0].insured_province   # every item's partition
        out.append((province[0], make))
    return out


def certs_dir() -> str:
    """The certificates clients present (SPEC §9: a caller is its client certificate): YIDI_CERTS, as for the CLI
    (start_gateway sets it to the certificates the gateway it starts trusts), else certs/dev of `make setup`."""
    return os.environ.get("YIDI_CERTS") or os.path.join(ROOT, "certs", "dev")


def aio_channel(target: str, caller: str, **options):
    """An asyncio channel presenting caller's client certificate."""
    import grpc

    from gateway.security import certs
    from gateway.testing import credentials

    return grpc.aio.secure_channel(target, credentials(caller, certs.Paths(certs_dir())),
                                   options=[("grpc.so_reuseport", 0), *options.items()])


async def _client(target: str, kind: str, data_dir: str, seed: int, concurrency: int, seconds: float,
                  rate: float, warmup: float, route: int = 0) -> dict:
    """``route``: ``target`` names one node per partition (comma-separated, in partition order) and each call goes
    to the node of its insured province's partition (core/partition.py), as a client that knows the map would."""
    import grpc

    from core.partition import PartitionMap
    from gateway._pb.yidi.v1 import settlement_pb2 as spb

    cases = _requests(kind, data_dir, seed, 2000, route)
    targets = target.split(",")
    if route:
        pmap = PartitionMap(route)
        cases = [(f"{targets[pmap.of_province(make.insured_province)]}|{caller}", make) for caller, make in cases]
    channels = {caller: aio_channel(caller.partition("|")[0] if route else target, caller.rpartition("|")[2])
                for caller in {caller for caller, _ in cases}}
    if kind == "stream":
        streams = {caller: channel.stream_stream(RPCS[kind], response_deserializer=spb.SettleOutcome.FromString)
                   for caller, channel in channels.items()}

        def stream_call(caller: str):
            async def call(items: list[bytes], timeout: float):
                return [outcome async for outcome in streams[caller](iter(items), timeout=timeout)]
            return call
        methods = {caller: stream_call(caller) for caller in channels}
    else:
        read = spb.SettleBatchResponse.FromString if kind == "batch" else None
        methods = {caller: channel.unary_unary(RPCS[kind], response_deserializer=read)
                   for caller, channel in channels.items()}
    latencies: list[float] = []     # of calls answered, sent after the warm-up
    settled = 0                     # items answered with a result, in those calls
    refusals: Counter = Counter()   # whole calls and batch items refused, by reason, warm-up included
    counter = iter(range(10**12))
    start = time.perf_counter() + warmup
    stop = start + seconds

    async def one(intended: float) -> None:
        i = next(counter)
        caller, make = cases[i % len(cases)]
        nonlocal settled
        try:
            answer = await methods[caller](make(i), timeout=30)
        except grpc.aio.AioRpcError as err:
            refusals[outcomes.call_refusal(err)] += 1
            return
        now = time.perf_counter()
        if kind in BATCHED:
            done, refused = outcomes.batch_tally(answer if kind == "stream" else answer.outcomes)
        else:
            done, refused = 1, ()
        refusals.update(refused)
        if intended >= start:
            latencies.append(now - intended)
            settled += done

    async def closed_worker() -> None:
        while time.perf_counter() < stop:
            await one(time.perf_counter())

    async def open_sender() -> None:
        tasks = set()
        interval = 1.0 / rate
        t0 = time.perf_counter()
        n = 0
        while True:
            intended = t0 + n * interval
            if intended >= stop:
                break
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(one(intended))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)

    await asyncio.gather(*(channel.channel_ready() for channel in channels.values()))
    if rate:
        await open_sender()
    else:
        await asyncio.gather(*(closed_worker() for _ in range(concurrency)))
    for channel in channels.values():
        await channel.close()
    wall = time.time() - time.perf_counter()
    return {"latencies": latencies, "settled": settled, "refusals": dict(refusals), "window": (start + wall, stop + wall)}


def _client_process(args: tuple, out: mp.Queue) -> None:
    import uvloop

    out.put(uvloop.run(_client(*args)))


def run_load(target: str, kind: str, data_dir: str, processes: int, concurrency: int, seconds: float,
             rate: float = 0.0, server_pid: int = 0, warmup: float = 2.0, expected: tuple[str, ...] = (),
             other_pids: tuple[int, ...] = (), seed: int = 1000, route: int = 0,
             cpu_groups: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Run one load and return throughput, latency percentiles (ms) and server CPU µs per call, of successful
    answers only, with the refusals by reason beside them; UnexpectedRefusals if any reason is not ``expected``.
    ``other_pids``: servers the target calls in turn (the owner of forwarded calls), whose CPU µs per call in the
    same window is ``other_cpu_us_per_call``.  Client p draws its cases and request ids from seed + p (another seed:
    other request ids, so a second load on the same ledger is not answered from the first one's records).
    Several comma-separated targets: client p calls the p-th (round robin), or with ``route`` (the partitions)
    each call goes to the target of its partition.
    ``cpu_groups``: named processes (say, the PostgreSQL server's) whose CPU µs per settlement in the window is
    given in ``cpu_us_per_settlement_by`` beside the client processes' and the whole machine's (``machine``, every
    process on it: on a shared machine, others' work too), and ``machine_busy_cores``, the cores busy on average."""
    targets = target.split(",")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(
        (target if route else targets[p % len(targets)], kind, data_dir, seed + p, concurrency, seconds,
         rate / processes, warmup, route), out))
        for p in range(processes)]
    for p in procs:
        p.start()
    groups = {**(cpu_groups or {}), "clients": tuple(p.pid for p in procs)}
    samples = []   # (wall time, server CPU seconds, others' CPU seconds, each group's, the machine's), every 50 ms
    results = []
    while len(results) < len(procs):
        if server_pid:
            samples.append((time.time(), _cpu_seconds(server_pid), sum(_cpu_seconds(pid) for pid in other_pids),
                            *(sum(_cpu_seconds(pid) for pid in pids) for pids in groups.values()), _machine_busy()))
        try:
            results.append(out.get(timeout=0.05))
        except queue.Empty:
            if any(p.exitcode for p in procs):   # a client died: its figures will never come
                raise RuntimeError(f"a load client exited with {[p.exitcode for p in procs]}") from None
    for p in procs:
        p.join()
    begin, end = max(r["window"][0] for r in results), min(r["window"][1] for r in results)
    lat = sorted(x for r in results for x in r["latencies"])
    refusals = sum((Counter(r["refusals"]) for r in results), Counter())
    settled = sum(r["settled"] for r in results)
    what = f"{kind} {'closed loop' if not rate else f'offered {rate:g}/s'}"
    outcomes.require_expected(what, refusals, expected)
    calls_per_s = len(lat) / seconds
    window_calls = len(lat) * (end - begin) / seconds if end > begin else 0
    row = {"rpc": kind, "calls_per_s": calls_per_s, "calls": len(lat), "refusals": dict(refusals),
           "offered_per_s": rate or None, "items_per_call": BATCH_ITEMS if kind in BATCHED else 1,
           "settlements": settled, "settlements_per_s": settled / seconds}
    for q in (50, 90, 99, 99.9):
        row[f"p{q}_ms"] = lat[min(len(lat) - 1, int(len(lat) * q / 100))] * 1000 if lat else None
    row["mean_ms"] = statistics.fmean(lat) * 1000 if lat else None
    if server_pid and window_calls:
        (cpu0, others0, *groups0), (cpu1, others1, *groups1) = _cpu_at(samples, begin), _cpu_at(samples, end)
        row["server_cpu_us_per_call"] = (cpu1 - cpu0) / window_calls * 1e6
        window_settled = settled * (end - begin) / seconds
        if window_settled:
            row["cpu_us_per_settlement_by"] = {
                name: round(max(0.0, b - a) / window_settled * 1e6, 1)
                for name, a, b in zip([*groups, "machine"], groups0, groups1, strict=True)}
            row["machine_busy_cores"] = round((groups1[-1] - groups0[-1]) / (end - begin), 2)
        if other_pids:
            row["other_cpu_us_per_call"] = (others1 - others0) / window_calls * 1e6
        row["server_cpu_us_per_settlement"] = (cpu1 - cpu0) / (settled * (end - begin) / seconds) * 1e6 \
            if settled else None
    return row


def _cpu_at(samples: list[tuple[float, ...]], t: float) -> tuple[float, ...]:
    """The CPU seconds of a sample (the server's, the others', ...) at wall time t, from the nearest sample at or
    before it."""
    best = samples[0][1:]
    for when, *cpu in samples:
        if when > t:
            break
        best = tuple(cpu)
    return best


def _cpu_seconds(pid: int) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:   # a group's process that has ended (a client done before the others)
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime, all threads


def _machine_busy() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


# ----------------------------------------------------------------- server
def start_gateway(data_dir: str, workdir: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """A gateway on a fresh ledger in workdir, over mTLS with development certificates made for this run (YIDI_CERTS
    is set to them, so client processes spawned afterwards present them); (its process, host:port).  Its
    SERVING line is kept as .serving."""
    from gateway.testing import dev_certs

    paths = dev_certs()
    os.environ["YIDI_CERTS"] = paths.directory
    ledger = os.path.join(workdir, "loadgen-ledger.sqlite")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--data-dir", data_dir, "--ledger", ledger,
         "--listen", "127.0.0.1:0", "--cert", paths.server_cert, "--key", paths.server_key, "--ca", paths.ca,
         "--seal-key", paths.seal_key, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    for line in proc.stdout:
        if line.startswith(b"SERVING "):
            proc.serving = line.decode().split()
            return proc, proc.serving[1]
    raise RuntimeError(f"gateway exited with {proc.wait()}")


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["rpc"] == "ping" and not r["offered_per_s"]), None)
    out = ["| rpc | offered/s | calls/s | vs empty | settlements/s | p50 ms | p90 ms | p99 ms | p99.9 ms "
           "| server CPU µs/call | refusals |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['calls_per_s'] / base['calls_per_s']:.2f}" if base and not r["offered_per_s"] else ""
        cpu = f"{r['server_cpu_us_per_call']:.0f}" if r.get("server_cpu_us_per_call") else ""
        pct = [f"{r[k]:.2f}" if r[k] is not None else "" for k in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms")]
        settled = f"{r['settlements_per_s']:,.0f}" if r["rpc"] != "ping" else ""
        out.append(f"| {r['rpc']} | {r['offered_per_s'] or 'closed'} | {r['calls_per_s']:,.0f} | {ratio} | {settled} | "
                   f"{' | '.join(pct)} | {cpu} | {r['refusals'] or ''} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--target", default="", help="a running gateway (default: start one)")
    p.add_argument("--server-pid", type=int, default=0, help="with --target: its pid, for CPU per call")
    p.add_argument("--rpcs", default="ping,outpatient")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight per process (closed loop)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--open-loop", default="", help="comma-separated offered rates (calls/s) to sweep")
    p.add_argument("--json", default="", help="write the rows as JSON here")
    p.add_argument("--expect", default="", help="comma-separated refusal reasons the open-loop rows may meet "
                                                "(e.g. OVERLOADED past the knee); any other refusal fails the run")
    args = p.parse_args()
    proc, tmp = None, None
    target, pid = args.target, args.server_pid
    if not target:
        tmp = tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.data_dir)))
        proc, target = start_gateway(args.data_dir, tmp.name)
        pid = proc.pid
    rows = []
    expected = tuple(filter(None, args.expect.split(",")))
    try:
        for kind in args.rpcs.split(","):
            rows.append(run_load(target, kind, args.data_dir, args.processes, args.concurrency, args.seconds,
                                 server_pid=pid))
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
        for rate in [float(x) for x in args.open_loop.split(",") if x]:
            for kind in args.rpcs.split(","):
                rows.append(run_load(target, kind, args.data_dir, args.processes, 0, args.seconds, rate, pid,
                                     expected=expected))
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
    except outcomes.UnexpectedRefusals as err:
        raise SystemExit(f"loadgen: {err}") from None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
            tmp.cleanup()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
