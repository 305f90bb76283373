"""The benchmark report: every figure of the performance targets from one run (`make bench`).

    python bench/report.py --data-dir data/national            (the full suite, about 15 minutes)
    python bench/report.py --smoke --out /tmp/bench             (a tiny data set, seconds per phase)
    python bench/report.py --out bench/results                  (publish: the tracked results directory)

Phases, each against the targets of docs/performance.md:

1. core (pytest-benchmark, bench/test_national_bench.py): eligibility, the
   20-line inpatient and 3-line outpatient benefit, request decoding, each
   over thousands of distinct persons spread over the data set (eligibility:
   new persons every round; its CPU time beside the wall time), on the
   gateway's index with its move into huge pages finished;
2. start-up: the gateway started on the data set (binary image present),
   seconds to SERVING and resident memory; the same on a 1,000-person set,
   so the difference divided by the difference in persons is the memory per
   filed person;
3. load (bench/loadgen.py) on that gateway: the empty RPC, unary outpatient
   settlement and SettleBatch in closed loop, then an open-loop sweep of the
   unary settlement at fractions of its maximum (p99 at half the maximum;
   the latency-vs-throughput PNG), and the collector's longest pause, read
   from the gateway's /metrics.  Rates count successful answers only; a
   refusal fails the report (bench/outcomes.py), except OVERLOADED in the
   sweep's rows past half the maximum, counted beside them (``load_refusals``);
4. the peak day (bench/peak_day.py): settlements in the published mix through
   SettleBatch, every one checked in the ledger, and resident memory per
   settlement;
5. overload (bench/overload.py): a burst of 4,000 calls at once against 100 in
   flight, with the gateway's default queue-wait limit and with the limits
   off: refused- and admitted-call latency.

Writes ``latest.json`` (flat keys, below), a copy named by date and commit,
``latest.md`` (the table against the targets) and ``latency.png`` into
``--out`` (default build/bench, outside the tracked tree; published reports
go to bench/results when asked).  Timings are not asserted: the smoke form
(`bench/test_report.py`, in the default test run) fails only on errors, and
its table and picture say SMOKE and judge no target: its figures come from a
2,000-person data set and seconds of load, and mean nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_OUT = os.path.join(ROOT, "build", "bench")
SMOKE = "SMOKE RUN: a 2,000-person data set and seconds of load; the figures mean nothing"

from bench import loadgen, outcomes, overload, peak_day, soak  # noqa: E402

# key -> (target, "max" or "min" (the figure must be at most / at least the target), unit, what)
TARGETS = {
    "eligibility_us_p50": (1.0, "max", "µs", "eligibility (the settle path's compact form), median per call"),
    "benefit_inpatient20_us_p50": (10.0, "max", "µs", "20-line inpatient benefit, median per call"),
    "bytes_per_filed_person": (250, "max", "B", "resident memory per filed person"),
    "bytes_per_settlement": (400, "max", "B", "resident memory per stored settlement"),
    "serving_s_1_8m": (5.0, "max", "s", "start to SERVING (1.8M persons)"),
    "empty_rpc_per_s": (None, "", "/s", "empty RPC (Ping), closed loop"),
    "unary_settle_per_s": (None, "", "/s", "unary OutpatientSettle, closed loop"),
    "unary_settle_vs_empty_ratio": (0.7, "min", "×", "unary settle ÷ empty RPC, same run"),
    "unary_p99_ms_at_half_max": (5.0, "max", "ms", "unary settle p99 at half the maximum rate (open loop)"),
    "batch_settlements_per_s": (100_000, "min", "/s", "durable settlements per second, SettleBatch"),
    "stream_vs_batch_ratio": (1.0, "min", "×", "SettleStream ÷ SettleBatch settlements per second, same run"),
    "peak_day_s": (60.0, "max", "s", "2,000,000 settlements in the published mix"),
    "gc_pause_ms_max": (10.0, "max", "ms", "longest collector pause under the load phase's load"),
    "overload_refused_p99_ms": (50.0, "max", "ms", "burst of 4,000 against 100 in flight: refused-call p99"),
    "overload_admitted_p99_ms": (None, "", "ms", "the same burst: admitted-call p99"),
    "overload_off_p99_ms": (None, "", "ms", "the same burst with the limits off: p99 (every call served)"),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- phases
def core(data_dir: str, smoke: bool, workdir: str) -> dict:
    out = os.path.join(workdir, "core.json")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_national_bench.py",
           f"--benchmark-json={out}"]
    if smoke:
        cmd += ["--benchmark-disable"]
    subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, YIDI_BENCH_DATA=data_dir),
                   stdout=subprocess.DEVNULL)
    if smoke or not os.path.exists(out):
        return {}
    with open(out) as f:
        benches = {b["name"]: b["extra_info"] for b in json.load(f)["benchmarks"]}
    # The settle path's forms (compact admission, compact Bill) carry the targets; the dict-returning
    # forms (the CLI's and the tests') are given beside them.  The targets' figures in CPU time beside the wall
    # time (what the wall time has over it is waiting for a core), and how much of the index was in huge
    # pages: test_national_bench.py's fixture.
    admission = benches.get("test_admission_distinct_persons", {})
    bill = benches.get("test_bill_inpatient_20_lines", {})
    return {k: _round(benches.get(name, {}).get("per_call_us"), 2) for k, name in (
        ("eligibility_us_p50", "test_admission_distinct_persons"),
        ("eligibility_dict_us_p50", "test_eligibility_distinct_persons"),
        ("benefit_inpatient20_us_p50", "test_bill_inpatient_20_lines"),
        ("benefit_inpatient20_dict_us_p50", "test_benefit_inpatient_20_lines"),
        ("benefit_outpatient3_dict_us_p50", "test_benefit_outpatient_3_lines"),
        ("decode_settle_request_us_p50", "test_decode_settle_request_from_wire_bytes"))} | {
        "eligibility_cpu_us_p50": _round(admission.get("cpu_per_call_us"), 2),
        "benefit_inpatient20_cpu_us_p50": _round(bill.get("cpu_per_call_us"), 2),
        "index_huge_pages_mib": admission.get("huge_pages_mib"),
        "index_huge_pages_finish_s": admission.get("huge_pages_finish_s")}


def persons_of(data_dir: str) -> int:
    with open(os.path.join(data_dir, "manifest.json")) as f:
        return json.load(f)["persons"]


def started(data_dir: str, workdir: str, *extra: str):
    """(process, target, seconds to SERVING, resident bytes at SERVING)."""
    begin = time.monotonic()
    proc, target = loadgen.start_gateway(data_dir, workdir, *extra)
    return proc, target, time.monotonic() - begin, peak_day.rss_bytes(proc.pid)


def stop(proc) -> None:
    proc.terminate()
    proc.wait(120)


LOAD_CACHE_KEYS = 5_000
GC_LIMIT_MS = 10.0


def gc_figures(at_start: list[dict], at_end: list[dict], figures: dict) -> None:
    """The collector's pauses under the load phase's load, per generation (bench/soak.py's reading): the longest
    is exact when longer than any of start-up's, else the least bound the readings give (the histogram's bucket
    holding every pause under load, or start-up's longest), so the figure never understates it."""
    longest, over, collections = {}, 0, 0
    for start, end in zip(at_start, at_end, strict=True):
        row = soak.under_load(start, end, GC_LIMIT_MS)
        if row["collections"]:
            longest[row["generation"]] = row["longest_pause_ms"]
        over += row["pauses_over_limit"] or 0
        collections += row["collections"]
    figures["gc_pause_ms_max"] = max((float(str(v).lstrip("≤ ")) for v in longest.values()), default=0.0)
    figures["gc_pause_ms_max_by_generation"] = longest
    figures["gc_pauses_over_10ms"] = over
    figures["gc_collections"] = collections


def load(data_dir: str, smoke: bool, workdir: str, figures: dict) -> list[dict]:
    """Start-up, memory per person, the closed-loop runs and the open-loop sweep; the loadgen rows."""
    from datagen import generate

    small = os.path.join(workdir, "small")
    generate(small, persons=1000, seed=2026)
    proc, _, _, rss_small = started(small, tempfile.mkdtemp(dir=workdir))
    stop(proc)
    stop(started(data_dir, tempfile.mkdtemp(dir=workdir))[0])  # the first start may write the binary image
    # The recent-key cache small enough that the loads below pass its capacity several times over: a figure that
    # holds only while a cache is filling is not the figure (make bench-keys shows the cost per window of it).
    cache_keys = 200 if smoke else LOAD_CACHE_KEYS
    proc, target, serving_s, rss = started(data_dir, tempfile.mkdtemp(dir=workdir), "--metrics-listen", "127.0.0.1:0",
                                           "--idempotency-cache-keys", str(cache_keys))
    persons = persons_of(data_dir)
    figures["persons"] = persons
    figures["serving_s_1_8m" if persons >= 1_800_000 else "serving_s"] = round(serving_s, 2)
    figures["rss_serving_mib"] = round(rss / 2**20, 1)
    figures["bytes_per_filed_person"] = round((rss - rss_small) / (persons - 1000)) if persons > 1000 else None
    metrics_url = proc.serving[proc.serving.index("metrics") + 1]
    seconds, processes = (1.0, 1) if smoke else (10.0, 2)
    rows = []
    gc_at_start = soak.generations(metrics_url)   # start-up's collections are not the load's
    try:
        for kind, concurrency in (("ping", 32), ("outpatient", 32), ("batch", 2), ("stream", 2)):
            rows.append(loadgen.run_load(target, kind, data_dir, processes, concurrency, seconds,
                                         server_pid=proc.pid, warmup=0.5 if smoke else 2.0))
            log(loadgen.table(rows[-1:]).splitlines()[-1])
        ping, unary, batch, stream = rows
        figures["empty_rpc_per_s"] = round(ping["calls_per_s"])
        figures["unary_settle_per_s"] = round(unary["calls_per_s"])
        figures["unary_settle_vs_empty_ratio"] = round(unary["calls_per_s"] / ping["calls_per_s"], 3)
        figures["empty_rpc_server_cpu_us"] = _round(ping.get("server_cpu_us_per_call"))
        figures["unary_settle_server_cpu_us"] = _round(unary.get("server_cpu_us_per_call"))
        figures["batch_settlements_per_s"] = round(batch["settlements_per_s"])
        figures["batch_server_cpu_us_per_settlement"] = _round(batch.get("server_cpu_us_per_settlement"))
        figures["stream_settlements_per_s"] = round(stream["settlements_per_s"])
        figures["stream_server_cpu_us_per_settlement"] = _round(stream.get("server_cpu_us_per_settlement"))
        figures["stream_vs_batch_ratio"] = round(stream["settlements_per_s"] / batch["settlements_per_s"], 3)
        for fraction in (0.25, 0.5, 0.75, 0.9):
            rate = max(10.0, unary["calls_per_s"] * fraction)
            # past the knee the intake may refuse (OVERLOADED, counted beside); up to half the maximum nothing may
            row = loadgen.run_load(target, "outpatient", data_dir, processes, 0, seconds, rate, proc.pid,
                                   warmup=0.5 if smoke else 2.0, expected=("OVERLOADED",) if fraction > 0.5 else ())
            row["fraction_of_max"] = fraction
            rows.append(row)
            log(loadgen.table(rows[-1:]).splitlines()[-1])
            if fraction == 0.5:
                figures["unary_p99_ms_at_half_max"] = _round(row["p99_ms"], 2)
        figures["load_idempotency_cache_keys"] = cache_keys
        figures["load_settlements_over_cache"] = round(sum(r["settlements"] for r in rows) / cache_keys, 1)
        figures["load_refusals"] = {f"{r['rpc']} {r.get('fraction_of_max') or 'closed'}": r["refusals"]
                                    for r in rows if r["refusals"]}
        gc_figures(gc_at_start, soak.generations(metrics_url), figures)
    finally:
        stop(proc)
    return rows


def _round(x, digits: int = 1):
    return None if x is None else round(x, digits)


def peak(data_dir: str, settlements: int, figures: dict) -> dict:
    summary = peak_day.run(data_dir, settlements)
    if settlements >= 2_000_000:
        figures["peak_day_s"] = summary["peak_day_s"]
    figures["peak_day_settlements"] = summary["settlements"]
    figures["peak_day_wall_s"] = summary["peak_day_s"]
    figures["peak_day_settlements_per_s"] = summary["settlements_per_s"]
    figures["bytes_per_settlement"] = summary["bytes_per_settlement"]
    figures["peak_day_lost"] = summary["lost"]
    figures["peak_day_duplicated"] = summary["duplicated"]
    figures["peak_day_accumulators_equal_replay"] = summary["accumulators_equal_replay"]
    return summary


def overloaded(smoke: bool, workdir: str, figures: dict) -> list[dict]:
    """The burst with the gateway's default queue-wait limit, and with the limits off."""
    from gateway.config import Config

    calls, processes = (400, 2) if smoke else (4000, 4)
    rows = overload.run(calls, 100, (Config().max_queue_wait_ms,), processes, workdir)
    on, off = rows
    log(overload.table(rows))
    figures.update({
        "overload_refused_p99_ms": on["refused_p99_ms"], "overload_admitted_p99_ms": on["admitted_p99_ms"],
        "overload_off_p99_ms": off["admitted_p99_ms"], "overload_refused_p50_ms": on["refused_p50_ms"],
        "overload_admitted_p50_ms": on["admitted_p50_ms"], "overload_off_p50_ms": off["admitted_p50_ms"],
        "overload_admitted": on["admitted"], "overload_refused": on["overloaded"],
        "overload_refused_with_retry_info": on["overloaded_with_retry_info"],
        "overload_other_answers": sum(on["other"].values()) + sum(off["other"].values()),
        "overload_drain_s": on["drain_s"], "overload_off_drain_s": off["drain_s"]})
    return rows


# ----------------------------------------------------------------- report
def markdown(figures: dict, meta: dict) -> str:
    smoke = meta["smoke"]
    out = [f"# {'SMOKE ' if smoke else ''}Benchmark report — {meta['date']} at {meta['commit']}", "",
           *([f"**{SMOKE}.** No target is judged.", ""] if smoke else []),
           f"{meta['machine']}; data set {figures.get('persons', 0):,} persons.", "",
           "| figure | measured | target | met |", "|---|---|---|---|"]
    for key, (target, sense, unit, what) in TARGETS.items():
        value = figures.get(key)
        shown = "—" if value is None else f"{value:,}{unit}" if unit not in ("×",) else f"{value}{unit}"
        if smoke and target is not None:
            met = "not judged (smoke)"
        elif target is None or value is None:
            met = ""
        else:
            met = judged(value, target, sense)
        goal = "" if target is None else f"{'≤' if sense == 'max' else '≥'} {target:,}{unit}"
        out.append(f"| {what} (`{key}`) | {shown} | {goal} | {met} |")
    out += ["", "Other figures:", ""]
    out += [f"- `{k}`: {v}" for k, v in figures.items() if k not in TARGETS]
    return "\n".join(out) + "\n"


def judged(value: float, target: float, sense: str) -> str:
    """"yes", or "**no**" with how far the figure is from its target, as a factor of the target."""
    if value <= target if sense == "max" else value >= target:
        return "yes"
    if value <= 0:
        return "**no**"
    factor = value / target if sense == "max" else target / value
    shown = f"{factor:.2f}" if factor < 1.1 else f"{factor:.1f}"   # 1.01× over is not "1.0× over"
    return f"**no**: {shown}× {'over' if sense == 'max' else 'short'}"


def plot(rows: list[dict], path: str, smoke: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = sorted((r for r in rows if r.get("fraction_of_max")), key=lambda r: r["calls_per_s"])
    if not sweep:
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = [r["calls_per_s"] for r in sweep]
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s-"), ("p99.9_ms", "^--")):
        ax.plot(x, [r[key] for r in sweep], style, label=key.replace("_ms", ""))
    ax.axhline(5.0, color="grey", linewidth=0.8, linestyle=":", label="p99 target 5 ms")
    ax.set_yscale("log")
    ax.set_xlabel("unary OutpatientSettle achieved calls/s (open loop, offered at 25–90% of max)")
    ax.set_ylabel("latency from intended send, ms")
    ax.set_title("SMOKE RUN (not a measurement): latency against throughput" if smoke
                 else "Yidi: latency against throughput")
    if smoke:
        ax.text(0.5, 0.5, "SMOKE RUN\nnot a measurement", transform=ax.transAxes, ha="center", va="center",
                fontsize=28, color="#c0392b", alpha=0.35, rotation=20)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    try:
        report()
    except outcomes.UnexpectedRefusals as err:
        raise SystemExit(f"bench: {err}") from None


def report() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--out", default=DEFAULT_OUT, help="where the report goes (bench/results to publish one)")
    p.add_argument("--peak-settlements", type=int, default=2_000_000)
    p.add_argument("--smoke", action="store_true", help="a 2,000-person data set and seconds per phase")
    p.add_argument("--skip", default="", help="comma-separated phases to leave out: core,load,peak,overload")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    os.makedirs(args.out, exist_ok=True)
    figures: dict = {}
    with tempfile.TemporaryDirectory() as work:
        data_dir = args.data_dir
        if args.smoke:
            from datagen import generate

            data_dir = os.path.join(work, "data")
            generate(data_dir, persons=2000, seed=2026)
            args.peak_settlements = min(args.peak_settlements, 2000)
        if "core" not in skip:
            log("core benchmarks")
            figures.update(core(data_dir, args.smoke, work))
        rows = []
        if "load" not in skip:
            log("start-up, memory and load")
            rows = load(data_dir, args.smoke, work, figures)
        if "peak" not in skip:
            log(f"peak day: {args.peak_settlements:,} settlements")
            peak(data_dir, args.peak_settlements, figures)
        overload_rows = []
        if "overload" not in skip:
            log("overload: a burst far beyond the limits")
            overload_rows = overloaded(args.smoke, work, figures)
    meta = {"date": datetime.date.today().isoformat(), "commit": commit(), "smoke": args.smoke,
            "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"}
    report = {**{k: figures.get(k) for k in TARGETS}, **figures, "meta": meta, "loadgen_rows": rows,
              "overload_rows": overload_rows}
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    shutil.copy(os.path.join(args.out, "latest.json"),
                os.path.join(args.out, f"{meta['date']}-{meta['commit']}.json"))
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(markdown(figures, meta))
    plot(rows, os.path.join(args.out, "latency.png"), args.smoke)
    print(markdown(figures, meta))


if __name__ == "__main__":
    main()
